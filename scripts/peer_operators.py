"""Per-operator latencies from AIConfigurator's measured database, and the efficiency each implies.

NVIDIA's AIConfigurator (https://github.com/ai-dynamo/aiconfigurator, Apache-2.0) ships tables of per-operator latencies
timed on real GPUs by its collectors (collector/<backend>/collect_*.py: GEMMs through the engine's own Linear module with
weights cycled past L2, decode attention through the engine's attention op under CUDA graphs, all-reduce through the
engine's custom kernels), by system, engine and engine version. This script asks that database for given shapes and
prints the latency the peer uses there (its own query: the collected table, interpolated between collected shapes where
the shape was not collected itself, which the `collected` column says) and the efficiency it implies against fleetcal's
datasheet figures (core/data/gpus): achieved FLOP/s over the dense peak of the precision, bytes moved over the memory
bandwidth, or an all-reduce's bus bandwidth (2 (n - 1) / n x bytes / time, NCCL's convention).

A figure from here may enter core/data/kernels.toml as a kernel-level source, cited as "AIConfigurator <version> database,
system <s>, backend <b> <version>, operator <op>" (never an end-to-end figure). Run it with the peer's Python:

  .venv-peers/bin/python scripts/peer_operators.py gemm 97,57344,8192 --gpu H200 --dtype fp8
  .venv-peers/bin/python scripts/peer_operators.py attention 97,2176,64,8,128 --gpu H200 --kv-dtype fp8
  .venv-peers/bin/python scripts/peer_operators.py allreduce 2,966656 --gpu H100
  .venv-peers/bin/python scripts/peer_operators.py step llama-3.1-70b --gpu H200 --batch 97 --context 2176 --dtype fp8 --kv-dtype fp8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # core.hardware, core.shapes and fleetcal.peers.aic_runner use the standard library only

from core.hardware import get_gpu  # noqa: E402
from core.shapes import shapes_from_config  # noqa: E402
from fleetcal.peers.aic_runner import SYSTEMS  # noqa: E402  (the standalone runner: standard library only)

GEMM_QUANT = {"fp8": "fp8", "fp8_block": "fp8_block", "bf16": "bfloat16", "fp16": "bfloat16", "bfloat16": "bfloat16"}
BYTES = {"fp8": 1, "fp8_block": 1, "bfloat16": 2}
PEAK_DTYPE = {"fp8": "fp8", "fp8_block": "fp8", "bfloat16": "bf16"}


def database(system: str, backend: str, version: str):
    """The peer's database view (silicon data) and the version "current" resolves to."""
    from aiconfigurator.sdk.perf_database import get_database_view

    db = get_database_view(system, backend, version, allow_unlisted_version=version not in ("current", "previous", "next"))
    if db is None:
        raise SystemExit(f"peer_operators: no {backend} database for {system} at {version}")
    return db


def raw_rows(db, family: str, filename: str):
    """The collected rows of one table (pandas): the version's own file, else the newest older version holding it (the
    peer's backward fill)."""
    import pandas as pd
    from packaging.version import Version

    base = Path(db.systems_root) / "data" / db.system / family / db.backend
    held = [d for d in base.iterdir() if (d / filename).is_file()] if base.is_dir() else []
    dirs = sorted(held, key=lambda d: Version(d.name), reverse=True)
    older = [d for d in dirs if Version(d.name) <= Version(db.version)] or dirs
    return pd.read_parquet(older[0] / filename) if older else pd.DataFrame()


def gemm(db, gpu, m: int, n: int, k: int, dtype: str) -> dict:
    """One GEMM (m x k) . (k x n): the peer's latency and the FLOP/s and bytes it implies (weights, input, bf16 output)."""
    from aiconfigurator_core.sdk import common
    from aiconfigurator_core.sdk import operations as ops

    q = GEMM_QUANT[dtype]
    ms = float(ops.GEMM("gemm", 1, n, k, getattr(common.GEMMQuantMode, q))._engine_query(db, x=m))
    t = raw_rows(db, "gemm", "gemm_perf.parquet")
    hit = not t.empty and len(t[(t.gemm_dtype == q) & (t.m == m) & (t.n == n) & (t.k == k)]) > 0
    flops, bytes_ = 2.0 * m * n * k, n * k * BYTES[q] + m * k * BYTES[q] + m * n * 2
    return _eff(f"gemm {q}", f"M={m} N={n} K={k}", ms, hit, gpu, flops, bytes_, PEAK_DTYPE[q])


