"""Where the project keeps what it measured and what it writes from it.

Part of ``core`` (imports nothing above it). ``--results`` means the results directory
(``results/``, holding ``runs/``, ``tables/``, ``plots/``) for every subcommand; a ``runs/``
directory or one run file is accepted where runs are read.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project checkout (or the installed tree)
RESULTS_DIR = ROOT / "results"
RUNS_DIR = RESULTS_DIR / "runs"
README = ROOT / "README.md"
DATA_DIR = Path(__file__).resolve().parent / "data"  # the catalogs: GPUs, models, kernels, deployments, validation rows


def cache_dir() -> Path:
    """Root of fleetcal's cache (the converted bundled model, server logs); relocate it with FLEETCAL_CACHE."""
    env = os.environ.get("FLEETCAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fleetcal"


def runs_dir(results: Path) -> Path:
    """The run files under ``results``: its ``runs/`` when it has one, else ``results`` itself (a runs directory or one file)."""
    results = Path(results)
    return results / "runs" if (results / "runs").is_dir() else results


def portable(path: Path) -> str:
    """A path as recorded: relative to the project when inside it, so records name no machine's folders."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
