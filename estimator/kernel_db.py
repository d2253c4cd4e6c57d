"""Measured operator latencies by GPU, serving engine and engine version, and the efficiency each implies.

The latencies are AIConfigurator's database (NVIDIA, Apache-2.0), extracted into core/data/kernels/ (its README says what
each table is and how it was timed): each figure is of one kernel family that one engine runs (``kernel_source``: e.g.
TensorRT-LLM's PyTorch-flow ``torch_flow`` GEMM, vLLM's ``CutlassFP8ScaledMMLinearKernel``, FlashAttention-3 ``fa3``), on
one GPU, at one engine version. A shape between measured shapes is interpolated linearly in log(latency) over the log of
each numeric axis (GEMM M, N, K; batch; cached tokens; message size), one axis at a time between the two measured values
around it; the other columns must match exactly. A shape beyond the measured ones is never extrapolated: the answer says
so (``ms`` None, ``note`` why) and the caller keeps its own figure. The measured latency carries whatever floor the kernel
has at small shapes (launch, tile quantization), so an efficiency implied from it carries it too.

Which version: the newest the extract holds, or the one closest to a given engine version (the oldest at or after it,
else the newest before it: the database's versions are all newer than the validation sources' engines).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd

from core.errors import CatalogError
from core.hardware import Device
from core.paths import DATA_DIR
from estimator.eff import Eff

KERNELS_DIR = DATA_DIR / "kernels"
# numeric axes of each table, in file order: interpolated in log space; every other shape column must match exactly
AXES = {"gemm": ("n", "k", "m"), "decode_attention": ("batch_size", "step"), "prefill_attention": ("batch_size", "isl"),
        "allreduce": ("message_size",), "nccl": ("message_size",), "moe": ("num_tokens",), "mla_decode": ("batch_size", "step"),
        "mla_prefill": ("batch_size", "isl"), "mla_decode_module": ("batch_size", "step"), "mla_prefill_module": ("batch_size", "isl"),
        "wideep_moe_prefill": ("num_tokens",), "wideep_moe_decode": ("num_tokens",), "wideep_mla_decode": ("batch_size", "isl"),
        "wideep_mla_prefill": ("batch_size", "isl"), "mla_bmm": ("num_tokens",)}  # fmt: skip
META = ("backend", "version", "kernel_source")
# several kernels measured at one shape: the one a serving step runs, where the engine's default is known (decode runs in
# CUDA graphs: the all-reduces timed under one). vLLM's block-scaled FP8 linear layer picks among DeepGEMM, FlashInfer and
# CUTLASS by what is installed and by environment (vllm/model_executor/layers/quantization/kernels/scaled_mm/cuda.py,
# CudaFp8BlockScaledMMKernel.apply_weights): no default is named, and its tables are not read.
# TensorRT-LLM's fused MoE: its MoeConfig.backend defaults to CUTLASS (tensorrt_llm/llmapi/llm_args.py, 1.0 and 1.1); the
# NVFP4 tables also time a min-latency kernel, a mode a deployment turns on itself, so CUTLASS's is the engine's by default.
DEFAULT_KERNEL = {("vllm", "allreduce"): "vllm_graph", ("sglang", "allreduce"): "sglang_graph", ("trtllm", "moe"): "moe_torch_flow_cutlass"}
# fleetcal's precision names -> the database's (16-bit GEMMs are bf16 there: FP16 and BF16 share one tensor-core peak)
DTYPE = {"bf16": "bfloat16", "fp16": "bfloat16", "bfloat16": "bfloat16", "fp8": "fp8", "fp8_block": "fp8_block", "nvfp4": "nvfp4",
         "int8": "int8_wo", "int4": "int4_wo", "mxfp4": "w4a16_mxfp4"}  # fmt: skip  # MXFP4: the MoE tables' (BF16 activations)
GEMM_BYTES = {"bfloat16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5, "int8_wo": 1.0, "int4_wo": 0.5}  # weight bytes per element


@dataclass(frozen=True)
class Measured:
    """One operator's latency from the database, or why there is none."""

    ms: float | None  # None: not measured at or around this shape
    note: str  # what was read (measured, interpolated) or why nothing was
    source: str  # "AIConfigurator 0.12.0 database, system h200_sxm, backend trtllm 1.3.0rc20, gemm fp8 (kernel torch_flow)"


