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
    "simulate": ("fleetcal.commands.simulate", "latency percentiles of serving instances under a traffic or a trace, step by step"),
    "backtest": ("fleetcal.commands.backtest", "published deployments against each method's prediction"),
    "validate": ("fleetcal.commands.validate", "the serving model against published end-to-end throughput, row by row"),
    "models": ("fleetcal.commands.models", "the architectures, attention kinds, MoE layers and weight formats read, which modelled"),
    "report": (
        "fleetcal.commands.report",
        "regenerate tables and plots from results/runs (--write-docs: the generated sections of the README and docs/ too)",
    ),
}


def _module(name: str):
    import importlib

    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the flags of that subcommand alone (the others keep their names and help),
    so that a call imports its own subcommand's modules and no other's (report's matplotlib, bench's engines)."""
    parser = Parser(prog="fleetcal", description="How many GPUs does serving this traffic take? Measured, not assumed.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            _module(name).add_cli_args(p)
    return parser


def _invoked(argv: Sequence[str]) -> str | None:
    """The subcommand a command line names first, if it names one (``fleetcal predict ...``); None otherwise."""
    return argv[0] if argv and argv[0] in SUBCOMMANDS else None


CLOSED_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE (`yes | head -1`): 141


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the subcommand; a UsageError is one line on stderr and exit status 2, a reader that closed stdout
    early (``| head -1``) ends the command quietly with exit status 141, as a shell tool ended by SIGPIPE does."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(_invoked(argv)).parse_args(argv)
        try:
            status = int(_module(args.command).main(args) or 0)
        except UsageError as exc:  # CatalogError and SchemaError are UsageErrors too
            sys.stderr.write(f"fleetcal {args.command}: error: {str(exc).splitlines()[0]}\n")
            return 2
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is an "Exception ignored" message
        return status
    except BrokenPipeError:
        _stdout_to_devnull()
        return CLOSED_PIPE


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail on the closed pipe a second time
    (the recipe of Python's signal module documentation, "Note on SIGPIPE")."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout is no file descriptor (captured in a test): nothing flushes to the pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def entry() -> None:
    """Console-script entry point; vLLM spawns workers, so this stays behind a __main__ guard in callers."""
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
