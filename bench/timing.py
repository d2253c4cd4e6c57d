"""Timing loops: the device synchronised before a timer is read, warm-up calls not counted, ``time.perf_counter``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MIN_TIME_S = 0.02  # an operator case is timed over at least this long


def sync_device(device: str) -> None:
    """Wait for the device to finish queued work before a timer is read (a no-op on the CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], device: str, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after one warm-up call (microbenchmark peaks)."""
    fn()  # warm-up, not counted
    sync_device(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync_device(device)
        best = min(best, time.perf_counter() - t0)
    return best


def time_call(fn: Callable[[], object], device: str, min_time_s: float = MIN_TIME_S) -> tuple[float, int]:
    """(seconds per call, calls timed): a warm-up, then enough back-to-back calls for ``min_time_s``."""
    fn()
    sync_device(device)
    t0 = time.perf_counter()
    fn()
    sync_device(device)
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(3, min(1000, math.ceil(min_time_s / one)))
    sync_device(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync_device(device)
    return (time.perf_counter() - t0) / reps, reps
