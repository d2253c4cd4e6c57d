"""Faults and bad paths, driven through the console script: one line, exit 2, nothing written; one bad file breaks no reader."""

from __future__ import annotations

import shutil
from pathlib import Path

from fleetcal.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_bench_out_under_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["bench", "--out", str(tmp_path / "file" / "runs"), "--microbench", "off"]) == 2
    assert "not a writable directory" in _one_line(capsys.readouterr().err)


def test_an_unreachable_base_url_is_one_line_and_nothing_written(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "runs"
    assert main(["bench", "--mode", "serve", "--base-url", f"http://127.0.0.1:{port}", "--out", str(out)]) == 2
    assert "no OpenAI-compatible server answers there" in _one_line(capsys.readouterr().err)
    assert not out.exists()
    assert main(["bench", "--mode", "serve,throughput", "--base-url", f"http://127.0.0.1:{port}", "--out", str(out)]) == 2
    assert "--mode serve alone" in _one_line(capsys.readouterr().err)


def test_report_refuses_a_readme_it_cannot_write_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "README.md").mkdir()
    assert main(["report", "--results", str(tmp_path / "results"), "--readme", str(tmp_path / "README.md")]) == 2
    assert "is a directory" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "results" / "tables").exists() and not (tmp_path / "results" / "plots").exists()
    assert main(["report", "--results", str(tmp_path / "results"), "--readme", str(tmp_path / "no" / "README.md")]) == 2
    assert "does not exist" in _one_line(capsys.readouterr().err)


def test_readers_refuse_a_missing_results_directory(tmp_path, capsys):
    for sub in (["estimate"], ["backtest"], ["predict", "--model", "smollm2-135m", "--device", "cpu"]):
        assert main([*sub, "--results", str(tmp_path / "missing")]) == 2
        assert "no such directory" in _one_line(capsys.readouterr().err)


def test_report_with_only_bad_files_keeps_the_readme(tmp_path, capsys):
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "bad.json").write_text("[]")
    readme = tmp_path / "README.md"
    readme.write_text("kept\n")
    assert main(["report", "--results", str(tmp_path / "results"), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "no usable run file" in err
    assert readme.read_text() == "kept\n" and not (tmp_path / "results" / "tables").exists()


def test_vllm_refusing_a_request_keeps_the_engine():
    """vLLM's validation error (a prompt longer than the context) is not a ValueError: it still counts as refused."""
    from vllm.exceptions import VLLMValidationError

    from bench.engines import refused_request

    assert refused_request(VLLMValidationError("prompt too long"))
    assert refused_request(ValueError("prompt too long"))
    assert not refused_request(RuntimeError("engine died"))


def test_one_bad_file_breaks_no_reader(tmp_path, capsys):
    """estimate, predict and backtest read around a file holding ``[]`` and one whose device is a string, naming each."""
    import json

    runs = tmp_path / "runs"
    shutil.copytree(ROOT / "tests" / "fixtures" / "runs", runs)
    commands = [["estimate", "--json"], ["backtest", "--json"], ["predict", "--model", "deepseek-v3", "--gpu", "H100", "--json"]]
    clean = []
    for argv in commands:
        assert main([*argv, "--results", str(runs)]) == 0
        clean.append(json.loads(capsys.readouterr().out))
    good = json.loads(next(runs.glob("*.json")).read_text())
    (runs / "empty.json").write_text("[]")
    (runs / "stringdevice.json").write_text(json.dumps({**good, "run": {**good["run"], "device": "cpu"}}))
    for argv, before in zip(commands, clean):
        assert main([*argv, "--results", str(runs)]) == 0
        out = capsys.readouterr()
        assert json.loads(out.out) == before
        assert "empty.json" in out.err and "stringdevice.json" in out.err
