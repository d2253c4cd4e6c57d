"""What the measured operator database (core/data/kernels, estimator/kernel_db.py) would do to the validation rows, measured
before it is wired into the serving model:

  PYTHONPATH=. python scripts/kernel_db_impact.py            # medians by variant, over the gated and the peer-shared rows
  PYTHONPATH=. python scripts/kernel_db_impact.py --groups   # and by row group
  PYTHONPATH=. python scripts/kernel_db_impact.py --rows     # and every row

Every row of core/data/validation.toml is predicted as `fleetcal validate` predicts it (the committed operator runs
swapped in as there), then again with operators of the row's GPU and engine taken from the database: the engine its
source ran (SOURCE_ENGINES) at the database version closest to it. Nothing in the serving model is edited; this script
wraps, at run time only, the points where the model builds an operator's cost (estimator.layer_ops: Batch.gemm,
attention_costs, moe_costs, communication) and replaces that cost's efficiency by the one the measured latency at the
same shape implies (kernel_db.implied_eff: the operator then takes exactly the measured time), or the all-reduce time by
the measured one. Where the database has no such GPU (H800), no such shape, or the shape lies beyond what was measured,
the model's own figure stays, and the count of such fallbacks is printed. Variants switch one operator family at a time,
then all of them, so each family's share of the movement shows.

Families: GEMM (every linear map the model routes through Batch.gemm: attention projections, dense FFN, shared experts;
not the LM head, whose cost includes sampling, nor the router); decode and prefill attention (GQA only; MLA keeps its
published figures); routed experts (TensorRT-LLM's fused-MoE table at balanced routing, SGLang's DeepEP table at uniform
routing, the busiest GPU's extra share the model's own Poisson imbalance); the tensor-parallel all-reduce.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace

import pandas as pd

from core.paths import RESULTS_DIR
from estimator import kernel_db as kdb
from estimator import layer_ops as lo
from estimator.operators import load_ops
from estimator.validation import load_rows, summary, validate
from fleetcal.peers.side_by_side import by_group, group_of, load_peer, shared_summary, side_by_side

# The engine each validation source ran, and the version asked of the database (the closest held is read)
SOURCE_ENGINES = {
    "trtllm-v061": ("trtllm", "0.6.1"),  # its title: 'data updated for v0.6.1'
    "trtllm-perf-overview-v017": ("trtllm", "0.17.0"),  # 'All data in the table below was generated using version 0.17'
    "trtllm-perf-overview": ("trtllm", "1.0.0"),  # the v1.0-era page (validation.toml)
    "trtllm-perf-overview-per-gpu": ("trtllm", "1.1.0"),  # not stated; the PyTorch backend of late 2025, before 1.2
    "trtllm-deepseek-r1-best-perf": ("trtllm", "0.20.0"),  # not stated; the PyTorch backend of mid-2025
    "sglang-large-scale-ep": ("sglang", "0.4.6"),  # the blog of 2025-05-05, before SGLang 0.5
}
FAMILIES = ("gemm", "decode attention", "prefill attention", "moe", "all-reduce")
# L40S (PCIe, no NVLink): the database's all-reduce there, the engine's custom kernel and NCCL alike, moves 11.6 MB over 4 GPUs
# in 3.4-3.5 ms (5 GB/s of bus bandwidth) and over 8 in 15.9 ms (1.3 GB/s), a sixth of 70% of one direction of PCIe 4.0 x16
# at 4 GPUs: a host without peer-to-peer PCIe, not the one NVIDIA's L40S figures ran on (with it, those rows go to -59%, as
# the peer's do). Left out of the all-reduce family unless "all-reduce kept" is asked.
ALLREDUCE_SUSPECT = ("L40S",)
ORIGINAL = {"gemm": lo.Batch.gemm, "attention_costs": lo.attention_costs, "moe_costs": lo.moe_costs, "communication": lo.communication}
STATE: dict = {"engine": None, "families": set(), "newest": False, "log": Counter()}


def _engine_version() -> tuple[str, str | None]:
    backend, version = STATE["engine"]
    return backend, None if STATE["newest"] else version


def _eff(family: str, got: kdb.Measured, flops: float, nbytes: float, gpu, precision: str):
    """The efficiency a lookup implies, or None (the model's own figure stays); counted by family and outcome."""
    eff = kdb.implied_eff(got, flops, nbytes, gpu, precision)
    outcome = ("measured" if eff else "implies more than the datasheet") if got.ms is not None else got.note.split(" (")[0].split("=")[0]
    STATE["log"][family, outcome] += 1
    return eff


def _edge(x: lo.Batch, heads: int, kvh: int, seqs: float, backend: str, version: str | None) -> tuple[kdb.Measured, float]:
    """Decode attention beyond the measured batch x context (the collector stops where the KV outgrows the GPU): the
    nearest measured point with fewer sequences, then fewer cached tokens, halving; (measurement, share of the work)."""
    for i in range(1, 16):
        for b, c in ((seqs / 2**i, x.context), (seqs, x.context / 2**i)):
            got = kdb.decode_attention(x.gpu.name, backend, b, c, heads, kvh, x.s.head_dim, x.kv_dtype, version)
            if got.ms is not None:
                return got, b * c / (seqs * x.context)
    return got, 1.0


def gemm(self, name, kk, nn, layers, mm=None, component="attention", split=None):
    """Batch.gemm with the efficiency the database's GEMM at (M, N, K) of the component's weight format implies (a format
    the database holds no GEMM table of, MXFP4, keeps the model's figure)."""
    c = ORIGINAL["gemm"](self, name, kk, nn, layers, mm, component, split)
    if "gemm" not in STATE["families"]:
        return c
    m, n = self.m if mm is None else mm, nn / (self.layout.tp if split is None else split)
    fmt = self.fmt(component)[0]
    if fmt not in kdb.DTYPE:
        STATE["log"]["gemm", f"no {fmt} table"] += 1
        return c
    dtype = "fp8_block" if fmt == "fp8" and self.a.fp8_block_scaled else fmt
    backend, version = _engine_version()
    eff = _eff("gemm", kdb.gemm(self.gpu.name, backend, dtype, m, n, kk, version), c.flops, c.nbytes, self.gpu, c.precision)
    return replace(c, eff=eff) if eff else c


def attention_costs(x: lo.Batch) -> list[lo.OpCost]:
    """attention_costs with GQA attention at the database's latency for the TP group's sequences and this GPU's heads."""
    costs = ORIGINAL["attention_costs"](x)
    family = f"{x.phase} attention"
    edge = x.phase == "decode" and "decode attention edge" in STATE["families"]
    if (family not in STATE["families"] and not edge) or x.s.mla:
        return costs
    s, tp, (backend, version) = x.s, x.layout.tp, _engine_version()
    heads, kvh, seqs, share = s.heads // tp, max(s.kv_heads // tp, 1), x.seqs * tp, 1.0
    if x.phase == "decode":
        got = kdb.decode_attention(x.gpu.name, backend, seqs, x.context, heads, kvh, s.head_dim, x.kv_dtype, version)
        if got.ms is None and edge:
            got, share = _edge(x, heads, kvh, seqs, backend, version)
    elif x.uncached_share == 1.0:  # whole prompts of 2 x the mean context each (estimator/serving.py)
        got = kdb.prefill_attention(x.gpu.name, backend, seqs, 2 * x.context, heads, kvh, s.head_dim, x.kv_dtype, version=version)
    else:
        return costs
    i = max(j for j, c in enumerate(costs) if c.name == "attention")
    eff = _eff(family, got, costs[i].flops * share, costs[i].nbytes * share, x.gpu, costs[i].precision)
    return costs if eff is None else [*costs[:i], replace(costs[i], eff=eff), *costs[i + 1 :]]


def moe_costs(x: lo.Batch) -> list[lo.OpCost]:
    """moe_costs with the routed experts at the database's latency of the whole EP group's tokens at balanced routing; the
    model's Poisson imbalance (routed_pairs over the balanced pairs) then scales it for the busiest GPU."""
    costs = ORIGINAL["moe_costs"](x)
    if "moe" not in STATE["families"] or not costs:
        return costs
    s, lay, (backend, version) = x.s, x.layout, _engine_version()
    group = x.tokens * lay.ep if lay.ep > 1 else x.m  # tokens entering the expert-parallel group's MoE layer
    fmt = x.fmt("routed_experts")[0]
    if fmt not in kdb.DTYPE:
        STATE["log"]["moe", f"no {fmt} table"] += 1
        return costs
    dtype = "fp8_block" if fmt == "fp8" and x.a.fp8_block_scaled else kdb.DTYPE[fmt]
    shape = {"moe_dtype": dtype, "hidden_size": s.hidden, "inter_size": s.expert_k_n[1][0], "topk": s.experts_per_token,
             "num_experts": s.num_experts, "moe_tp_size": 1 if lay.ep > 1 else lay.tp, "moe_ep_size": lay.ep}  # fmt: skip
    if backend == "sglang":
        name, shape = f"wideep_moe_{x.phase}", {**shape, "distribution": "uniform"}
    else:
        name = "moe"
    got = kdb.lookup(x.gpu.name, name, backend, {**shape, "num_tokens": group}, version)
    i = next(j for j, c in enumerate(costs) if c.name == "routed experts")
    imb = lo.routed_pairs(x) / (x.tokens * s.experts_per_token * lay.num_gpus / lay.ep if lay.ep > 1 else x.m * s.experts_per_token)
    c = costs[i]
    eff = _eff("moe", got, c.flops / imb, c.nbytes / imb, x.gpu, c.precision)
    return costs if eff is None else [*costs[:i], replace(c, eff=eff), *costs[i + 1 :]]


def communication(x: lo.Batch) -> lo.Comm:
    """communication with the TP all-reduces at the database's latency: two per layer of M x hidden bf16 values."""
    comm = ORIGINAL["communication"](x)
    if "all-reduce" not in STATE["families"] or x.layout.tp < 2:
        return comm
    backend, version = _engine_version()
    got = kdb.allreduce(x.gpu.name, backend, x.layout.tp, x.m * x.s.hidden, version)
    STATE["log"]["all-reduce", "measured" if got.ms is not None else got.note.split("=")[0]] += 1
    if got.ms is not None and not (x.gpu.name in ALLREDUCE_SUSPECT and "all-reduce kept" not in STATE["families"]):
        comm.allreduce = 2 * x.s.num_layers * got.ms / 1e3
    return comm


@contextmanager
def database(families: set[str]):
    """The serving model with ``families`` taken from the database while inside."""
    STATE["families"] = families
    lo.Batch.gemm, lo.attention_costs, lo.moe_costs, lo.communication = gemm, attention_costs, moe_costs, communication
    try:
        yield
    finally:
        lo.Batch.gemm, lo.attention_costs = ORIGINAL["gemm"], ORIGINAL["attention_costs"]
        lo.moe_costs, lo.communication = ORIGINAL["moe_costs"], ORIGINAL["communication"]


def predict(rows: list, ops: pd.DataFrame, families: set[str]) -> pd.DataFrame:
    """Every row predicted with ``families`` from the database at its source's engine."""
    out = []
    with database(families):
        for r in rows:
            STATE["engine"] = SOURCE_ENGINES.get(r.source, ("trtllm", None))
            out.append(validate([r], ops))
    return pd.concat(out, ignore_index=True)


def medians(df: pd.DataFrame, peer: dict | None, heavy: set[str]) -> dict:
    """Median |error| and signed error over the gated rows, over the gated decode-heavy rows (``heavy``), and over the rows
    the peer shares (with the peer's)."""
    g, h = summary(df), df[df["gate"] & df["id"].isin(heavy)]["error_pct"]
    out = {"gated rows": g["rows"], "gated median |err| %": g["median_abs_error_pct"],
           "gated median signed %": g["median_signed_error_pct"], "decode-heavy rows": len(h),
           "decode-heavy median signed %": round(statistics.median(h), 1) if len(h) else float("nan")}  # fmt: skip
    if peer is not None:
        s = shared_summary(side_by_side(df, peer))
        out |= {"shared rows": s["rows"], "shared median |err| %": s["fleetcal_median_abs_error_pct"],
                "shared median signed %": s["fleetcal_median_signed_error_pct"], "closer than the peer": s["fleetcal_closer"],
                "peer median |err| %": s["peer_median_abs_error_pct"]}  # fmt: skip
    return out


def group_matrix(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows: row groups (source, kind, GPU, precision); columns: variants; cells: the median signed error in percent."""
    cols = {}
    for name, df in frames.items():
        groups = df.apply(group_of, axis=1)
        cols[name] = df.groupby(groups, sort=False)["error_pct"].median().round(1)
    out = pd.DataFrame(cols)
    return out.assign(rows=frames["today"].apply(group_of, axis=1).value_counts())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", action="store_true", help="also the medians by row group (today and with every family)")
    p.add_argument("--rows", action="store_true", help="also every row's error, today and with every family")
    p.add_argument("--newest", action="store_true", help="read the newest database version, not the one closest to the source's engine")
    a = p.parse_args(argv)
    STATE["newest"] = a.newest
    rows, ops, peer = load_rows()[0], load_ops(RESULTS_DIR, warn=False), load_peer()
    heavy = {r.id for r in rows if r.output_len >= 4 * max(r.input_len, 1)}  # requests dominated by decode
    variants = {"today": set(), **{f: {f} for f in FAMILIES}, "decode attention edge": {"decode attention edge"},
                "all": set(FAMILIES), "all, decode attention edge": {*FAMILIES, "decode attention edge"},
                "all, L40S all-reduce kept": {*FAMILIES, "all-reduce kept"}}  # fmt: skip
    frames, table = {}, []
    for name, fams in variants.items():
        STATE["log"] = Counter()
        frames[name] = predict(rows, ops, fams)
        table.append({"variant": name, **medians(frames[name], peer, heavy)})
        if name == "all":
            log = STATE["log"]
    print(pd.DataFrame(table).to_markdown(index=False))
    print("\nDatabase lookups with every family (family, outcome: count):")
    for (fam, what), n in sorted(log.items()):
        print(f"  {fam}: {what}: {n}")
    if a.groups and peer is not None:
        for name in ("today", "all"):
            print(f"\nBy row group, {name} (shared rows; the peer's columns are its committed run):\n")
            print(by_group(side_by_side(frames[name], peer)).to_markdown(index=False))
    if a.groups:
        print("\nMedian signed error % by row group (every row of the group, gated or not) and variant:\n")
        print(group_matrix(frames).to_markdown())
    if a.rows:
        both = frames["today"][["id", "published", "error_pct", "gate"]].assign(all_error_pct=frames["all"]["error_pct"])
        print("\n" + both.to_markdown(index=False))
    print(f"\nmedian |error| over the gated rows moves {statistics.median(frames['today'][frames['today']['gate']]['error_pct'].abs()):.1f}"
          f" -> {statistics.median(frames['all'][frames['all']['gate']]['error_pct'].abs()):.1f} %")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