def attention(db, gpu, batch: int, context: int, heads: int, kv_heads: int, head_dim: int, kv_dtype: str) -> dict:
    """One layer's decode attention over ``context`` cached tokens for ``batch`` sequences: KV read, 4 x heads x context x
    head_dim FLOPs a token (core.shapes.Shapes.decode_attention_flops)."""
    from aiconfigurator_core.sdk import common
    from aiconfigurator_core.sdk import operations as ops

    kv = "fp8" if kv_dtype == "fp8" else "bfloat16"
    op = ops.GenerationAttention("attention", 1, heads, kv_heads, getattr(common.KVCacheQuantMode, kv), head_size=head_dim)
    ms = float(op._engine_query(db, batch_size=batch, s=context))
    t = raw_rows(db, "attention", "generation_attention_perf.parquet")
    hit = not t.empty and len(t[(t.batch_size == batch) & (t.step == context) & (t.num_heads == heads) & (t.num_key_value_heads == kv_heads)
                                & (t.head_dim == head_dim) & (t.kv_cache_dtype == kv) & (t.window_size == 0)]) > 0  # fmt: skip
    bytes_ = batch * context * 2 * kv_heads * head_dim * BYTES[kv]
    flops = batch * 4 * heads * context * head_dim
    shape = f"batch={batch} context={context} heads={heads}/{kv_heads} d={head_dim} KV {kv}"
    return _eff("decode attention", shape, ms, hit, gpu, flops, bytes_, "bf16")


def allreduce(db, gpu, gpus: int, elements: int) -> dict:
    """One all-reduce of ``elements`` bf16 values over ``gpus`` GPUs: latency and bus bandwidth (NCCL's busbw)."""
    from aiconfigurator_core.sdk import operations as ops

    ms = float(ops.CustomAllReduce("allreduce", 1, elements, gpus)._engine_query(db, x=1))
    t = raw_rows(db, "comm", "custom_allreduce_perf.parquet")
    hit = not t.empty and len(t[(t.num_gpus == gpus) & (t.message_size == elements)]) > 0
    bus = 2 * (gpus - 1) / gpus * elements * 2 / (ms * 1e-3)
    return {"operator": "all-reduce bf16", "shape": f"{gpus} GPUs x {elements} elements", "ms": ms, "collected": _c(hit),
            "bus_gb_per_s": bus / 1e9, "nvlink_gb_per_s": gpu.nvlink_gb_per_s}  # fmt: skip


def _c(hit: bool) -> str:
    return "measured" if hit else "interpolated"


def _eff(name: str, shape: str, ms: float, hit: bool, gpu, flops: float, bytes_: float, peak: str) -> dict:
    s = ms * 1e-3
    return {"operator": name, "shape": shape, "ms": ms, "collected": _c(hit), "tflops": flops / s / 1e12,
            "of_peak": flops / s / gpu.peak_flops_per_s(peak), "gb_per_s": bytes_ / s / 1e9,
            "of_bandwidth": bytes_ / s / gpu.bandwidth_bytes_per_s}  # fmt: skip


