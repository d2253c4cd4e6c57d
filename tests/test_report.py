"""`fleetcal report` is deterministic and the committed tables, plot data and README match it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetcal.commands.report import CROSS_END, CROSS_START, END, KEY_END, KEY_START, START, run_report

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _committed(path: str) -> str:
    return _git("show", f"HEAD:{path}")


@pytest.fixture(scope="module")
def committed_report(tmp_path_factory):
    """The report made from the committed runs alone, in a scratch directory."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the project's git checkout to know which runs are committed")
    tmp = tmp_path_factory.mktemp("report")
    runs = [p for p in _git("ls-files", "results/runs").splitlines() if p.endswith(".json")]
    (tmp / "runs").mkdir()
    if "results/crosscheck.json" in _git("ls-files", "results").splitlines():
        (tmp / "crosscheck.json").write_text(_committed("results/crosscheck.json"))
    for p in runs:
        (tmp / "runs" / Path(p).name).write_text(_committed(p))
    readme = tmp / "README.md"
    readme.write_text(_committed("README.md"))
    run_report(tmp, readme)
    return tmp, readme, runs


def test_committed_runs_exist(committed_report):
    _, _, runs = committed_report
    assert len(runs) >= 5, "the CPU measurements are committed"


def test_committed_tables_match_the_report(committed_report):
    tmp, _, _ = committed_report
    made = sorted(p.name for p in (tmp / "tables").iterdir())
    committed = sorted(Path(p).name for p in _git("ls-files", "results/tables").splitlines())
    assert made == committed
    for name in made:
        assert (tmp / "tables" / name).read_text() == _committed(f"results/tables/{name}"), f"results/tables/{name} is stale: run fleetcal report"


def test_committed_plot_data_match_the_report(committed_report):
    tmp, _, _ = committed_report
    for csv in sorted((tmp / "plots").glob("*.csv")):
        assert csv.read_text() == _committed(f"results/plots/{csv.name}"), f"results/plots/{csv.name} is stale: run fleetcal report"
    committed_png = {Path(p).name for p in _git("ls-files", "results/plots").splitlines() if p.endswith(".png")}
    assert committed_png == {p.name for p in (tmp / "plots").glob("*.png")}


@pytest.mark.parametrize(("start", "end"), [(START, END), (KEY_START, KEY_END), (CROSS_START, CROSS_END)])
def test_committed_readme_section_matches_the_report(committed_report, start, end):
    _, readme, _ = committed_report
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    made = pattern.search(readme.read_text()).group(0)
    committed = pattern.search(_committed("README.md")).group(0)
    assert made == committed, "the README results section is stale: run fleetcal report"
    assert made.count("\n") > 3, "the section holds a table"


def test_report_is_byte_identical_when_run_twice(committed_report, tmp_path):
    tmp, readme, _ = committed_report
    again = tmp_path / "again"
    shutil.copytree(tmp / "runs", again / "runs")
    readme2 = tmp_path / "README.md"
    readme2.write_text(_committed("README.md"))
    run_report(again, readme2)
    for sub in ("tables", "plots"):
        for f in sorted((tmp / sub).iterdir()):
            assert (again / sub / f.name).read_bytes() == f.read_bytes(), f"{sub}/{f.name} differs between two runs"
    assert readme2.read_text() == readme.read_text()


def test_report_on_no_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# t\n")
    run_report(tmp_path, readme)
    text = readme.read_text()
    assert START in text and "No measurements yet." in text
    assert (tmp_path / "tables" / "fleet.csv").read_text().startswith("scenario,gpu,gpus")
