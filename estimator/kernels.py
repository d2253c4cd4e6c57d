"""Kernel efficiencies the serving model runs on: published kernel figures (data/kernels.toml), replaced
operator by operator by what this project measured on a GPU of the same architecture.

A measured efficiency replaces a published one only where the measured kernel is the kind production
serving uses: dense GEMMs (cuBLAS through ``torch.matmul`` / ``torch._scaled_mm``), causal prefill
attention (PyTorch's flash/cuDNN SDPA) and norms. MLA decode attention (measured as two bmm, not
FlashMLA) and fp8 grouped GEMMs (measured as a loop, not DeepGEMM's grouped kernel) keep the
published figures, and so does communication (one GPU cannot measure an all-to-all). A measured
dense GEMM is a curve over its rows M, read at each GEMM's own M; published figures are one number
per class. Efficiencies never cross from a CPU to a GPU.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from core.engines import DEFAULT_ENGINE
from core.hardware import CatalogError, Device, all_gpus
from core.paths import DATA_DIR

KERNELS_FILE = DATA_DIR / "kernels.toml"
PUBLISHED_ON = "hopper"  # the architecture every published figure of kernels.toml was measured on (H800, H100 SXM5)
OPERATOR_CLASSES = ("gemm", "gemm_bf16", "gemm_fp4", "gemm_weight_only", "grouped_gemm", "attention_decode", "attention_decode_gqa",
                    "attention_prefill", "elementwise")
# measured operator -> the class it can stand for (and the precision whose record counts)
MEASURED_STANDS_FOR = {
    ("gemm", "fp8"): "gemm",
    ("gemm", "bf16"): "gemm_bf16",
    ("attention_prefill", "bf16"): "attention_prefill",
    ("rmsnorm", "bf16"): "elementwise",
}


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


@dataclass(frozen=True)
class Kernels:
    """Everything the serving model takes from kernel benchmarks and from the service's design."""

    ops: dict[str, Eff]
    normal_intranode_gb_per_s: float
    normal_internode_gb_per_s: float
    normal_sm_share: float  # share of the SMs the normal (prefill) all-to-all kernels occupy while they run
    low_latency_gb_per_s: tuple[tuple[int, float], ...]
    allreduce_nvlink_fraction: float
    overlap: float
    context_cv: float
    mtp_acceptance: float
    graph_gap_s: float  # launch cost per kernel replayed from a captured CUDA graph
    eager_launch_s: float  # launch cost per kernel launched one by one
    allreduce_latency_s: float  # fixed latency of one tensor-parallel all-reduce
    reserve_bytes: float
    comm_source: str
    launch_source: str
    allreduce_source: str
    ranges: dict[Knob, tuple[float, float]] = field(default_factory=dict)
    engine: str = DEFAULT_ENGINE  # whose rules (core/data/engines/) a step follows: CUDA graphs, scheduler, extra kernels

    def low_latency_bytes_per_s(self, ep: int) -> float:
        """DeepEP low-latency bandwidth per GPU at expert-parallel degree ``ep`` (table interpolated in log EP)."""
        table = self.low_latency_gb_per_s
        if ep <= table[0][0]:
            return table[0][1] * 1e9
        for (e0, b0), (e1, b1) in zip(table, table[1:]):
            if ep <= e1:
                import math

                w = (math.log(ep) - math.log(e0)) / (math.log(e1) - math.log(e0))
                return (b0 + w * (b1 - b0)) * 1e9
        return table[-1][1] * 1e9