def step(db, gpu, model: str, batch: int, context: int, tp: int, dtype: str, kv_dtype: str, tokens: int | None) -> list[dict]:
    """One layer of a dense GQA model's step on one GPU of a TP group: the four linear maps at M = ``tokens`` (a prefill
    chunk) or ``batch`` (decode), decode attention, the two all-reduces; then the LM head (bf16, as the peer runs it)."""
    sh = shapes_from_config(ROOT / "core" / "data" / "models" / model, model)
    if sh.mla or sh.num_experts:
        raise SystemExit("peer_operators: step covers dense GQA models; use gemm/attention/allreduce for MLA and MoE shapes")
    m = tokens or batch
    col, row = ("qkv_proj", "gate_up", "lm_head"), ("o_proj", "down")
    out = []
    for name, (k, n) in sh.linears.items():
        k, n = (k, n // tp) if name in col else (k // tp, n) if name in row else (k, n)
        r = gemm(db, gpu, m, n, k, "bfloat16" if name == "lm_head" else dtype)
        out.append({**r, "operator": f"{name} ({r['operator']})", "layers": 1 if name == "lm_head" else sh.num_layers})
    if not tokens:
        r = attention(db, gpu, batch, context, sh.heads // tp, max(1, sh.kv_heads // tp), sh.head_dim, kv_dtype)
        out.append({**r, "layers": sh.num_layers})
    if tp > 1:
        out.append({**allreduce(db, gpu, tp, m * sh.hidden), "layers": 2 * sh.num_layers})
    for r in out:
        r["step_ms"] = r["ms"] * r["layers"]
    return out


def _print(rows: list[dict], header: str) -> None:
    print(header)
    for r in rows:
        if "tflops" in r:
            eff = f"{r['tflops']:8.1f} TFLOP/s ({r['of_peak']:.0%} of peak)  {r['gb_per_s']:7.0f} GB/s ({r['of_bandwidth']:.0%} of HBM)"
        else:
            eff = f"bus {r['bus_gb_per_s']:.0f} GB/s (datasheet NVLink {r['nvlink_gb_per_s']} GB/s both ways)"
        total = f"  x{r['layers']} = {r['step_ms']:.3f} ms" if "layers" in r else ""
        print(f"  {r['operator']:<34} {r['shape']:<44} {r['ms']:.4f} ms ({r['collected']}){total}  {eff}")
    if rows and "step_ms" in rows[0]:
        print(f"  sum of the operators above: {sum(r['step_ms'] for r in rows):.3f} ms a step")


def _ints(text: str, n: int) -> list[int]:
    parts = [int(x) for x in text.split(",")]
    if len(parts) != n:
        raise SystemExit(f"peer_operators: expected {n} comma-separated integers, got {text!r}")
    return parts


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gpu", required=True, choices=sorted(SYSTEMS), help="fleetcal's GPU name (its datasheet gives the peaks)")
    common.add_argument("--backend", default="trtllm", choices=("trtllm", "vllm", "sglang"))
    common.add_argument("--version", default="current", help="the peer's database version (default: its maintained one)")
    common.add_argument("--dtype", default="fp8", choices=sorted(GEMM_QUANT), help="GEMM precision")
    common.add_argument("--kv-dtype", default="fp8", choices=("fp8", "bf16"))
    common.add_argument("--json", action="store_true")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("gemm", parents=[common]).add_argument("shape", help="M,N,K")
    sub.add_parser("attention", parents=[common]).add_argument("shape", help="BATCH,CONTEXT,HEADS,KV_HEADS,HEAD_DIM")
    sub.add_parser("allreduce", parents=[common]).add_argument("shape", help="GPUS,ELEMENTS (bf16)")
    s = sub.add_parser("step", parents=[common], help="one layer's operators of a catalogued dense model (core/data/models/<model>)")
    s.add_argument("model")
    s.add_argument("--batch", type=int, required=True)
    s.add_argument("--context", type=int, default=0, help="decode: cached tokens a sequence attends")
    s.add_argument("--tokens", type=int, default=None, help="prefill: tokens in the step (the GEMMs' M); no decode attention")
    s.add_argument("--tp", type=int, default=1)
    a = p.parse_args(argv)
    os.environ.setdefault("AIC_ALLOW_UNLISTED_VERSIONS", "1")
    logging.disable(logging.WARNING)
    gpu, db = get_gpu(a.gpu), database(SYSTEMS[a.gpu], a.backend, a.version)
    if a.what == "gemm":
        rows = [gemm(db, gpu, *_ints(a.shape, 3), GEMM_QUANT[a.dtype])]
    elif a.what == "attention":
        rows = [attention(db, gpu, *_ints(a.shape, 5), a.kv_dtype)]
    elif a.what == "allreduce":
        rows = [allreduce(db, gpu, *_ints(a.shape, 2))]
    else:
        rows = step(db, gpu, a.model, a.batch, a.context, a.tp, GEMM_QUANT[a.dtype], a.kv_dtype, a.tokens)
    from importlib import metadata

    header = f"AIConfigurator {metadata.version('aiconfigurator')} database, system {db.system}, backend {db.backend} {db.version}"
    if a.json:
        print(json.dumps({"source": header, "operators": rows}))
    else:
        _print(rows, header + f" (efficiencies against fleetcal's {gpu.full_name} datasheet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
