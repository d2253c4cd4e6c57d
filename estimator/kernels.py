"""Kernel efficiencies the serving model runs on, and the one place that decides an operator's efficiency at its shape.

For an operator of a given class at a given shape, in this order (``Kernels.gemm``, ``attention``, ``routed_experts``,
``elementwise``, ``allreduce_s``):

1. this project's own measurement of the same kernel on the same GPU (estimator/measured_kernels.py: the BF16 GEMM
   measured here is the cuBLAS GEMM vLLM's and SGLang's linear layers call);
2. the measured operator database (core/data/kernels, estimator/engine_kernels.py) for the GPU and the engine the
   prediction is about, at the version closest to it, inside its measured shapes (the source names system, backend,
   version and kernel); for GQA decode attention beyond them, the engine's best measured share of the bandwidth at the
   model's heads ratio, held constant; for a GEMM of more rows than the largest measured, the efficiency there, held;
3. the class's figure: this project's measurement on a GPU of the same architecture (the FP8 GEMM measured here is
   torch._scaled_mm, another kernel than the engines', so it comes after the database), else kernels.toml's published
   figures (Hopper kernel benchmarks).

A decode step the engine replays from a CUDA graph runs its linear maps and elementwise kernels at the captured batch it
is padded to (core/data/engines/); the operator's efficiency is restated for the rows it counts. A ranged assumption
(sensitivity table, plan's interval) moves a measured figure by the factor it moves the class's own figure
(``with_value``), so every shape read off the database or a measured curve moves with it.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from core.engines import DEFAULT_ENGINE, CudaGraphs, engine_rules
from core.hardware import CatalogError, Device
from core.paths import DATA_DIR
from core.shapes import Shapes
from estimator.eff import LOW_LATENCY_SCALE, OPERATOR_CLASSES, Eff, Knob
from estimator.engine_kernels import EngineKernels
from estimator.kernel_db import system_of
from estimator.measured_kernels import SAME_KERNEL, measured_efficiencies, measured_on

KERNELS_FILE = DATA_DIR / "kernels.toml"
PUBLISHED_ON = "hopper"  # the architecture every published figure of kernels.toml was measured on (H800, H100 SXM5)


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
    database: EngineKernels | None = None  # the measured kernels of the GPU and engine predicted for (core/data/kernels)
    own: frozenset[str] = frozenset()  # classes whose figure is this GPU's own measurement of the engine's kernel
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)  # class -> (compute, memory) factors ranges set
    cuda_graphs: CudaGraphs | None = None  # the captured sizes a deployment set itself; None: the engine's rules
    padding: float = 1.0  # rows a step runs per row it counts: a decode step's CUDA graph padded up (serving.step sets it)

    def low_latency_bytes_per_s(self, ep: int) -> float:
        """DeepEP low-latency bandwidth per GPU at expert-parallel degree ``ep`` (table interpolated in log EP)."""
        table = self.low_latency_gb_per_s
        if ep <= table[0][0]:
            return table[0][1] * 1e9
        for (e0, b0), (e1, b1) in zip(table, table[1:]):
            if ep <= e1:
                w = (math.log(ep) - math.log(e0)) / (math.log(e1) - math.log(e0))
                return (b0 + w * (b1 - b0)) * 1e9
        return table[-1][1] * 1e9

    def graphs(self, gpu_name: str) -> CudaGraphs:
        """The CUDA graphs a step captures: the deployment's own sizes where it set them, else the engine's (core/data/engines/)."""
        return self.cuda_graphs or engine_rules(self.engine).graphs(gpu_name)

    def graph_run(self, gpu_name: str, tokens: float) -> tuple[float, bool]:
        """(tokens a step of ``tokens`` per engine runs, whether it replays a CUDA graph) by ``graphs``."""
        return self.graphs(gpu_name).run(tokens)

    def _measured(self, cls: str, e: Eff | None) -> Eff | None:
        """A database figure moved as the ranged assumptions moved the class's own figure."""
        return None if e is None else e.scaled(*self.scale.get(cls, (1.0, 1.0)))

    def _db(self, cls: str) -> EngineKernels | None:
        return None if cls in self.own else self.database

    def gemm(self, gpu: Device, rows: float, n: float, k: float, fmt: str, cls: str, precision: str, flops: float, nbytes: float,
             row_bytes: float) -> Eff:  # fmt: skip
        """A linear map of ``rows`` x (``k`` x ``n``) weights named ``fmt`` in the database (fp8, fp8_block, nvfp4, bf16;
        empty: none read), of operator class ``cls`` (batch.gemm_class), ``flops`` and ``nbytes`` counted, ``row_bytes`` of
        them per row. Padded rows run too."""
        run = rows * self.padding
        work = (flops * run / rows, nbytes + (run - rows) * row_bytes) if rows else (flops, nbytes)
        db = self._db(cls)
        e = self._measured(cls, db.gemm_held(gpu, fmt, run, n, k, work, row_bytes, precision) if db and fmt else None)
        e = e or self.ops[cls].at(run)
        return e if run == rows else e.for_work((flops, nbytes), work, f"padded to {run:g} rows (CUDA graph)")

    def attention(self, gpu: Device, phase: str, tokens: float, context: float, heads: int, kv_heads: int, head_dim: int,
                  kv_dtype: str) -> Eff:  # fmt: skip
        """GQA attention of ``tokens`` tokens (the TP group's) attending ``context`` cached tokens on average, this GPU's
        ``heads`` and ``kv_heads``. Prefill: the database's whole prompts of the same work (EngineKernels.prefill_attention).
        Decode: the engine's best measured share of the bandwidth at this heads ratio (decode_attention_fraction), the same
        at every shape, measured or beyond the measured grid, before the published GQA figure (attention_decode_gqa): the
        database times 18 of the validation rows' 112 decode shapes, and a latency read where it has one beside a figure
        where it has none would make the step jump at the grid's edge."""
        cls = "attention_decode_gqa" if phase == "decode" else "attention_prefill"
        db = self._db(cls)
        if db and phase == "decode":
            share = db.decode_fraction(gpu, heads, kv_heads, head_dim, kv_dtype)
            return Eff(self.ops[cls].compute, min(share[0] * self.scale.get(cls, (1.0, 1.0))[1], 1.0), share[1]) if share else self.ops[cls]
        got = db.prefill_attention(gpu, tokens, context, heads, kv_heads, head_dim, kv_dtype) if db else None
        return self._measured(cls, got) or self.ops[cls]

    def routed_experts(self, gpu: Device, phase: str, fmt: str, group_tokens: float, s: Shapes, tp: int, ep: int, precision: str,
                       flops: float, nbytes: float, imbalance: float, figure: tuple[str, float]) -> Eff:  # fmt: skip
        """One MoE layer's routed experts on the busiest GPU: the database's balanced latency for the expert-parallel
        group's ``group_tokens`` times ``imbalance`` (the busiest GPU's work over the mean, which ``flops``/``nbytes`` hold);
        else ``figure`` (class, rows: the grouped GEMM's class read at its tokens per expert)."""
        db = self._db(figure[0])
        got = db.moe(gpu, phase, fmt, group_tokens, s, tp, ep, flops / imbalance, nbytes / imbalance, precision) if db and fmt else None
        return self._measured(figure[0], got) or self.ops[figure[0]].at(figure[1])

    def elementwise(self, rows: float) -> Eff:
        """Norms, residuals, activations over ``rows`` rows: a padded step runs its padding's rows too."""
        e, p = self.ops["elementwise"], self.padding
        return e if p == 1.0 else e.for_work((1.0, 1.0), (p, p), f"padded to {rows * p:g} rows (CUDA graph)")

    def row_edges(self, gpu_name: str) -> tuple[float, ...]:
        """Tokens per engine step past which a decode step's time jumps: each captured CUDA-graph size and the one after it
        (padded to the next size, or eager), and the rows the database measured GEMMs at (pairs such as 256 and 257, where
        a kernel's tiles change): what a table of steps over the batch must hold as grid points."""
        sizes = self.graphs(gpu_name).sizes
        rows = self.database.gemm_rows() if self.database else ()
        return tuple(sorted({float(p + d) for p in sizes for d in (0, 1)} | set(rows)))

    def figure(self, cls: str, rows: float = 1.0) -> Eff:
        """The class's own figure (a measured curve read at ``rows``, else published) for the operators no measured
        kernel table stands for: MLA's absorbed bmm and attention, the router, the LM head with its sampling."""
        return self.ops[cls].at(rows)

    def allreduce_s(self, gpu: Device, tp: int, elements: float) -> tuple[float, str]:
        """(seconds, source) of one tensor-parallel all-reduce of ``elements`` BF16 values: the engine's measured latency
        where the database holds it (NVLink GPUs), moved as the ranged all-reduce assumptions move the published formula;
        else that formula, a fixed latency plus the bytes at a share of one NVLink direction (kernels.toml [allreduce])."""
        formula = self._allreduce_formula_s(gpu, tp, elements)
        got = self.database.allreduce_s(gpu, tp, elements) if self.database else None
        if got is None:
            return formula, self.allreduce_source
        return got[0] * formula / published_kernels()._allreduce_formula_s(gpu, tp, elements), got[1]

    def _allreduce_formula_s(self, gpu: Device, tp: int, elements: float) -> float:
        bus = self.allreduce_nvlink_fraction * (gpu.nvlink_gb_per_s or 0) / 2 * 1e9
        return self.allreduce_latency_s + (2 * (tp - 1) / tp * elements * 2 / bus if bus else 0.0)


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


