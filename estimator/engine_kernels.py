"""The measured kernels of one serving engine on one GPU, as the serving model asks for them: an operator family at a
shape -> the efficiency its measured latency implies (estimator/kernel_db.py: the operator then takes exactly that
latency), or None, and the model keeps its own figure (estimator/kernels.py decides the order of the sources).

The engine's own tables are read where the database holds that family for the GPU (at the version closest to the
engine's); where it holds none, the next engine of ``backends`` stands in, and the source says so. Families:

- ``gemm``: a linear map's (M, N, K) in its weights' format (FP8 per-tensor or block-scaled, 16-bit);
- ``decode attention`` (GQA): ``decode_attention_fraction``, the engine's best share of the bandwidth at the model's query
  heads per KV head, as the class's figure at every shape (the collector stops where the KV of batch x context outgrows
  the GPU: most serving shapes lie beyond its grid);
- ``prefill attention`` (GQA): whole prompts of the same tokens and mean attended context (the database times prompts with
  nothing cached);
- ``moe``: one MoE layer's routed experts at balanced routing for the expert-parallel group's tokens (TensorRT-LLM's and
  vLLM's fused-MoE tables, SGLang's DeepEP ``wideep_moe_*``); the busiest GPU's share beyond it is the serving model's own
  imbalance;
- ``all-reduce``: the engine's custom all-reduce under a CUDA graph, on GPUs whose scale-up link is NVLink only (the L40S
  tables come from a host whose PCIe all-reduce reached 5 GB/s of bus bandwidth over 4 GPUs, not a reading of the GPU).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from functools import cache, lru_cache

import numpy as np
import pandas as pd

from core.hardware import Device, get_gpu
from core.shapes import Shapes
from estimator import kernel_db as kdb
from estimator.eff import Eff

FAMILIES = ("gemm", "decode attention", "prefill attention", "moe", "all-reduce")
MOE_TABLES = {"sglang": "wideep_moe_{phase}"}  # SGLang's DeepEP MoE by phase; every other engine's fused-MoE table is "moe"
# tables checked whole against the datasheet (datasheet_share), by the columns that split them into one kernel's timings
CHECKED = {"gemm": ("gemm_dtype",), "decode_attention": ("head_dim", "kv_cache_dtype"),
           "prefill_attention": ("head_dim", "attn_dtype", "kv_cache_dtype")}  # fmt: skip


def database_format(fmt: str, precision: str, block_scaled: bool) -> str:
    """The format the database names a GEMM's weights by, for weights served in ``fmt`` computed at ``precision``: FP8
    (per-tensor, or block-scaled) and NVFP4 where computed natively, 16-bit weights in BF16; empty for any other (weight-only
    kernels, MXFP4), which the serving model does not read off the database."""
    if precision == "fp8" and fmt == "fp8":
        return "fp8_block" if block_scaled else "fp8"
    if precision == "fp4" and fmt == "nvfp4":
        return "nvfp4"
    return "bf16" if precision == "bf16" and fmt in ("bf16", "fp16") else ""


def moe_format(fmt: str, precision: str, block_scaled: bool) -> str:
    """The format the database names routed experts' weights by: a GEMM's (database_format), and MXFP4 experts served
    weight-only (a GPU without FP4 tensor cores: ``precision`` bf16) as the database's ``w4a16_mxfp4`` MoE tables time them,
    MXFP4 weights with BF16 activations: what TensorRT-LLM runs gpt-oss's experts with on Hopper (its gpt-oss deployment
    guide, docs/source/deployment-guide/deployment-guide-for-gpt-oss-on-trtllm.md: H200, BF16 activations, MXFP4 weights,
    the TRITON backend). On Blackwell its CUTLASS and TRTLLM backends run MXFP8 activations (the same guide): AIConfigurator's
    collector times that kernel (``w4a8_mxfp4_mxfp8`` on SM100, collector/trtllm/collect_moe.py) but core/data/kernels keeps
    ``w4a16_mxfp4`` only (scripts/extract_kernel_db.py), so no MXFP4 table is read there."""
    return "mxfp4" if fmt == "mxfp4" and precision == "bf16" else database_format(fmt, precision, block_scaled)


@lru_cache(maxsize=1 << 16)
def _lookup(gpu: str, name: str, backend: str, shape: tuple[tuple[str, object], ...], version: str | None) -> kdb.Measured:
    return kdb.lookup(gpu, name, backend, dict(shape), version)


@cache
def _holds(gpu: str, name: str, backend: str) -> bool:
    system = kdb.system_of(gpu)
    return system is not None and bool(kdb._held(system, name, backend))


@cache
def _gemm_rows(gpu: str) -> tuple[float, ...]:
    df = kdb.table(kdb.system_of(gpu), "gemm")
    return tuple(float(c.split("=", 1)[1]) for c in df.columns if c.startswith("m="))


def _read_rows(system: str, name: str, backend: str, version: str | None) -> tuple[pd.DataFrame, str]:
    """(the rows of table ``name`` measured through ``backend`` at the version kernel_db.lookup reads for ``version``, that
    version): the closest the table holds."""
    df, v = kdb.table(system, name), kdb.closest_version(list(kdb._held(system, name, backend)), version)
    return df[(df["backend"] == backend) & (df["version"] == v)], v


@cache
def _gemm_top(gpu: str, backend: str, version: str | None, dtype: str) -> float:
    """The largest M the GEMM table measured for ``dtype`` weights through ``backend`` at the version read (0: none)."""
    df = _read_rows(kdb.system_of(gpu), "gemm", backend, version)[0]
    df = df[df["gemm_dtype"] == dtype]
    return max((float(c.split("=", 1)[1]) for c in df.columns if c.startswith("m=") and df[c].notna().any()), default=0.0)


@cache
def decode_attention_fraction(gpu: str, backend: str, ratio: float, head_dim: int, kv_dtype: str, version: str | None) -> tuple[float, str]:
    """(share of the datasheet bandwidth, source) the engine's decode attention reaches reading KV on ``gpu`` with ``ratio``
    query heads per KV head: for each measured head count of that ratio (same head width and KV precision) the best share
    over its measured batches and contexts (the bandwidth-bound end of the grid, where serving runs; kernels.toml's FlashMLA
    figure is likewise its best, 'up to 3,000 GB/s', and estimator/measured_kernels.py keeps a measured class's best), the
    median over the head counts; between measured ratios interpolated in log ratio, none beyond them. The share depends on
    the ratio (H100, TensorRT-LLM 1.3, FP8 KV: 0.91 at 4 query heads per KV head, 0.87 at 8, 0.75 at 16). (nan, why) where
    the table holds no such kernel, or where any of its shapes reads the KV faster than the datasheet allows (the timing did
    not read the KV counted: A100's TensorRT-LLM 1.0.0 table, 1.2-1.7 x its bandwidth; L40S's and RTX PRO 6000's, 2-4 x)."""
    system, g = kdb.system_of(gpu), get_gpu(gpu)
    df = kdb.table(system, "decode_attention") if system else None
    if df is None or df.empty or backend not in set(df["backend"]):
        return math.nan, f"no {backend} decode attention table for {gpu}"
    df, v = _read_rows(system, "decode_attention", backend, version)
    df = df[df["head_dim"] == head_dim]
    df = df[df["kv_cache_dtype"] == kdb.DTYPE[kv_dtype]]
    if df.empty or df["kernel_source"].nunique() != 1:
        return math.nan, f"{backend} {v} decode attention on {gpu}: {df['kernel_source'].nunique()} kernels at head width {head_dim}"
    steps = [c for c in df.columns if c.startswith("step=")]
    ctx, kv_b = np.array([float(c.split("=", 1)[1]) for c in steps]), 1.0 if kdb.DTYPE[kv_dtype] == "fp8" else 2.0
    ms = df[steps].to_numpy(float)
    kv_row = df["batch_size"].to_numpy(float) * 2 * df["num_key_value_heads"].to_numpy(float) * head_dim * kv_b  # KV bytes a cached token
    reads = kv_row[:, None] * ctx[None, :]
    share = reads / (ms / 1e3) / g.bandwidth_bytes_per_s
    source = (f"AIConfigurator {kdb.package().split()[1]} database, system {system}, backend {backend} {v}, decode_attention "
              f"head_dim={head_dim} kv_cache_dtype={kdb.DTYPE[kv_dtype]} (kernel {df['kernel_source'].iloc[0]})")
    if np.nanmax(share) > 1.0:
        return math.nan, f"{source}: reads KV at {np.nanmax(share):.2f} x the datasheet bandwidth, not the KV counted"
    best = {}
    for (h, kvh), rows in df.groupby(["num_heads", "num_key_value_heads"]).groups.items():
        best.setdefault(h / kvh, []).append(float(np.nanmax(share[df.index.get_indexer(rows)])))
    ratios = sorted(best)
    if not ratios[0] <= ratio <= ratios[-1]:
        return math.nan, f"{source}: {ratio:g} query heads per KV head beyond the measured {ratios[0]:g}-{ratios[-1]:g}"
    fraction = float(np.interp(math.log(ratio), [math.log(r) for r in ratios], [statistics.median(best[r]) for r in ratios]))
    return fraction, f"{source}, its best share of the bandwidth at {ratio:g} query heads per KV head, held at every shape"


def _work(name: str, df: pd.DataFrame, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(FLOPs, bytes, precision) of every row of table ``name`` (rows) at each value ``x`` of its last axis (columns), as
    estimator/layer_ops.py counts that operator."""
    col = lambda c: df[c].to_numpy(float)[:, None]  # noqa: E731
    if name == "gemm":
        q = str(df["gemm_dtype"].iloc[0])
        wb, ab = kdb.GEMM_BYTES[q], 1.0 if q in ("fp8", "fp8_block") else 2.0
        n, k = col("n"), col("k")
        return 2 * x * n * k, n * k * wb + x * k * ab + x * n * 2, "fp8" if q in ("fp8", "fp8_block") else "bf16"
    b, h, kvh, d = col("batch_size"), col("num_heads"), col("num_key_value_heads"), col("head_dim")
    if name == "decode_attention":
        kv_b = 1.0 if df["kv_cache_dtype"].iloc[0] == "fp8" else 2.0
        return b * 4 * h * x * d, b * x * 2 * kvh * d * kv_b, "bf16"
    return b * x * 4 * h * d * x / 2, b * x * (2 * h + 2 * kvh) * d * 2, "bf16"  # prefill: each token attends half its prompt


@cache
def datasheet_share(gpu: str, name: str, backend: str, version: str | None, exact: tuple[tuple[str, object], ...]) -> float:
    """The largest share of the datasheet a table's kernel implies where its timing reads what the serving model counts
    (the rows matching ``exact`` at the version read): a GEMM's weights at one row (M = 1), decode attention's KV, prefill
    attention's FLOPs. Above 1 the kernel did not do that work (weights or KV served from a large L2 cache: L40S's and RTX
    PRO 6000's GEMM tables read weights at up to 3.5 x their bandwidth), and none of the table's shapes is read."""
    system, g = kdb.system_of(gpu), get_gpu(gpu)
    df = _read_rows(system, name, backend, version)[0]
    for c, v in exact:
        df = df[df[c] == v]
    last = kdb.AXES[name][-1]
    cols = [c for c in df.columns if c.startswith(last + "=")][: 1 if name == "gemm" else None]  # GEMM: the M = 1 column
    if df.empty or not cols:
        return 0.0
    flops, nbytes, precision = _work(name, df, np.array([float(c.split("=", 1)[1]) for c in cols])[None, :])
    s = df[cols].to_numpy(float) / 1e3
    if name == "prefill_attention":
        return float(np.nanmax(flops / s / g.peak_flops_per_s(precision)))
    return float(np.nanmax(nbytes / s / g.bandwidth_bytes_per_s))


@dataclass(frozen=True)
class EngineKernels:
    """The database read for one GPU (catalogued name) and engine: ``backends`` the engine's own first, then those that
    stand in where the engine's has no table of a family; ``version`` the engine's (the closest held is read)."""

    gpu: str
    backends: tuple[str, ...]
    version: str | None
    families: frozenset[str] = frozenset(FAMILIES)

    def _backend(self, name: str) -> tuple[str, str | None]:
        """(the engine whose table ``name`` is read, the version asked of it): the first holding it."""
        for i, backend in enumerate(self.backends):
            if _holds(self.gpu, name, backend):
                return backend, self.version if i == 0 else None
        return "", None

    def _read(self, family: str, name: str, shape: dict[str, object]) -> tuple[kdb.Measured, str]:
        """The measurement of table ``name`` at ``shape`` from the first engine holding the table, and who stands in."""
        backend, version = self._backend(name)
        if not backend:
            return kdb.Measured(None, f"no {family} table for {self.gpu}", ""), ""
        got = _lookup(self.gpu, name, backend, tuple(sorted(shape.items())), version)
        own = backend == self.backends[0]
        return got, "" if own else f" ({backend}'s kernels stand in: no {self.backends[0]} {family} table for {self.gpu})"

    def _eff(self, family: str, name: str, shape: dict[str, object], flops: float, nbytes: float, gpu: Device,
             precision: str) -> Eff | None:  # fmt: skip
        if family not in self.families or gpu.name != self.gpu:
            return None
        got, stand = self._read(family, name, shape)
        if got.ms is not None and name in CHECKED:
            backend, version = self._backend(name)
            exact = tuple((c, shape[c]) for c in CHECKED[name])
            if datasheet_share(self.gpu, name, backend, version, exact) > 1.0:  # the table did not time the work counted
                return None
        eff = kdb.implied_eff(got, flops, nbytes, gpu, precision)
        return None if eff is None else Eff(eff.compute, eff.memory, eff.source + stand)

    def gemm_rows(self) -> tuple[float, ...]:
        """The rows M the GEMM table read measured (its last axis)."""
        backend, _ = self._backend("gemm")
        return _gemm_rows(self.gpu) if backend else ()

    def gemm(self, gpu: Device, fmt: str, m: float, n: float, k: float, flops: float, nbytes: float, precision: str) -> Eff | None:
        """A linear map of ``m`` rows, (``k`` x ``n``) weights in ``fmt`` (fp8, fp8_block, bf16, fp16)."""
        shape = {"gemm_dtype": kdb.DTYPE[fmt], "n": float(n), "k": float(k), "m": float(m)}
        return self._eff("gemm", "gemm", shape, flops, nbytes, gpu, precision)

    def gemm_held(self, gpu: Device, fmt: str, m: float, n: float, k: float, work: tuple[float, float], row_bytes: float,
                  precision: str) -> Eff | None:  # fmt: skip
        """``gemm`` at ``m`` rows doing ``work`` (FLOPs, bytes; ``row_bytes`` a row); beyond the largest M measured for the
        format (8,192 on the A100's TensorRT-LLM 1.0.0 16-bit table, 32,768 on Hopper's) the efficiency there, held: a 128 x
        128-tile kernel then runs at least 64 x N / 128 tiles, 2,048 for N >= 4,096, 19 waves on the A100's 108 SMs, so a
        last partial wave idles under 5% (wave quantization, NVIDIA's Matrix Multiplication Background User's Guide,
        docs.nvidia.com/deeplearning/performance/dl-performance-matrix-multiplication) and a compute-bound GEMM's share of
        the peak no longer grows with M. A static batch's prefill runs such GEMMs (52 prompts of 2,048 tokens: M = 106,496)."""
        backend, version = self._backend("gemm")
        top = _gemm_top(self.gpu, backend, version, kdb.DTYPE[fmt]) if backend else 0.0
        if not top or m <= top:
            return self.gemm(gpu, fmt, m, n, k, *work, precision)
        e = self.gemm(gpu, fmt, top, n, k, work[0] * top / m, work[1] - (m - top) * row_bytes, precision)
        return None if e is None else Eff(e.compute, e.memory, f"{e.source}; the efficiency at m={top:g} held at {m:g} rows")

    def prefill_attention(self, gpu: Device, tokens: float, context: float, heads: int, kv_heads: int, head_dim: int,
                          kv_dtype: str) -> Eff | None:  # fmt: skip
        """Causal prefill attention of ``tokens`` tokens (the TP group's) attending ``context`` tokens on average, at the
        efficiency of the database's whole prompts of the same work: ``tokens`` / (2 x ``context``) prompts of 2 x
        ``context`` tokens (at least one; a chunk after a cached prefix runs as a prompt of its mean attended length),
        implied with that shape's own FLOPs and bytes (estimator/layer_ops.py's count)."""
        isl = 2 * context
        batch = max(tokens / isl, 1.0)
        flops, nbytes = batch * isl * 4 * heads * head_dim * context, batch * isl * (2 * heads + 2 * kv_heads) * head_dim * 2
        shape = {"batch_size": batch, "num_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
                 "attn_dtype": "bfloat16", "kv_cache_dtype": kdb.DTYPE[kv_dtype], "isl": isl}  # fmt: skip
        return self._eff("prefill attention", "prefill_attention", shape, flops, nbytes, gpu, "bf16")

    def decode_fraction(self, gpu: Device, heads: int, kv_heads: int, head_dim: int, kv_dtype: str) -> tuple[float, str] | None:
        """(bandwidth share, source) of the engine's decode attention at this heads ratio (decode_attention_fraction)."""
        if "decode attention" not in self.families or gpu.name != self.gpu:
            return None
        backend, version = self._backend("decode_attention")
        if not backend:
            return None
        share, source = decode_attention_fraction(self.gpu, backend, heads / kv_heads, head_dim, kv_dtype, version)
        return None if math.isnan(share) else (share, source)

    def moe(self, gpu: Device, phase: str, fmt: str, group_tokens: float, s: Shapes, tp: int, ep: int, flops: float, nbytes: float,
            precision: str) -> Eff | None:  # fmt: skip
        """Routed experts of one MoE layer: ``group_tokens`` entering the expert-parallel group, balanced routing; ``s``
        the model's shapes. (FLOPs, bytes) are the balanced share of the GPU's work."""
        shape = {"moe_dtype": kdb.DTYPE[fmt], "hidden_size": s.hidden, "inter_size": s.expert_k_n[1][0], "topk": s.experts_per_token,
                 "num_experts": s.num_experts, "moe_tp_size": 1 if ep > 1 else tp, "moe_ep_size": ep,
                 "num_tokens": float(group_tokens)}  # fmt: skip
        name = MOE_TABLES.get(self.backends[0], "moe").format(phase=phase)
        if name != "moe":
            shape["distribution"] = "uniform"
        return replace(self, version=self._moe_version(name, shape))._eff("moe", name, shape, flops, nbytes, gpu, precision)

    def _moe_version(self, name: str, shape: dict[str, object]) -> str | None:
        """The version of the engine's MoE table read at ``shape``: the one closest to the engine's where it timed this expert
        shape (its columns: dtype, widths, top-k, experts, TP and EP sizes), else the first of the engine's other versions that
        did, the nearest after it first, then those before, newest first. The collectors add expert shapes version by version
        (TensorRT-LLM 1.3.0rc10 on H100 and H200 times no Llama 4 Scout experts, 1.3.0rc20 does): the engine's own kernel at
        another version, rather than none. A shape timed but off the measured token counts keeps the closest version."""
        backend, _ = self._backend(name)
        system = kdb.system_of(self.gpu)
        if not backend or system is None or backend != self.backends[0]:
            return self.version
        held = sorted(kdb._held(system, name, backend), key=kdb.version_key)
        first = kdb.closest_version(list(held), self.version)
        after = [v for v in held if kdb.version_key(v) > kdb.version_key(first)]
        before = [v for v in reversed(held) if kdb.version_key(v) < kdb.version_key(first)]
        exact = {k: v for k, v in shape.items() if k not in kdb.AXES[name]}
        columns = lambda v: tuple(sorted({"backend": backend, "version": v, **exact}.items()))  # noqa: E731
        return next((v for v in (first, *after, *before) if kdb._kernels(system, name, columns(v))), first)

    def allreduce_s(self, gpu: Device, gpus: int, elements: float) -> tuple[float, str] | None:
        """Seconds of one all-reduce of ``elements`` BF16 values over ``gpus`` GPUs, and its source; None off NVLink."""
        if "all-reduce" not in self.families or gpu.name != self.gpu or gpu.scaleup_link != "nvlink":
            return None
        got, stand = self._read("all-reduce", "allreduce", {"num_gpus": gpus, "message_size": float(elements)})
        return None if got.ms is None else (got.ms / 1e3, f"{got.source}, {got.note}{stand}")
