"""Faults: one bad run file breaks no reader, a request vLLM refuses keeps its engine. Bad input on the command line (one
line, exit 2, nothing written) is tests/test_cli_contract.py's table."""

from __future__ import annotations

import shutil
from pathlib import Path

from fleetcal.cli import main

ROOT = Path(__file__).resolve().parent.parent


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
