"""Shared command-line plumbing: one-line argument errors with exit status 2, flags named in full (a typo is named with
a suggestion), list parsing.

Part of ``core`` (imports nothing above it)."""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from core.paths import RESULTS_DIR


class Parser(argparse.ArgumentParser):
    """argparse with errors reduced to one line on stderr and exit status 2, flags only in full (``allow_abbrev=False``:
    ``--tokens-per`` is not quietly taken for ``--tokens-per-gpu``), and an unknown flag named with the nearest one
    before anything else is checked (argparse would first report a required flag as missing)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):  # noqa: ANN201
        args = sys.argv[1:] if args is None else list(args)
        subcommands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        for token in args:
            if token == "--":
                break
            if not token.startswith("-") or token == "-" or _NUMBER.match(token):
                if subcommands is not None:  # the subcommand's own parser checks what follows it
                    if token not in subcommands.choices:
                        self.error(f"unknown subcommand {token}{_did_you_mean(token, list(subcommands.choices))}")
                    break
                continue
            flag = token.split("=", 1)[0]
            if flag not in self._option_string_actions:
                self.error(f"unknown flag {flag}{_did_you_mean(flag, self.flags())}")
        return super().parse_known_args(args, namespace)

    def flags(self) -> list[str]:
        """Every option string this parser takes, in the order they were added."""
        return [s for a in self._actions for s in a.option_strings]


_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)  # a negative value (-4, -.5, -1e3, -inf), not a flag


def _did_you_mean(name: str, known: list[str]) -> str:
    """'; did you mean X?' for the known name that ``name`` abbreviates or most resembles, else a pointer to --help."""
    prefixed = [k for k in known if k.startswith(name)]
    close = prefixed[:1] if len(prefixed) == 1 else difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else "; see --help"


READS_RUNS = "results directory (its runs/ is read; a runs directory or one run file also works)"


def add_results_args(p: argparse.ArgumentParser, results_help: str = READS_RUNS) -> None:
    """The --results and --json flags every reading subcommand takes."""
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help=results_help)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


MAX_LIST_VALUE = 1 << 20  # tokens or sequences in one configuration
MAX_LIST_LEN = 64  # values per list: a sweep is the product of its lists


def _parse_list(text: str, convert: type, what: str, example: str) -> list:
    """Comma-separated values converted by ``convert``; one line saying what to give when it fails."""
    try:
        values = [convert(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what} (e.g. {example})") from None
    if not values:
        raise argparse.ArgumentTypeError(f"the list is empty; give e.g. {example}")
    return values


def _deduped(values: list) -> list:
    values = list(dict.fromkeys(values))  # a repeated value is one configuration
    if len(values) > MAX_LIST_LEN:
        raise argparse.ArgumentTypeError(f"at most {MAX_LIST_LEN} values per list, got {len(values)}")
    return values


def int_list(text: str) -> list[int]:
    """Parse a comma-separated list of positive integers, e.g. '1,8,32'."""
    values = _parse_list(text, int, "integers", "1,8,32")
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"every value in {text!r} must be a positive integer")
    if any(v > MAX_LIST_VALUE for v in values):
        raise argparse.ArgumentTypeError(f"every value in the list must be at most {MAX_LIST_VALUE:,}")
    return _deduped(values)


def str_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError("the list is empty")
    return values


MAX_RATE = 1e6  # requests per second: far beyond any one server


def rate_list(text: str) -> list[float]:
    """Parse comma-separated request rates (requests/s, positive; ``inf`` sends every request at once), e.g. '1,4,inf'."""
    values = _parse_list(text, float, "rates", "1,4,inf")
    if any(math.isnan(v) or v <= 0 or (math.isfinite(v) and v > MAX_RATE) for v in values):
        raise argparse.ArgumentTypeError(f"every rate in {text!r} must be a positive number of requests/s up to {MAX_RATE:g}, or inf")
    return _deduped(values)
