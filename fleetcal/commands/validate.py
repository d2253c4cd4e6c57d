"""``fleetcal validate``: the serving model against published end-to-end throughput (core/data/validation.toml),
the error per row, the median and the worst."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from core.args import add_results_args
from core.errors import UsageError
from estimator.operators import load_ops
from estimator.validation import VALIDATION_FILE, load_rows, summary, validate

COLUMNS = ["id", "model", "gpu", "precision", "layout", "kind", "lengths", "counts", "published", "predicted", "error_pct"]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", type=Path, default=VALIDATION_FILE, help="validation table (default: the committed core/data/validation.toml)")
    add_results_args(p, "results directory whose measured GPU kernels the model uses")


def main(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"no validation table at {args.file}; pass --file with a TOML file of [[row]] tables")
    rows, sources = load_rows(args.file)
    df = validate(rows, load_ops(args.results, warn=False))
    s = summary(df)
    if args.json:
        print(json.dumps({"rows": df.to_dict(orient="records"), "summary": s, "sources": sources}, default=str))
        return 0
    with pd.option_context("display.width", 250, "display.max_rows", None, "display.max_colwidth", 60):
        print(df[COLUMNS + ["gate"]].to_string(index=False))
    print(
        f"\n{s['rows']} gated rows: median absolute error {s['median_abs_error_pct']:.1f}% (signed median "
        f"{s['median_signed_error_pct']:+.1f}%), "
        f"worst {s['worst_abs_error_pct']:.1f}% ({s['worst_row']}); error = (predicted - published) / published"
    )
    return 0
