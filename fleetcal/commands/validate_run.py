"""``fleetcal validate --run RUN_FILE_OR_DIR``: the model against a measured run instead of the published rows. Every
configuration the run measured end to end, predicted from the operators measured in its session (estimator/run_prediction.py),
per metric: predicted, measured, error; the median |error|; and beside it the measured MFU and MBU against the article's
assumed 50%."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from estimator.run_prediction import RunPrediction, predict_run, summary

SHOW = ["model", "engine", "mode", "size", "input_len", "output_len", "metric", "role", "measured", "predicted", "error_pct", "mfu_pct",
        "mbu_pct"]  # fmt: skip


def run_main(args: argparse.Namespace) -> int:
    """Predict the run(s) under ``args.run`` and print the table per session (or one JSON document)."""
    pred = predict_run(args.run)
    if args.json:
        print(json.dumps(as_json(pred), default=str))
        return 0
    for session, rows in pred.rows.groupby("session", sort=True):
        print(f"== {session}")
        print(f"   {pred.methods[session]}")
        with pd.option_context("display.width", 250, "display.max_rows", None):
            print(_table(rows).to_string(index=False))
        print(summary_line(summary(rows)))
        print()
    for (session, why), g in pred.unpredicted.groupby(["session", "why"], sort=True):
        print(f"not predicted, {session}: {why}")
        for what in g["configuration"]:
            print(f"  - {what}")
    if pred.rows["session"].nunique() > 1:
        print(f"\nall sessions: {summary_line(summary(pred.rows))}")
    return 0


def as_json(pred: RunPrediction) -> dict[str, Any]:
    """Rows (JSON null where a figure is missing), the summary overall and per session, how each session was predicted,
    and what was not predicted with why."""
    rows = pred.rows.astype(object).where(pred.rows.notna(), None)
    return {
        "rows": rows.to_dict(orient="records"),
        "summary": summary(pred.rows),
        "sessions": {s: {"method": pred.methods[s], "summary": summary(g)} for s, g in pred.rows.groupby("session", sort=True)},
        "unpredicted": pred.unpredicted.to_dict(orient="records"),
    }


def _table(rows: pd.DataFrame) -> pd.DataFrame:
    t = rows.assign(
        size=rows["batch_size"].fillna(rows["concurrency"]).map(lambda v: f"{v:g}" if pd.notna(v) else ""),
        input_len=rows["input_len"].astype(int),
        output_len=rows["output_len"].astype(int),
        metric=rows["metric"] + " (" + rows["unit"] + ")",
        measured=rows["measured"].map(_fig),
        predicted=rows["predicted"].map(_fig),
        error_pct=(rows["error"] * 100).map(lambda v: f"{v:+.1f}%"),
        mfu_pct=(rows["mfu"] * 100).map(lambda v: f"{v:.1f}%" if pd.notna(v) else ""),
        mbu_pct=(rows["mbu"] * 100).map(lambda v: f"{v:.1f}%" if pd.notna(v) else ""),
    )
    return t[SHOW]


def _fig(v: float) -> str:
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"


def summary_line(s: dict[str, Any]) -> str:
    """The median |error| (held out, and fitted where any), then the measured MFU and MBU against the article's 50%."""
    parts = []
    if s["held_out"]:
        parts.append(f"median |error| {s['held_out_median_abs_error']:.1%} over {s['held_out']} held-out predictions "
                     f"(signed {s['held_out_median_signed_error']:+.1%})")  # fmt: skip
    if s["fitted"]:
        parts.append(f"{s['fitted_median_abs_error']:.1%} over {s['fitted']} fitted")
    util = (f"measured MFU median {s['mfu_median']:.1%}, best {s['mfu_max']:.1%}; best MBU {s['mbu_max']:.1%}; the article assumed "
            f"{s['article_utilization']:.0%}" if s["mfu_max"] is not None else "no measured MFU")  # fmt: skip
    return "; ".join(parts) + f" | {util}. error = (predicted - measured) / measured"
