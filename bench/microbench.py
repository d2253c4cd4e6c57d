"""Device microbenchmarks with torch: achieved dense matrix-multiply TFLOP/s and memory bandwidth.

Each figure is the best of several timed repetitions after a warm-up, with the device
synchronised before every timer read. Bandwidth counts bytes read plus bytes written.
"""

from __future__ import annotations

from typing import Any

from bench.timing import best_time
from core.dtypes import SHORT_NAME

TORCH_DTYPES = {short: name for name, short in SHORT_NAME.items()}


def matmul_tflops(device: str, dtype_name: str, n: int, repeats: int = 5) -> float:
    """Achieved TFLOP/s of an n×n×n matrix product (2n³ FLOPs) in ``dtype_name``."""
    import torch

    dtype = getattr(torch, TORCH_DTYPES[dtype_name])
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    seconds = best_time(lambda: torch.matmul(a, b), device, repeats)
    return 2.0 * n**3 / seconds / 1e12


def sized_matmul_tflops(device: str, dtype_name: str, n_max: int, min_seconds: float = 0.05) -> tuple[int, float]:
    """(n, TFLOP/s) of the smallest n = 256 · 2^k ≤ ``n_max`` whose product takes at least ``min_seconds``.

    Sizing by time keeps an emulated precision (bf16 on a CPU without AVX-512 BF16, hundreds of times
    slower) from taking minutes, while a fast one still runs past its launch overhead.
    """
    n = 256
    while True:
        tflops = matmul_tflops(device, dtype_name, n, repeats=3 if n < n_max else 5)
        if n >= n_max or 2.0 * n**3 / (tflops * 1e12) >= min_seconds:
            return n, tflops
        n *= 2


def copy_bandwidth_gb_per_s(device: str, n_bytes: int, repeats: int = 5) -> float:
    """Achieved GB/s of a device-to-device copy, counting bytes read and written (2 × size)."""
    import torch

    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), device, repeats)
    return 2.0 * src.numel() * 4 / seconds / 1e9


def run_microbenchmarks(device: str, quick: bool = False, dtype: str = "bfloat16") -> dict[str, Any]:
    """Measure the device's achievable peaks in every precision it runs; ``matmul_tflops`` is the one of ``dtype``.

    Matrix sizes grow from 256 until a product takes 50 ms (CPU: at most 1024² quick, 2048² full;
    CUDA: 2048² quick, 8192² full); the copy is 256 MiB quick, 1 GiB (CPU) or 4 GiB (CUDA) full.
    """
    short = SHORT_NAME[dtype]
    names = ("bf16", "fp16", "fp32") if device == "cuda" else ("fp32", "bf16")
    names += () if short in names else (short,)
    n_max = (2048 if quick else 8192) if device == "cuda" else (1024 if quick else 2048)
    copy_bytes = (256 if quick else (4096 if device == "cuda" else 1024)) * 2**20
    out: dict[str, Any] = {"peak_dtype": short, "matmul_sizes": {}, "copy_bytes": copy_bytes}
    for name in names:
        n, tflops = sized_matmul_tflops(device, name, n_max)
        out["matmul_sizes"][name] = n
        out[f"matmul_{name}_tflops"] = round(tflops, 4)
    out["matmul_tflops"] = out[f"matmul_{short}_tflops"]
    out["memory_bandwidth_gb_per_s"] = round(copy_bandwidth_gb_per_s(device, copy_bytes), 2)
    return out