def kernels_for(gpu: Device, ops: pd.DataFrame | None = None, fp8_block_scaled: bool = False, engine: str = DEFAULT_ENGINE,
                database: tuple[tuple[str, ...], str | None] | None = None) -> tuple[Kernels, str]:  # fmt: skip
    """The kernels for ``gpu`` serving through ``engine`` (its rules, core/data/engines/): published, with measured operator
    classes swapped in, the engine's measured kernels (``database``: the database's engines to read, its own first, and the
    version asked; default the engine rules' own) read before them; and a one-line source. ``ops`` None (no measurement
    asked for, as the report's and the backtest's 'published kernels' figures): published figures only, unless a
    ``database`` is named.

    ``fp8_block_scaled``: the model's FP8 weights are block-scaled (DeepSeek-V3), served by block-scaled kernels
    (DeepGEMM); the FP8 GEMM measured here is torch._scaled_mm with row-wise scales, not that kernel, so it does not
    stand for the FP8 GEMMs."""
    base, rules = published_kernels(), engine_rules(engine)
    backends, version = database or ((rules.kernel_backends, rules.version) if ops is not None else ((), None))
    measured = measured_efficiencies(ops, gpu) if ops is not None else {}
    if fp8_block_scaled:
        measured.pop("gemm", None)
    own = frozenset(c for c in measured if measured_on(ops, gpu) and backends and backends[0] in SAME_KERNEL.get(c, ()))
    db = EngineKernels(gpu.name, tuple(backends), version) if backends and system_of(gpu.name) else None
    k = replace(base, ops={**base.ops, **measured}, engine=engine, database=db, own=own)
    held = f"{backends[0]} {version or 'newest'} kernels measured on {gpu.name} (core/data/kernels) where held; " if db else ""
    if not measured:
        return k, held + published_source(gpu)
    devices = ", ".join(sorted({e.measured_on for e in measured.values()}))
    rest = "published" if gpu.architecture == PUBLISHED_ON else "published (measured on Hopper)"
    first = f" ({', '.join(sorted(own))} before the database: the same kernel)" if own else ""
    return k, f"{held}measured {', '.join(sorted(measured))} ({devices}){first}; {rest} for the rest"


