"""What ``fleetcal predict --gpu`` does at start (issue 33: it should start in under half a second): it imports neither the CPU
step model's modules nor urllib's HTTP client (a config fetched from the hub imports it then), and it parses only the
GPU runs' records of results/runs (nine in ten committed records are the CPU's, and a GPU's operator classes never come
from a CPU), with the same operator table for the GPU either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from core.paths import RESULTS_DIR, ROOT
from core.schema import read_run_files
from estimator.operators import load_ops

CHECK = """
import contextlib, io, sys
from fleetcal.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(code, sorted(m for m in ("estimator.cpu_steps", "estimator.cpu_validation", "urllib.request") if m in sys.modules))
"""


def test_predict_on_a_gpu_imports_no_cpu_step_model_and_no_http_client(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = ["predict", "--model", "llama-3.1-8b", "--gpu", "H100"]
    done = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]


def test_a_gpu_reads_only_gpu_runs_and_gets_the_same_operators():
    runs = RESULTS_DIR / "runs"
    every, _ = read_run_files(runs)
    gpu, _ = read_run_files(runs, kind="cuda")
    assert {d.path for d in gpu} == {d.path for d in every if d.run["device"]["kind"] == "cuda"}
    assert 0 < len(gpu) < len(every)  # the committed runs hold both kinds
    whole, only = load_ops(RESULTS_DIR, warn=False), load_ops(RESULTS_DIR, warn=False, kind="cuda")
    on_gpus = whole[whole["catalog_name"].notna()].reset_index(drop=True)
    pd.testing.assert_frame_equal(on_gpus.fillna(-1), only.reset_index(drop=True).fillna(-1), check_dtype=False)  # None or NaN: missing
