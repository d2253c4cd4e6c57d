"""`fleetcal bench` as a user runs it: a real sweep, a killed sweep, and --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TICKS, assert_nothing_left, left_behind, sigterm_after_records, stop_once_recorded, uptime_ticks

from bench import reaper
from core.schema import load_document

pytestmark = pytest.mark.engine
FLEETCAL = [sys.executable, "-m", "fleetcal.cli"]
ROOT = Path(__file__).resolve().parent.parent


def _env():
    return {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}


def _only_file(d: Path) -> Path:
    files = sorted(d.glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def test_bench_writes_a_complete_record_file(tmp_path):
    t0 = uptime_ticks() - TICKS
    out = tmp_path / "runs"
    # in=64 + out=8 exceeds the engine's --max-model-len 48: those configurations fail and the sweep goes on
    args = ["bench", "--batch-sizes", "1,2", "--input-lens", "16,64", "--output-lens", "8", "--num-prompts", "2",
            "--max-model-len", "48", "--microbench", "quick", "--device", "cpu", "--out", str(out)]  # fmt: skip
    proc = subprocess.run([*FLEETCAL, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = load_document(_only_file(out))
    run = doc["run"]
    assert run["device"]["kind"] == "cpu" and run["device"]["cores"] >= 1
    assert run["versions"]["vllm"] and run["versions"]["torch"] and run["versions"]["transformers"]
    assert run["model"]["name"] == "SmolLM2-135M-Instruct" and run["model"]["parameters"] > 1e8
    modes = [(r["mode"], r["input_len"], r["status"]) for r in doc["records"]]
    assert modes == [("microbench", None, "ok")] + [("throughput", 16, "ok")] * 2 + [("throughput", 64, "failed")] * 2
    for r in doc["records"][1:3]:
        assert r["output_tokens_per_s"] > 0
        assert r["total_tokens_per_s"] > r["output_tokens_per_s"]
    for r in doc["records"][3:]:
        assert "48" in r["error"], r["error"]
    assert "output tok/s" in proc.stdout and "FAILED" in proc.stdout
    assert_nothing_left(t0)  # a finished run, failed configurations included, leaves no engine or resource tracker


def test_killed_sweep_keeps_finished_records_and_resume_completes(tmp_path):
    out = tmp_path / "runs"
    args = ["bench", "--engine", "transformers", "--mode", "throughput,decode", "--batch-sizes", "1,2,3",
            "--input-lens", "16", "--output-lens", "24", "--num-prompts", "1", "--microbench", "off", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [*FLEETCAL, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        at_kill = stop_once_recorded(proc, out, records=2)  # frozen, then killed outright: nothing more is written
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    path = _only_file(out)
    doc = load_document(path)  # valid after the kill
    finished = [(r["mode"], r["batch_size"]) for r in doc["records"]]
    assert len(finished) == at_kill >= 2 and all(r["status"] == "ok" for r in doc["records"])

    res = subprocess.run([*FLEETCAL, "bench", "--resume", str(path)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    after = load_document(path)
    keys = [(r["mode"], r["batch_size"]) for r in after["records"]]
    assert sorted(keys) == sorted([(m, b) for m in ("throughput", "decode") for b in (1, 2, 3)])
    assert keys[: len(finished)] == finished, "finished configurations are kept, not measured again"
    assert after["run"]["resumed_utc"]
    assert _only_file(out) == path


def test_sigkill_of_a_vllm_sweep_leaves_no_engine_behind(tmp_path):
    """Killed outright (a caller's timeout), the bench cannot clean up itself: its watchdog stops the engine core,
    the workers and the resource tracker."""
    t0 = uptime_ticks() - TICKS
    args = ["bench", "--batch-sizes", "1", "--input-lens", "16", "--output-lens", "2048", "--num-prompts", "1", "--microbench", "off",
            "--out", str(tmp_path / "runs")]  # fmt: skip
    proc = subprocess.Popen(
        [*FLEETCAL, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    try:
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and not any("EngineCore" in p for p in left_behind(t0, include_children=True))
        ):
            time.sleep(0.2)
        # the engine core is up; the watchdog notes descendants every POLL_S: once it has polled a few times since, it knows
        # the engine's processes, and a kill is what a caller's timeout would do mid-run
        seen = time.monotonic()
        while proc.poll() is None and time.monotonic() - seen < 4 * reaper.POLL_S:
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before it could be killed: give it a longer output"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert_nothing_left(t0, wait_s=20)


def test_sigterm_stops_a_sweep_like_ctrl_c_and_keeps_what_finished(tmp_path):
    out = tmp_path / "runs"
    args = ["bench", "--engine", "transformers", "--mode", "decode", "--batch-sizes", "1,2,3,4,5,6", "--budget-s", "1",
            "--input-lens", "16", "--output-lens", "24", "--microbench", "off", "--out", str(out)]  # fmt: skip
    returncode, err, at_signal = sigterm_after_records(args, out, records=1, timeout_s=300, env=_env())
    assert returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted: every finished configuration is kept" in err
    (path,) = out.glob("*.json")
    doc = load_document(path)
    assert at_signal <= len(doc["records"]) < 6, "what was recorded before the signal is kept; the interrupted configuration is not"
    assert all(r["status"] == "ok" for r in doc["records"])


def test_gpu_script_runs_on_the_cpu(tmp_path):
    """The prepared GPU measurement, exercised on the CPU with tiny sizes before any GPU time is spent."""
    proc = subprocess.run(
        ["bash", "scripts/gpu_run.sh", str(tmp_path), "--cpu-test"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    docs = [load_document(f) for f in sorted(tmp_path.glob("*.json"))]
    assert len(docs) == 4  # ops, eager decode, eager prefill, static-cache decode
    for doc in docs:
        assert doc["run"]["model"]["load_format"] == "dummy"
        assert all(r["status"] == "ok" for r in doc["records"]), [r.get("error") for r in doc["records"]]
    modes = [{r["mode"] for r in d["records"]} for d in docs]
    assert modes == [{"microbench", "ops"}, {"decode"}, {"prefill"}, {"decode"}]
    assert [d["run"]["engine"]["enforce_eager"] for d in docs] == [True, True, True, False]
    # step 4: every configuration it measured, predicted from its operators or named with why (on the CPU the step model
    # is vLLM's, so each transformers configuration is named); on a GPU the serving model predicts each (test_run_prediction)
    out = proc.stdout[proc.stdout.index("predicted from the operators measured above") :]
    measured = [(r["mode"], r["batch_size"]) for d in docs[1:] for r in d["records"]]
    assert len(measured) == 4  # eager decode at batches 1 and 2, prefill at 1, compiled decode at 1
    for mode, batch in measured:
        assert f"{mode} b={batch} in=" in out, out
    assert out.count("  - ") == len(measured) and "the CPU step model is vLLM's" in out
