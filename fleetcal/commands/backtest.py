"""``fleetcal backtest``: published deployments against each method's prediction."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.paths import RESULTS_DIR
from estimator.backtest import backtest
from estimator.operators import load_ops
from estimator.runs import load_runs
from estimator.utilization import measured_utilization


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS_DIR,
        help="results directory (its runs/ is read; a runs directory or one run file also works)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def main(args: argparse.Namespace) -> int:
    runs = load_runs(args.results)
    df = backtest(measured_utilization(runs), load_ops(args.results, warn=False))
    if args.json:
        print(json.dumps({"rows": df.to_dict(orient="records")}, default=str))
    else:
        print(df.to_string(index=False))
    return 0