@cache
def published_kernels() -> Kernels:
    """The published kernel figures of data/kernels.toml, with their ranges."""
    try:
        d = tomllib.loads(KERNELS_FILE.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{KERNELS_FILE.name} is malformed: {exc}") from exc
    ops = {k: Eff(float(d[k]["compute"]), float(d[k]["memory"]), "published: " + d[k]["source"]) for k in OPERATOR_CLASSES}
    ranges: dict[Knob, tuple[float, float]] = {}
    for k in OPERATOR_CLASSES:
        ranges[Knob("compute", k)] = tuple(d[k]["compute_range"])
        ranges[Knob("memory", k)] = tuple(d[k]["memory_range"])
    c, s = d["dispatch_combine"], d["service"]
    ranges[Knob("normal_internode_gb_per_s")] = tuple(c["normal_internode_range"])
    ranges[LOW_LATENCY_SCALE] = tuple(c["low_latency_range"])
    ranges[Knob("normal_sm_share")] = tuple(c["normal_sm_share_range"])
    ranges[Knob("allreduce_nvlink_fraction")] = tuple(d["allreduce"]["nvlink_fraction_range"])
    ranges[Knob("overlap")] = tuple(s["overlap_range"])
    ranges[Knob("context_cv")] = tuple(s["context_cv_range"])
    ranges[Knob("mtp_acceptance")] = tuple(s["mtp_acceptance_range"])
    launch, ar = d["launch"], d["allreduce"]
    ranges[Knob("graph_gap_s")] = tuple(v / 1e6 for v in launch["graph_gap_range_us"])
    ranges[Knob("eager_launch_s")] = tuple(v / 1e6 for v in launch["eager_launch_range_us"])
    ranges[Knob("allreduce_latency_s")] = tuple(v / 1e6 for v in ar["latency_range_us"])
    return Kernels(
        ops=ops,
        normal_intranode_gb_per_s=float(c["normal_intranode_gb_per_s"]),
        normal_internode_gb_per_s=float(c["normal_internode_gb_per_s"]),
        normal_sm_share=float(c["normal_sm_share"]),
        low_latency_gb_per_s=tuple((int(e), float(b)) for e, b in c["low_latency_gb_per_s"]),
        allreduce_nvlink_fraction=float(d["allreduce"]["nvlink_fraction"]),
        overlap=float(s["overlap"]),
        context_cv=float(s["context_cv"]),
        mtp_acceptance=float(s["mtp_acceptance"]),
        graph_gap_s=float(launch["graph_gap_us"]) / 1e6,
        eager_launch_s=float(launch["eager_launch_us"]) / 1e6,
        allreduce_latency_s=float(ar["latency_us"]) / 1e6,
        reserve_bytes=float(s["reserve_gb"]) * 2**30,
        comm_source=c["source"],
        launch_source=launch["source"],
        allreduce_source=f"{ar['source']}; latency: {ar['latency_source']}",
        ranges=ranges,
    )


def measured_efficiencies(ops: pd.DataFrame, gpu: Device) -> dict[str, Eff]:
    """Operator classes measured on a GPU of ``gpu``'s architecture (itself first), from operator records.

    compute: the best datasheet MFU over the shapes; memory: the best datasheet MBU. GEMMs also keep their
    curve over M (median over layers at each M), which the serving model reads at each GEMM's own M.
    Only catalogued GPUs count: their efficiencies are against datasheets.
    """
    if ops is None or ops.empty:
        return {}
    same = ops[ops["catalog_name"] == gpu.name]
    if same.empty and gpu.architecture:
        arch_of = {name: g.architecture for name, g in all_gpus().items()}  # each GPU file's architecture field
        same = ops[ops["catalog_name"].map(arch_of.get) == gpu.architecture]
    out: dict[str, Eff] = {}
    for (op, dtype), cls in MEASURED_STANDS_FOR.items():
        g = same[(same["operator"] == op) & (same["dtype"] == dtype)]
        if g.empty or g["mfu"].isna().all():
            continue
        curve: tuple[tuple[float, float, float], ...] = ()
        if op == "gemm":
            med = g.groupby("m")[["mfu", "mbu"]].median().dropna()
            compute, memory = float(med["mfu"].max()), float(med["mbu"].max())
            # at each M only the resource that bound it follows the curve; the other keeps its best (a compute-bound
            # GEMM's low MBU says nothing of the bandwidth it could reach, nor a memory-bound one's MFU of its FLOP/s)
            curve = tuple(
                (
                    float(m),
                    min(float(r.mfu) if r.mfu / compute >= r.mbu / memory else compute, 1.0),
                    min(memory if r.mfu / compute >= r.mbu / memory else float(r.mbu), 1.0),
                )
                for m, r in med.iterrows()
                if m > 0
            )
        else:
            compute, memory = float(g["mfu"].max()), float(g["mbu"].max())
        devices = ", ".join(sorted(set(g["device_name"])))
        out[cls] = Eff(
            min(compute, 1.0), min(memory, 1.0), f"measured: {op} {dtype} on {devices} ({len(g)} shapes, results/runs)", devices, curve
        )
    return out


def kernels_for(gpu: Device, ops: pd.DataFrame | None = None, fp8_block_scaled: bool = False) -> tuple[Kernels, str]:
    """The kernels for ``gpu``: published, with measured operator classes swapped in; and a one-line source.

    ``fp8_block_scaled``: the model's FP8 weights are block-scaled (DeepSeek-V3), served by block-scaled kernels
    (DeepGEMM); the FP8 GEMM measured here is torch._scaled_mm with row-wise scales, not that kernel, so the published
    DeepGEMM figures stay for the FP8 GEMMs."""
    base = published_kernels()
    measured = measured_efficiencies(ops, gpu) if ops is not None else {}
    if fp8_block_scaled:
        measured.pop("gemm", None)
    if not measured:
        return base, published_source(gpu)
    merged = {**base.ops, **measured}
    devices = ", ".join(sorted({e.measured_on for e in measured.values()}))
    rest = "published" if gpu.architecture == PUBLISHED_ON else "published (measured on Hopper)"
    return replace(base, ops=merged), f"measured {', '.join(sorted(measured))} ({devices}); {rest} for the rest"


def published_source(gpu: Device) -> str:
    """What the published figures are for ``gpu``: kernels.toml's figures are all Hopper benchmarks (H800, H100), so
    on another architecture they are Hopper's figures, said so."""
    if gpu.architecture == PUBLISHED_ON:
        return "published kernel figures (no GPU of this architecture measured)"
    return f"published kernel figures (measured on Hopper; none for {gpu.architecture or gpu.name})"


def with_value(k: Kernels, knob: Knob, value: float) -> Kernels:
    """``k`` with one ranged assumption set to ``value`` (for the sensitivity table and the interval's draws)."""
    if knob.op_class:  # a measured curve keeps its shape, scaled so that its best point takes the value
        e, i = k.ops[knob.op_class], 1 if knob.name == "compute" else 2
        scale = value / getattr(e, knob.name) if getattr(e, knob.name) else 1.0
        curve = tuple(tuple(min(v * scale, 1.0) if j == i else v for j, v in enumerate(p)) for p in e.curve)
        return replace(k, ops={**k.ops, knob.op_class: replace(e, **{knob.name: value}, curve=curve)})
    if knob == LOW_LATENCY_SCALE:
        return replace(k, low_latency_gb_per_s=tuple((e, b * value) for e, b in k.low_latency_gb_per_s))
    return replace(k, **{knob.name: value})


def central(k: Kernels, knob: Knob) -> float:
    """The value ``k`` runs ``knob`` at (1.0 for the low-latency table's multiplier)."""
    if knob == LOW_LATENCY_SCALE:
        return 1.0
    return float(getattr(k.ops[knob.op_class], knob.name)) if knob.op_class else float(getattr(k, knob.name))


def ranged(k: Kernels) -> list[tuple[Knob, tuple[float, float]]]:
    """Every ranged assumption with its range, in the order of their names (the draws' order)."""
    return sorted(k.ranges.items(), key=lambda item: str(item[0]))


def as_dict(k: Kernels) -> dict[str, Any]:
    return {name: {"compute": e.compute, "memory": e.memory, "source": e.source} for name, e in k.ops.items()}


def sample_kernels(k: Kernels, rng: np.random.Generator) -> Kernels:
    """Every assumption with a range drawn half below and half above its central value, uniformly in each half, so
    each one's median is the central value (the figure the model runs on) and its 90% interval stays inside the range."""
    for knob, (lo, hi) in ranged(k):
        mid = central(k, knob)
        below, above = sorted((lo, mid)), sorted((mid, hi))  # a measured central may lie outside the published range
        v = rng.uniform(*below) if rng.random() < 0.5 else rng.uniform(*above)
        k = with_value(k, knob, float(v))
    return k


def one_sided_ranges(k: Kernels) -> list[str]:
    """Assumptions whose range ends at the central value the model runs on (overlap 1.0 of [0.5, 1.0]): drawn, they can
    move a count only one way, which is what makes an interval end at the central count."""
    return [str(knob) for knob, (lo, hi) in ranged(k) if lo != hi and any(math.isclose(central(k, knob), v) for v in (lo, hi))]