def published_source(gpu: Device) -> str:
    """What the published figures are for ``gpu``: kernels.toml's figures are all Hopper benchmarks (H800, H100), so
    on another architecture they are Hopper's figures, said so."""
    if gpu.architecture == PUBLISHED_ON:
        return "published kernel figures (no GPU of this architecture measured)"
    return f"published kernel figures (measured on Hopper; none for {gpu.architecture or gpu.name})"


def with_value(k: Kernels, knob: Knob, value: float) -> Kernels:
    """``k`` with one ranged assumption set to ``value`` (for the sensitivity table and the interval's draws). An operator
    class's figure takes the value; a measured curve keeps its shape, scaled so that its best point takes it; every figure
    read off the measured database for that class is scaled by the same factor (``Kernels.scale``)."""
    if knob.op_class:
        e, part = k.ops[knob.op_class], knob.name
        factor = value / getattr(e, part) if getattr(e, part) else 1.0
        c, m = k.scale.get(knob.op_class, (1.0, 1.0))
        scale = (c * factor, m) if part == "compute" else (c, m * factor)
        moved = replace(e.scaled(factor, 1.0) if part == "compute" else e.scaled(1.0, factor), **{part: value})
        return replace(k, ops={**k.ops, knob.op_class: moved}, scale={**k.scale, knob.op_class: scale})
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
