"""Device microbenchmarks with torch: achieved dense matrix-multiply TFLOP/s and memory bandwidth.

Each figure is the best of several timed repetitions after a warm-up, with the device
synchronised before every timer read. Bandwidth counts bytes read plus bytes written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _best_time(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()  # warm-up, not counted
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_tflops(device: str, dtype_name: str, n: int, repeats: int = 5) -> float:
    """Achieved TFLOP/s of an n×n×n matrix product (2n³ FLOPs) in ``dtype_name``."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    seconds = _best_time(lambda: torch.matmul(a, b), device, repeats)
    return 2.0 * n**3 / seconds / 1e12


def copy_bandwidth_gb_per_s(device: str, n_bytes: int, repeats: int = 5) -> float:
    """Achieved GB/s of a device-to-device copy, counting bytes read and written (2 × size)."""
    import torch

    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = _best_time(lambda: dst.copy_(src), device, repeats)
    return 2.0 * src.numel() * 4 / seconds / 1e9


def run_microbenchmarks(device: str, quick: bool = False) -> dict[str, Any]:
    """Measure the device's achievable peaks; sizes are chosen to run well past launch overhead.

    CPU: bf16 and fp32 products of 1024² (quick) or 2048² (bf16 kernels are slow on small CPU matrices), a 1 GiB copy.
    CUDA: bf16 product of 8192², fp32 of 4096², a 4 GB copy.
    """
    if device == "cuda":
        sizes = {"bf16": 2048 if quick else 8192, "fp32": 1024 if quick else 4096}
        copy_bytes = (256 if quick else 4096) * 2**20
    else:
        sizes = {"bf16": 1024 if quick else 2048, "fp32": 1024 if quick else 2048}
        copy_bytes = (256 if quick else 1024) * 2**20  # well past the last-level cache of large server CPUs
    out: dict[str, Any] = {"matmul_sizes": sizes, "copy_bytes": copy_bytes}
    for dtype_name, n in sizes.items():
        out[f"matmul_{dtype_name}_tflops"] = round(matmul_tflops(device, dtype_name, n), 4)
    out["memory_bandwidth_gb_per_s"] = round(copy_bandwidth_gb_per_s(device, copy_bytes), 2)
    return out
