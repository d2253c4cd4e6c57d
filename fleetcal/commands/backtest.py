"""``fleetcal backtest``: published deployments against each method's prediction."""

from __future__ import annotations

import argparse
import json

from core.args import add_results_args
from estimator.backtest import backtest
from estimator.operators import load_ops
from estimator.runs import load_runs
from estimator.utilization import measured_utilization


def add_cli_args(p: argparse.ArgumentParser) -> None:
    add_results_args(p)


def main(args: argparse.Namespace) -> int:
    runs = load_runs(args.results)
    df = backtest(measured_utilization(runs), load_ops(args.results, warn=False))
    if args.json:
        print(json.dumps({"rows": df.to_dict(orient="records")}, default=str))
    else:
        print(df.to_string(index=False))
    return 0
