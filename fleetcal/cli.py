"""The ``fleetcal`` console script: bench, estimate, predict, plan, backtest, validate, report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.args import Parser
from core.errors import UsageError

SUBCOMMANDS = {
    "bench": ("fleetcal.commands.bench", "measure a model with vLLM (or transformers) on this machine's device"),
    "estimate": ("fleetcal.commands.estimate", "fleet sizes per scenario, from the article's formula to the per-operator serving model"),
    "predict": (
        "fleetcal.commands.predict",
        "tokens/s for a model x device x batch x lengths from the serving model (GPU) or the CPU step model",
    ),
    "plan": (
        "fleetcal.commands.plan",
        "the fewest GPUs of each kind for a request rate within TTFT and TPOT limits, with intervals and cost",
    ),
    "backtest": ("fleetcal.commands.backtest", "published deployments against each method's prediction"),
    "validate": ("fleetcal.commands.validate", "the serving model against published end-to-end throughput, row by row"),
    "models": ("fleetcal.commands.models", "the architectures, attention kinds, MoE layers and weight formats read, which modelled"),
    "report": ("fleetcal.commands.report", "regenerate tables, plots and the generated sections of the README and docs/ from results/runs"),
}


def _module(name: str):
    import importlib

    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fleetcal", description="How many GPUs does serving this traffic take? Measured, not assumed.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _module(name).add_cli_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_module(args.command).main(args) or 0)
    except UsageError as exc:  # CatalogError and SchemaError are UsageErrors too
        sys.stderr.write(f"fleetcal {args.command}: error: {str(exc).splitlines()[0]}\n")
        return 2


def entry() -> None:
    """Console-script entry point; vLLM spawns workers, so this stays behind a __main__ guard in callers."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
