"""The architecture as checked code: imports run one way (one import-linter layers contract), modules stay small."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "bench", "estimator", "fleetcal")
MAX_LINES = 300
MAX_FUNCTION_LINES = 60
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


def test_one_layers_contract_without_exceptions(contracts):
    assert [c["type"] for c in contracts] == ["layers"]
    assert contracts[0]["layers"] == ["fleetcal", "bench | estimator", "core"]
    assert "ignore_imports" not in contracts[0]


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("core/work.py", "import estimator.serving", "core.work -> estimator.serving"),  # the bottom reaching up
        ("bench/records.py", "import estimator.fleet", "bench.records -> estimator.fleet"),  # measurement importing projection
        ("estimator/fleet.py", "import bench.records", "estimator.fleet -> bench.records"),  # and the other way
        ("estimator/serving.py", "import fleetcal.commands.report", "estimator.serving -> fleetcal.commands.report"),
    ],
)
def test_a_forbidden_import_breaks_the_layers(tmp_path, module, line, broken):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa: E402,F401\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert broken in proc.stdout


def test_every_module_lives_in_a_layer():
    """A top-level package outside the contract would escape it."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(PACKAGES)


def test_no_module_over_300_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules (at most {MAX_LINES} lines): {long}"


def test_no_function_over_60_lines():
    """A function is read in one screen; a longer one is split where its steps are (a list of costs and a sum, say)."""
    long = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {long}"
