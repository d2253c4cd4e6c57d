"""`fleetcal report` is deterministic and the committed tables, plot data and README match it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetcal.cli import main
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
    _copy_committed_docs(tmp / "docs")
    run_report(tmp, readme, tmp / "docs")
    return tmp, readme, runs


def _copy_committed_docs(docs: Path) -> None:
    docs.mkdir()
    for p in _git("ls-files", "docs").splitlines():
        (docs / Path(p).name).write_text(_committed(p))


def _pages(readme: Path) -> str:
    """The README and its docs/ pages as one text, where the generated blocks are looked for."""
    return "\n".join([readme.read_text()] + [p.read_text() for p in sorted((readme.parent / "docs").glob("*.md"))])


def _committed_pages() -> str:
    return "\n".join([_committed("README.md")] + [_committed(p) for p in sorted(_git("ls-files", "docs").splitlines())])


@pytest.mark.slow
def test_committed_runs_exist(committed_report):
    _, _, runs = committed_report
    assert len(runs) >= 5, "the CPU measurements are committed"


@pytest.mark.slow
def test_committed_tables_match_the_report(committed_report):
    tmp, _, _ = committed_report
    made = sorted(p.name for p in (tmp / "tables").iterdir())
    committed = sorted(Path(p).name for p in _git("ls-files", "results/tables").splitlines())
    assert made == committed
    for name in made:
        assert (tmp / "tables" / name).read_text() == _committed(f"results/tables/{name}"), (
            f"results/tables/{name} is stale: run fleetcal report --write-docs"
        )


@pytest.mark.slow
def test_committed_plot_data_match_the_report(committed_report):
    tmp, _, _ = committed_report
    for csv in sorted((tmp / "plots").glob("*.csv")):
        stale = f"results/plots/{csv.name} is stale: run fleetcal report --write-docs"
        assert csv.read_text() == _committed(f"results/plots/{csv.name}"), stale
    committed_png = {Path(p).name for p in _git("ls-files", "results/plots").splitlines() if p.endswith(".png")}
    assert committed_png == {p.name for p in (tmp / "plots").glob("*.png")}


@pytest.mark.slow
@pytest.mark.parametrize(("start", "end"), [(START, END), (KEY_START, KEY_END), (CROSS_START, CROSS_END)])
def test_committed_readme_section_matches_the_report(committed_report, start, end):
    _, readme, _ = committed_report
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    made = pattern.search(_pages(readme)).group(0)
    committed = pattern.search(_committed_pages()).group(0)
    assert made == committed, "the README results section is stale: run fleetcal report --write-docs"
    assert made.count("\n") > 3, "the section holds a table"


@pytest.mark.slow
def test_a_second_report_is_byte_identical_and_a_bad_file_changes_nothing(committed_report, tmp_path, capsys):
    """The report built again, through the command line, from the same runs plus a file holding ``[]``: every table,
    plot and page is the same byte for byte, except the results section naming the bad file; the bad file is on stderr."""
    tmp, readme, _ = committed_report
    again = tmp_path / "again"
    shutil.copytree(tmp / "runs", again / "runs")
    (again / "runs" / "broken.json").write_text("[]")
    readme2 = tmp_path / "README.md"
    readme2.write_text(_committed("README.md"))
    _copy_committed_docs(tmp_path / "docs")
    assert main(["report", "--results", str(again), "--readme", str(readme2), "--docs", str(tmp_path / "docs")]) == 0
    assert "broken.json" in capsys.readouterr().err
    for sub in ("tables", "plots"):
        for f in sorted((tmp / sub).iterdir()):
            assert (again / sub / f.name).read_bytes() == f.read_bytes(), f"{sub}/{f.name} differs between two runs"
    pages = _pages(readme2)
    skipped = re.search(r"\n\nRun files skipped \(they do not follow the record schema\):\n\n- broken\.json: [^\n]*", pages)
    assert skipped, "the results section names the bad file"
    assert pages.replace(skipped.group(0), "") == _pages(readme)


def test_the_readme_is_a_front_door():
    """At most about 200 lines: the methods and the full results live in docs/, and every page it links exists."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[\w.-]+\.md)", text)
    assert links and all((ROOT / link).is_file() for link in links)


def test_report_writes_the_pages_only_when_asked(tmp_path, capsys):
    """``fleetcal report --results X`` writes tables and plots under X and leaves the project's README and docs/ alone;
    --write-docs (or naming a --readme / --docs) rewrites their generated blocks."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pages}
    (tmp_path / "runs").mkdir()
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert "--write-docs" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in pages} == before
    assert (tmp_path / "tables" / "fleet.csv").is_file() and (tmp_path / "plots" / "plan_frontier.png").is_file()
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{KEY_START}\n{KEY_END}\n")
    assert main(["report", "--results", str(tmp_path), "--readme", str(readme)]) == 0
    assert "| scenario" in readme.read_text() and START in readme.read_text()


def test_report_on_no_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# t\n")
    run_report(tmp_path, readme)
    text = readme.read_text()
    assert START in text and "No measurements yet." in text
    assert (tmp_path / "tables" / "fleet.csv").read_text().startswith("scenario,gpu,gpus")
