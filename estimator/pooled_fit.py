"""Roofline step times with efficiencies kept apart from peaks.

time = overhead + max(FLOPs / (compute_eff × peak FLOP/s), bytes / (memory_eff × peak bytes/s))

Peaks are per device (a catalogued GPU's datasheet, or a measured CPU's microbenchmark);
efficiencies are fitted by the calibration, or taken from published measurements when
nothing was measured. With ``num_gpus`` devices the work is split evenly (ideal tensor or
expert parallelism; communication is not modelled).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.hardware import CatalogError, Peaks
from core.models import ModelSpec
from core.work import decode_step_work


@dataclass(frozen=True)
class Efficiency:
    """Fraction of peak compute and bandwidth achieved, and a fixed time per step or per batch."""

    compute: float
    memory: float
    overhead_s: float
    source: str

    def __post_init__(self) -> None:
        if not (0 < self.compute <= 2 and 0 < self.memory <= 2 and self.overhead_s >= 0):
            raise CatalogError(f"efficiency out of range: {self}")


@dataclass(frozen=True)
class Prediction:
    seconds: float
    compute_s: float
    memory_s: float
    overhead_s: float

    @property
    def bound(self) -> str:
        """What limits the step: 'compute', 'memory' or 'overhead' (the fixed time dominates)."""
        if self.overhead_s > max(self.compute_s, self.memory_s):
            return "overhead"
        return "compute" if self.compute_s >= self.memory_s else "memory"


def roofline_time(flops: float, nbytes: float, peaks: Peaks, eff: Efficiency, num_gpus: int = 1) -> Prediction:
    """Time for ``flops`` and ``nbytes`` of work on ``num_gpus`` devices of ``peaks``."""
    compute_s = flops / (eff.compute * peaks.flops_per_s * num_gpus)
    memory_s = nbytes / (eff.memory * peaks.bytes_per_s * num_gpus)
    return Prediction(eff.overhead_s + max(compute_s, memory_s), compute_s, memory_s, eff.overhead_s)


def decode_step(
    spec: ModelSpec, batch_size: int, context_len: float, peaks: Peaks, eff: Efficiency, num_gpus: int = 1, kv_dtype: str = "bf16"
) -> Prediction:
    """One decode step of ``batch_size`` sequences at mean context ``context_len``."""
    w = decode_step_work(spec, batch_size, context_len, kv_dtype)
    return roofline_time(w.flops, w.bytes, peaks, eff, num_gpus)
