"""What each operator family of the measured database (core/data/kernels, estimator/engine_kernels.py) does to the validation
rows, now that the serving model reads it (estimator/kernels.py decides each operator's source):

  PYTHONPATH=. python scripts/kernel_db_impact.py            # medians by variant, over the gated and the peer-shared rows
  PYTHONPATH=. python scripts/kernel_db_impact.py --groups   # and by row group
  PYTHONPATH=. python scripts/kernel_db_impact.py --rows     # and every row

Every row of core/data/validation.toml is predicted as `fleetcal validate` predicts it (the committed operator runs
swapped in as there; the engine, version and CUDA graphs of its source), with the database's families switched off, one
at a time on, and all on (what `fleetcal validate` runs); then with all on and the sources' own CUDA-graph settings set
aside (the engine's defaults), so the padding's share shows. Families: GEMM (the linear maps; not the router, nor the LM
head, whose cost includes sampling), decode attention (GQA: the engine's best measured share of the bandwidth at the
model's heads ratio), prefill attention (GQA), routed experts (TensorRT-LLM's fused MoE, SGLang's DeepEP, at balanced
routing; the busiest GPU's share the model's own Poisson imbalance), the tensor-parallel all-reduce (NVLink GPUs). Where
the database holds no such GPU (H800), no such shape, a shape beyond the measured ones, or a table that implies more than
the datasheet, the model's own figure stays.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import contextmanager
from dataclasses import replace

import pandas as pd

from core.paths import RESULTS_DIR
from estimator import validation as v
from estimator.engine_kernels import FAMILIES
from estimator.operators import load_ops
from estimator.validation import load_rows, summary, validate
from fleetcal.peers.side_by_side import by_group, group_of, load_peer, shared_summary, side_by_side

ORIGINAL = v.kernels_for


@contextmanager
def families(on: frozenset[str]):
    """``fleetcal validate``'s kernels with only the database families ``on`` read, while inside."""

    def kernels_for(*args, **kwargs):
        k, source = ORIGINAL(*args, **kwargs)
        return (replace(k, database=replace(k.database, families=on)) if k.database else k), source

    v.kernels_for = kernels_for
    try:
        yield
    finally:
        v.kernels_for = ORIGINAL


def predict(rows: list, ops: pd.DataFrame | None, on: set[str], graphs: bool = True) -> pd.DataFrame:
    """Every row predicted with the families ``on`` read from the database; ``graphs`` False: the engine's own CUDA graphs,
    not those its source set."""
    rows = rows if graphs else [replace(r, cuda_graph_sizes=()) for r in rows]
    with families(frozenset(on)):
        return validate(rows, ops)


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
    return out.assign(rows=frames["no database"].apply(group_of, axis=1).value_counts())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", action="store_true", help="also the medians by row group (without the database and with every family)")
    p.add_argument("--rows", action="store_true", help="also every row's error, without the database and with every family")
    a = p.parse_args(argv)
    rows, ops, peer = load_rows()[0], load_ops(RESULTS_DIR, warn=False), load_peer()
    heavy = {r.id for r in rows if r.output_len >= 4 * max(r.input_len, 1)}  # requests dominated by decode
    variants = {"no database": (set(), True), **{f: ({f}, True) for f in FAMILIES}, "all (fleetcal validate)": (set(FAMILIES), True),
                "all, the engines' own CUDA graphs": (set(FAMILIES), False)}  # fmt: skip
    frames, table = {}, []
    for name, (on, graphs) in variants.items():
        frames[name] = predict(rows, ops, on, graphs)
        table.append({"variant": name, **medians(frames[name], peer, heavy)})
    print(pd.DataFrame(table).to_markdown(index=False))
    if a.groups and peer is not None:
        for name in ("no database", "all (fleetcal validate)"):
            print(f"\nBy row group, {name} (shared rows; the peer's columns are its committed run):\n")
            print(by_group(side_by_side(frames[name], peer)).to_markdown(index=False))
    if a.groups:
        print("\nMedian signed error % by row group (every row of the group, gated or not) and variant:\n")
        print(group_matrix(frames).to_markdown())
    if a.rows:
        both = frames["no database"][["id", "published", "error_pct", "gate"]]
        both = both.rename(columns={"error_pct": "without_error_pct"}).assign(with_error_pct=frames["all (fleetcal validate)"]["error_pct"])
        print("\n" + both.to_markdown(index=False))
    none, every = frames["no database"], frames["all (fleetcal validate)"]
    print(f"\nmedian |error| over the gated rows: {statistics.median(none[none['gate']]['error_pct'].abs()):.1f} % without the database,"
          f" {statistics.median(every[every['gate']]['error_pct'].abs()):.1f} % with it")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
