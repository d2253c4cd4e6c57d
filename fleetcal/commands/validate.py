"""``fleetcal validate``: the serving model against published end-to-end throughput (core/data/validation.toml),
the error per row, the median and the worst (with ``--run``, against a measured run instead: validate_run.py); with
``--peer aiconfigurator``, NVIDIA's AIConfigurator beside it on every row
it can express (run in its own environment, fleetcal/peers/aic.py), and with ``--write`` its predictions committed
as data (results/peer/) and docs/peer.md regenerated."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from core.args import add_results_args
from core.errors import UsageError
from core.paths import RESULTS_DIR, portable
from estimator.operators import load_ops
from estimator.validation import VALIDATION_FILE, load_rows, summary, validate
from fleetcal.commands.validate_run import run_main
from fleetcal.peers import aic
from fleetcal.peers.side_by_side import COLUMNS as PEER_COLUMNS
from fleetcal.peers.side_by_side import PEER_PAGE, not_expressed, shared_summary, side_by_side, summary_line, write_peer, write_peer_page

COLUMNS = ["id", "model", "gpu", "precision", "layout", "kind", "lengths", "counts", "published", "predicted", "error_pct"]
PEERS = (aic.NAME,)


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", type=Path, default=VALIDATION_FILE, help="validation table (default: the committed core/data/validation.toml)")
    add_results_args(p, "results directory whose measured GPU kernels the model uses")
    p.add_argument("--peer", choices=PEERS, default=None, help="run a peer on every row it can express and print both errors side by side")
    p.add_argument("--peer-python", type=Path, default=None,
                   help=f"the peer environment's Python (default: ${aic.PYTHON_ENV}, else .venv-peers/bin/python, which "
                        "scripts/setup_peers.sh makes)")  # fmt: skip
    p.add_argument("--write", action="store_true", help="with --peer: commit its predictions to results/peer/ and regenerate docs/peer.md")
    p.add_argument("--run", type=Path, action="append", metavar="RUN_FILE_OR_DIR",
                   help="instead of the published rows: a measured run (a results file, or a directory of one session's files; "
                        "repeatable), each configuration predicted from the operators measured with it, beside what was "
                        "measured")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    if args.run:
        if args.peer or args.write:
            raise UsageError("--run predicts a measured run; --peer and --write compare published rows: give one or the other")
        return run_main(args)
    if not args.file.is_file():
        raise UsageError(f"no validation table at {args.file}; pass --file with a TOML file of [[row]] tables")
    if args.write and not args.peer:
        raise UsageError("--write writes a peer's predictions: give --peer aiconfigurator with it")
    python = aic.peer_python(args.peer_python) if args.peer else None  # a missing environment is refused before any work
    rows, sources = load_rows(args.file)
    df = validate(rows, load_ops(args.results, warn=False))
    if python is not None:
        return _with_peer(args, df, aic.run_peer(rows, python))
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


def _with_peer(args: argparse.Namespace, df: pd.DataFrame, peer: dict) -> int:
    """Both errors per row, both medians over the shared rows, who is closer; the rows the peer cannot express and why."""
    both = side_by_side(df, peer)
    s = shared_summary(both)
    if args.write:
        peer_dir = args.results / "peer"
        page = args.results.resolve() == RESULTS_DIR.resolve()  # docs/peer.md describes the committed results only
        written = [write_peer(peer, peer_dir), *([PEER_PAGE] if page and write_peer_page(df, PEER_PAGE, peer_dir) else [])]
        print("wrote " + ", ".join(portable(p) for p in written), file=sys.stderr)
    if args.json:
        rows = both.astype(object).where(both.notna(), None).to_dict(orient="records")  # JSON null where the peer has no figure
        print(json.dumps({"rows": rows, "summary": s, "peer": peer["versions"],
                          "not_expressed": [{"id": i, "why": w} for i, w in not_expressed(peer)]}, default=str))  # fmt: skip
        return 0
    with pd.option_context("display.width", 250, "display.max_rows", None, "display.max_colwidth", 60):
        print(both[PEER_COLUMNS].to_string(index=False))
    print(f"\n{summary_line(s)} error = (predicted - published) / published; peer: {aic.NAME} {peer['versions'][aic.NAME]}")
    for rid, why in not_expressed(peer):
        print(f"not expressed by {aic.NAME}: {rid}: {why}")
    return 0
