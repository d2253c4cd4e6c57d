"""The architecture as checked code: imports run one way (import-linter contracts), modules stay small."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "estimator", "fleetcal")
MAX_LINES = 300
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd), "HOME": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The estimator reaching up into the report, or a leaf into the bench, fails the check and is named."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert _lint(tmp_path).returncode == 0
    work = tmp_path / "estimator" / "work.py"
    work.write_text(work.read_text() + "\nimport fleetcal.report  # noqa: E402,F401\n")
    paths = tmp_path / "fleetcal" / "paths.py"
    paths.write_text(paths.read_text() + "\nimport bench.records  # noqa: E402,F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "estimator.work -> fleetcal.report" in proc.stdout
    assert "fleetcal.paths -> bench.records" in proc.stdout
    assert "0 kept" in proc.stdout, "the layers, the leaves and their independence all break"


def test_every_fleetcal_module_is_a_leaf_or_kept_from_the_leaves(contracts):
    """A new module in fleetcal/ must be placed: a leaf, or one the leaves may not import."""
    leaves = next(c for c in contracts if c["id"] == "leaves")
    placed = set(leaves["source_modules"]) | set(leaves["forbidden_modules"])
    modules = {f"fleetcal.{p.stem}" for p in (ROOT / "fleetcal").glob("*.py") if p.stem != "__init__"}
    assert modules - placed == set(), "place the new module in the leaves contract of pyproject.toml"
    assert placed >= modules


def test_no_module_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (at most {MAX_LINES} lines): {long}"