def version_key(v: str) -> tuple:
    """Order of engine versions: numeric parts, a pre-release (dev, rc) below its release, a post-release above."""
    m = re.match(r"^(\d+(?:\.\d+)*)(?:\.?(rc|dev|post)(\d+))?", v)
    if not m:
        return ((0,) * 4, 0, 0)
    nums = tuple(int(x) for x in m.group(1).split("."))
    return (nums + (0,) * (4 - len(nums)), {"dev": -2, "rc": -1, None: 0, "post": 1}[m.group(2)], int(m.group(3) or 0))


def closest_version(versions: list[str], target: str | None) -> str:
    """``target`` None: the newest; else the oldest version at or after ``target``, or the newest before it."""
    if target is None:
        return max(versions, key=version_key)
    after = [v for v in versions if version_key(v) >= version_key(target)]
    return min(after, key=version_key) if after else max(versions, key=version_key)


@cache
def systems() -> dict[str, str]:
    """fleetcal GPU name -> the database's system (core/data/kernels/systems.csv)."""
    df = pd.read_csv(KERNELS_DIR / "systems.csv", comment="#")
    return dict(zip(df["gpu"], df["system"]))


@cache
def package() -> str:
    """The package the extract came from, as its files' first line names it ('aiconfigurator-core 0.12.0')."""
    first = (KERNELS_DIR / "manifest.csv").read_text().split("\n", 1)[0]
    return re.search(r"Derived from (\S+ \S+)", first).group(1)


def system_of(gpu: str) -> str | None:
    """The database's system for a catalogued GPU name, None where it holds none (H800, H20, AMD GPUs, ...)."""
    return systems().get(gpu)


@cache
def table(system: str, name: str) -> pd.DataFrame:
    """One table of one system as stored (wide: the last axis across columns); empty where the system has none."""
    path = KERNELS_DIR / system / f"{name}.csv.gz"
    return pd.read_csv(path, comment="#", dtype={"version": str}) if path.is_file() else pd.DataFrame()


@cache
def _tree(system: str, name: str, fixed: tuple[tuple[str, Any], ...]) -> dict:
    """Measured latencies of the rows matching ``fixed`` (column, value) as nested dicts, one level per numeric axis."""
    df, axes = table(system, name), AXES[name]
    for col, val in fixed:
        df = df[df[col] == val]
    last = [c for c in df.columns if c.startswith(axes[-1] + "=")]
    xs = [float(c.split("=", 1)[1]) for c in last]
    tree: dict = {}
    for key, values in zip(df[list(axes[:-1])].to_numpy(float), df[last].to_numpy(float)):
        node = tree
        for a in key:
            node = node.setdefault(float(a), {})
        node.update({x: float(v) for x, v in zip(xs, values) if not math.isnan(v)})
    return tree


def _interp(node: dict | float, q: tuple[float, ...], axes: tuple[str, ...]) -> tuple[float | None, str]:
    """Interpolate over ``axes`` in log-log between the measured values around ``q``; (None, why) beyond them."""
    if not q:
        return float(node), ""
    xs, x = sorted(node), q[0]
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return _interp(node[x], q[1:], axes[1:])
    if i == 0 or i == len(xs):
        return None, f"{axes[0]}={x:g} beyond the measured {xs[0]:g}-{xs[-1]:g}"
    (lo, why_lo), (hi, why_hi) = _interp(node[xs[i - 1]], q[1:], axes[1:]), _interp(node[xs[i]], q[1:], axes[1:])
    if lo is None or hi is None:
        return None, why_lo if lo is None else why_hi
    w = (math.log(x) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
    how = "; ".join(h for h in (f"{axes[0]}={x:g} between {xs[i - 1]:g} and {xs[i]:g}", why_lo) if h)
    return math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo))), how


