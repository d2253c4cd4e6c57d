"""An operator's efficiency: the fractions of the datasheet peak (of its precision) and bandwidth it reaches, and where
they come from. estimator/layer_ops.py turns one into a time: max(FLOPs / (compute x peak), bytes / (memory x bandwidth)).

Its own module (with the ranged assumptions' names) so that both the kernel figures (estimator/kernels.py) and the
measured operator database (estimator/kernel_db.py) build one without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from core.errors import CatalogError

OPERATOR_CLASSES = ("gemm", "gemm_bf16", "gemm_fp4", "gemm_weight_only", "grouped_gemm", "attention_decode", "attention_decode_gqa",
                    "attention_prefill", "elementwise")


@dataclass(frozen=True)
class Knob:
    """A ranged assumption, by type: an operator class's ``compute`` or ``memory`` efficiency (``op_class`` given), the
    multiplier on DeepEP's low-latency table (``low_latency_scale``), or a Kernels field. Shown as 'gemm.compute', 'overlap'."""

    name: str  # the Kernels field, or the part ("compute", "memory") of an operator class
    op_class: str = ""

    def __post_init__(self) -> None:
        if self.op_class and (self.op_class not in OPERATOR_CLASSES or self.name not in ("compute", "memory")):
            raise CatalogError(f"no ranged efficiency {self}: operator classes are {', '.join(OPERATOR_CLASSES)}, parts compute and memory")

    def __str__(self) -> str:
        return f"{self.op_class}.{self.name}" if self.op_class else self.name


LOW_LATENCY_SCALE = Knob("low_latency_scale")  # a multiplier on DeepEP's low-latency table, 1.0 at its centre


@dataclass(frozen=True)
class Eff:
    """Fractions of the datasheet peak (of the operator's precision) and bandwidth, and where they come from."""

    compute: float
    memory: float
    source: str
    measured_on: str = ""  # the devices a measured efficiency comes from; empty for a published one
    curve: tuple[tuple[float, float, float], ...] = ()  # (rows M, compute, memory) measured at each M; empty: one figure for all

    def at(self, m: float) -> Eff:
        """The efficiency of a GEMM of ``m`` rows: interpolated in log M between the measured points (the ends held
        beyond them), so a shape gets what was measured near it, not the best of all shapes; the one figure where no curve."""
        if not self.curve:
            return self
        x, ms = math.log(max(m, 1e-9)), [math.log(p[0]) for p in self.curve]
        return replace(self, compute=float(np.interp(x, ms, [p[1] for p in self.curve])),
                       memory=float(np.interp(x, ms, [p[2] for p in self.curve])), curve=())  # fmt: skip

    def scaled(self, compute: float, memory: float) -> Eff:
        """Both fractions (and a curve's points) times ``compute`` and ``memory``, each kept at most 1: how a ranged
        assumption moves a figure read off a measurement (estimator/kernels.py with_value)."""
        if compute == 1.0 and memory == 1.0:
            return self
        curve = tuple((m, min(c * compute, 1.0), min(b * memory, 1.0)) for m, c, b in self.curve)
        return replace(self, compute=min(self.compute * compute, 1.0), memory=min(self.memory * memory, 1.0), curve=curve)

    def for_work(self, counted: tuple[float, float], run: tuple[float, float], why: str) -> Eff:
        """This efficiency of a kernel that runs ``run`` (FLOPs, bytes), restated for the ``counted`` (FLOPs, bytes) the
        operator's cost holds: each fraction times counted over run, so the time of the counted work at the restated
        fractions is the time of the run at these (a CUDA graph padded to a captured batch: the padding's rows run too)."""
        c = self.compute * counted[0] / run[0] if run[0] else self.compute
        b = self.memory * counted[1] / run[1] if run[1] else self.memory
        return replace(self, compute=c, memory=b, source=f"{self.source}; {why}", curve=())
