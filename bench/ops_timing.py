"""Timing one operator case: repeated calls between device synchronisations, and the record it gives.

Each case is timed over at least ``bench.timing.MIN_TIME_S``; the record carries FLOPs, bytes, time, rates and the
efficiency against the datasheet peak of the case's precision and against this run's measured peak.
"""

from __future__ import annotations

import gc
from typing import Any

from bench.ops import Case
from bench.timing import time_call
from core.dtypes import kernel_dtype
from core.hardware import Peaks


def _sig(x: float) -> float:
    """``x`` to 6 significant digits: a slow CPU case keeps its precision, which fixed decimals would round away."""
    return float(f"{x:.6g}")


def free_device(device: str) -> None:
    """Drop the last case's tensors (and, on a GPU, the allocator's cache) before the next case allocates."""

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def run_case(c: Case, device: str, peaks: dict[str, Peaks], measured: dict[str, Peaks]) -> dict[str, Any]:
    """Time one case; the record carries FLOPs, bytes, time, rates and efficiency against both peaks (per precision)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(c.threads or before)
    try:
        fn = c.build()
        seconds, reps = time_call(fn, device)
        del fn
    finally:
        torch.set_num_threads(before)
    free_device(device)
    tflops, gbs = c.flops / seconds / 1e12, c.nbytes / seconds / 1e9
    rec = {
        "operator": c.operator,
        "shape": c.shape,
        "dtype": c.dtype,
        "impl": c.impl,
        "flops": c.flops,
        "bytes": c.nbytes,
        "time_ms": round(seconds * 1e3, 6),
        "repeats": reps,
        **({"threads": c.threads} if c.threads else {}),
        "tflops": _sig(tflops),
        "gb_per_s": _sig(gbs),
    }

    def ratio(value: float, peak: float | None) -> float | None:
        return _sig(value / peak) if peak and value else None

    dpk, mpk = peaks.get(c.dtype), measured.get(c.dtype)
    rec["mfu"] = ratio(tflops * 1e12, dpk.flops_per_s if dpk else None)
    rec["mbu"] = ratio(gbs * 1e9, dpk.bytes_per_s if dpk else None)
    rec["mfu_measured_peak"] = ratio(tflops * 1e12, mpk.flops_per_s if mpk else None)
    rec["mbu_measured_peak"] = ratio(gbs * 1e9, mpk.bytes_per_s if mpk else None)
    return rec


def device_dtypes(device: str, run_dtype: str) -> tuple[str, ...]:
    """The precisions to time: the run's and the others the device runs natively (fp8 on Hopper and later)."""
    short = kernel_dtype(run_dtype)
    if device != "cuda":
        return (short,) if short == "fp32" else ("bf16", "fp32")
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return ("bf16", "fp8") if (major, minor) >= (8, 9) else ("bf16",)