@cache
def _held(system: str, name: str, backend: str) -> tuple[str, ...]:
    """The versions of ``backend`` a system's table holds."""
    df = table(system, name)
    return tuple(sorted(set(df["version"][df["backend"] == backend]))) if not df.empty else ()


@cache
def _kernels(system: str, name: str, fixed: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    """The kernels measured for the rows matching ``fixed`` (column, value)."""
    df = table(system, name)
    for col, val in fixed:
        if col not in df.columns:
            raise CatalogError(f"kernel table {name} has no column {col!r}; columns: {', '.join(df.columns)}")
        df = df[df[col] == val]
    return tuple(sorted(set(df["kernel_source"])))


def lookup(gpu: str, name: str, backend: str, shape: dict[str, Any], version: str | None = None, kernel: str | None = None) -> Measured:
    """The measured latency of table ``name``'s operator at ``shape`` (every shape column: the numeric axes of AXES at any
    value, the others exactly) on ``gpu`` through ``backend`` at the version closest to ``version``."""
    system = system_of(gpu)
    if system is None:
        return Measured(None, f"the database holds no system for {gpu}", "")
    if name not in AXES:
        raise CatalogError(f"no kernel table {name!r}; tables: {', '.join(AXES)}")
    held = _held(system, name, backend)
    if not held:
        return Measured(None, f"no {backend} {name} table for {system}", "")
    v, exact = closest_version(list(held), version), {k: val for k, val in shape.items() if k not in AXES[name]}
    what = " ".join([name, *(f"{k}={val}" for k, val in exact.items())])
    source = f"AIConfigurator {package().split()[1]} database, system {system}, backend {backend} {v}, {what}"
    fixed = tuple(sorted({"backend": backend, "version": v, **exact}.items()))
    kernels = _kernels(system, name, fixed)
    named, kernel = kernel, kernel or (kernels[0] if len(kernels) == 1 else DEFAULT_KERNEL.get((backend, name)))
    if kernel not in kernels:
        why = ("not measured for these columns" if not kernels else f"kernel {named} not measured ({', '.join(kernels)} were)" if named
               else f"several kernels measured it ({', '.join(kernels)}): name one")  # fmt: skip
        return Measured(None, why, source)
    tree = _tree(system, name, tuple(sorted((*fixed, ("kernel_source", kernel)))))
    ms, how = _interp(tree, tuple(float(shape[a]) for a in AXES[name]), AXES[name])
    return Measured(ms, how or "measured", f"{source} (kernel {kernel})")


def gemm(gpu: str, backend: str, dtype: str, m: float, n: float, k: float, version: str | None = None) -> Measured:
    """A dense GEMM (m x k) . (k x n) through ``backend``'s linear layer; ``dtype`` its weights' (fp8: per-tensor scales,
    fp8_block: 128x128 blocks, bf16/fp16: 16-bit)."""
    return lookup(gpu, "gemm", backend, {"gemm_dtype": DTYPE[dtype], "n": n, "k": k, "m": m}, version)


def decode_attention(gpu: str, backend: str, batch: float, context: float, heads: int, kv_heads: int, head_dim: int, kv_dtype: str,
                     version: str | None = None) -> Measured:  # fmt: skip
    """One layer's decode attention of ``batch`` sequences over ``context`` cached tokens each (the table's ``step``), per GPU
    heads (query, KV) of ``head_dim``."""
    shape = {"batch_size": batch, "num_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
             "kv_cache_dtype": DTYPE[kv_dtype], "step": context}  # fmt: skip
    return lookup(gpu, "decode_attention", backend, shape, version)


def allreduce(gpu: str, backend: str, gpus: int, elements: float, version: str | None = None) -> Measured:
    """One all-reduce of ``elements`` bf16 values over ``gpus`` GPUs with the engine's custom kernel (under a CUDA graph)."""
    return lookup(gpu, "allreduce", backend, {"num_gpus": gpus, "message_size": elements}, version)


def implied_eff(m: Measured, flops: float, nbytes: float, gpu: Device, precision: str) -> Eff | None:
    """The efficiency a measured latency implies, in the form the serving model reads (estimator.kernels.Eff): achieved
    FLOP/s over the datasheet peak of ``precision`` (BF16's where the GPU has no FP8, as estimator/layer_ops.py reads it) and
    bytes over the datasheet bandwidth. With both, the operator's time max(FLOPs / (compute x peak), bytes / (memory x
    bandwidth)) is the measured latency again. None when nothing was measured, or when the latency is shorter than the
    datasheet allows for the work counted (a fraction above 1: the kernel did not do that work, e.g. A100's TensorRT-LLM 1.0.0
    decode attention at 32 query and 8 KV heads, 1.6 x the HBM bandwidth for the KV bytes of its shape)."""
    fractions = implied_fractions(m, flops, nbytes, gpu, precision)
    if fractions is None or max(fractions) > 1.0:  # faster than the datasheet allows for this work: not this work
        return None
    return Eff(*fractions, f"{m.source}, {m.note}")


def implied_fractions(m: Measured, flops: float, nbytes: float, gpu: Device, precision: str) -> tuple[float, float] | None:
    """(FLOP/s over the datasheet peak of ``precision``, bytes/s over the datasheet bandwidth) at the measured latency, as
    they are: above 1 where the kernel did less work than counted (implied_eff refuses those)."""
    if m.ms is None or m.ms <= 0:
        return None
    s, p = m.ms / 1e3, precision if precision in gpu.peak_tflops else "bf16"
    return flops / s / gpu.peak_flops_per_s(p), nbytes / s / gpu.bandwidth_bytes_per_s


def gemm_eff(
    gpu: Device, backend: str, dtype: str, m: float, n: float, k: float, version: str | None = None
) -> tuple[Measured, Eff | None]:
    """A GEMM's measured latency and the efficiency it implies: 2 m n k FLOPs at the peak of its precision (FP8's for FP8
    and FP4 weights where the GPU has them, BF16's otherwise), bytes = weights (n k at the format's size) + input (m k, FP8
    where the weights are, else 16-bit) + bf16 output (m n), as estimator/layer_ops.py counts a GEMM."""
    got, q = gemm(gpu.name, backend, dtype, m, n, k, version), DTYPE[dtype]
    act = 1.0 if q in ("fp8", "fp8_block") else 2.0
    nbytes = n * k * GEMM_BYTES[q] + m * k * act + m * n * 2
    return got, implied_eff(got, 2 * m * n * k, nbytes, gpu, "fp8" if q in ("fp8", "fp8_block") else "bf16")


def decode_attention_eff(gpu: Device, backend: str, batch: float, context: float, heads: int, kv_heads: int, head_dim: int,
                         kv_dtype: str, version: str | None = None) -> tuple[Measured, Eff | None]:  # fmt: skip
    """Decode attention's measured latency and the efficiency it implies: the KV read (batch x context x 2 x KV heads x
    head_dim at the KV precision) over the bandwidth, 4 x heads x context x head_dim FLOPs per sequence over the BF16 peak,
    as estimator/layer_ops.py counts it."""
    got = decode_attention(gpu.name, backend, batch, context, heads, kv_heads, head_dim, kv_dtype, version)
    kv_bytes = 1.0 if DTYPE[kv_dtype] == "fp8" else 2.0
    return got, implied_eff(got, batch * 4 * heads * context * head_dim, batch * context * 2 * kv_heads * head_dim * kv_bytes, gpu, "bf16")


def bus_fraction(m: Measured, gpus: int, elements: float, gpu: Device, bytes_per_element: float = 2.0) -> float | None:
    """An all-reduce's bus bandwidth (NCCL's convention: 2 (n - 1) / n x bytes / time) over one direction of the GPU's
    datasheet scale-up bandwidth: what kernels.toml's ``allreduce.nvlink_fraction`` stands for. None when not measured."""
    if m.ms is None or not gpu.nvlink_gb_per_s:
        return None
    bus = 2 * (gpus - 1) / gpus * elements * bytes_per_element / (m.ms / 1e3)
    return bus / (gpu.nvlink_gb_per_s / 2 * 1e9)
