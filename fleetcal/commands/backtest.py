"""``fleetcal backtest``: published deployments against each method's prediction."""

from __future__ import annotations

import argparse
import json

from core.args import add_results_args
from core.errors import UsageError
from estimator.backtest import backtest
from estimator.operators import load_ops
from estimator.runs import load_runs
from estimator.utilization import measured_utilization
from fleetcal.commands.traffic_args import add_traffic_args, traffic_from_args


def add_cli_args(p: argparse.ArgumentParser) -> None:
    add_results_args(p)
    add_traffic_args(p)


def main(args: argparse.Namespace) -> int:
    traffic = traffic_from_args(args)
    if traffic is not None and traffic.trace is not None:
        raise UsageError(f"--traffic {args.traffic}: a deployment's traffic is its published lengths; give poisson or gamma")
    runs = load_runs(args.results)
    df = backtest(measured_utilization(runs), load_ops(args.results, warn=False), traffic)
    if args.json:
        print(json.dumps({"rows": df.to_dict(orient="records")}, default=str))
    else:
        print(df.to_string(index=False))
    return 0
