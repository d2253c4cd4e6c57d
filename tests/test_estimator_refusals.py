"""Impossible answers (issue 36) are refused: one line on stderr naming what to fix, exit status 2, nothing written, and
never a figure. Each case is what a user typed and once got figures (rc 0) or a traceback for."""

from __future__ import annotations

import json
import shutil

import pytest

from core.paths import RESULTS_DIR
from fleetcal.cli import main

GPU_8B = ["predict", "--model", "llama-3.1-8b", "--gpu", "H100"]

REFUSED = [
    # 32 attention heads do not divide by 3 (vLLM asserts total_num_heads % tp_size == 0)
    ([*GPU_8B, "--num-gpus", "3", "--tp", "3"], "llama-3.1-8b's 32 attention heads do not divide by TP 3"),
    # a TP group spans one node's NVLink domain at most (8 GPUs)
    ([*GPU_8B, "--num-gpus", "16", "--tp", "16"], "TP 16 spans more than the 8 GPUs of one NVLink domain"),
    # Llama has no MTP module: drafting with one gave 448 tok/s per user instead of 167
    ([*GPU_8B, "--mtp-tokens", "2"], "--mtp-tokens 2: llama-3.1-8b has no multi-token-prediction module"),
    # a bound with the bound in the message, not "TTFT inf ms"
    ([*GPU_8B, "--batch-per-gpu", "1e8"], "--batch-per-gpu must be at least 1 and at most 65,536, got 1e+08"),
    ([*GPU_8B, "--context-len", "200000"], "--context-len must be at least 1 and at most 131,072, got 200000"),
    ([*GPU_8B, "--input-len", "200000"], "exceeds llama-3.1-8b's context of 131072"),
    ([*GPU_8B, "--tp", "0"], "--tp must be at least 1 and at most 64, got 0"),
    ([*GPU_8B, "--mtp-acceptance", "1.5"], "--mtp-acceptance must be at least 0 and at most 1, got 1.5"),
    ([*GPU_8B, "--ttft-ms", "-1"], "--ttft-ms must be above 0"),
    # weights that do not fit one H100: 141 GB of BF16 on one GPU
    (["predict", "--model", "llama-3.1-70b", "--gpu", "H100", "--num-gpus", "1"], "weights take 141.1 GB per GPU on 1 GPU(s)"),
    # a batch whose KV does not fit is a refusal, not a figure with a footnote
    ([*GPU_8B, "--batch-per-gpu", "5000", "--input-len", "4000", "--output-len", "1000"], "do not fit: the KV room holds"),
    # no KV room is named as the cause, not a per-user speed to lower
    (["predict", "--model", "llama-3.1-70b", "--gpu", "A100-40GB", "--num-gpus", "8", "--tp", "8", "--weight-dtype", "fp32",
      "--input-len", "60000", "--output-len", "1000", "--tokens-per-user", "5"], "no KV room for one 61,000-token request"),
    # 256 routed experts do not divide by EP 24 (and 24 GPUs are three nodes, not whole ones of EP past a node: fine)
    (["predict", "--model", "deepseek-v3", "--gpu", "H800", "--num-gpus", "24", "--ep", "24"], "do not divide by EP 24"),
    (["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
      "--ttft-ms", "2000", "--tpot-ms", "50", "--mtp-tokens", "1"], "has no multi-token-prediction module"),
    (["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
      "--ttft-ms", "2000", "--tpot-ms", "50", "--gpu-hour-usd", "H100=-2"], "--gpu-hour-usd must be a price in dollars above 0"),
    (["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
      "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "20000"], "--samples must be at least 0 and at most 10,000, got 20000"),
]


@pytest.mark.parametrize(("argv", "needle"), REFUSED)
def test_an_impossible_answer_is_one_line_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc_info:  # argparse's own refusals exit; the commands' return 2
        raise SystemExit(main(argv))
    assert exc_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert captured.out == "" and not any(tmp_path.iterdir())


def test_predict_on_a_cpu_results_dir_of_operator_runs_only_is_one_line(tmp_path, capsys, monkeypatch):
    # bench --mode ops alone (operator curves, no measured steps) used to end in a pandas KeyError: 'device_name'
    from fleetcal.commands import predict_cpu

    run = next(p for p in sorted((RESULTS_DIR / "runs").glob("*cpu-b1a70681*.json"))
               if {r["mode"] for r in json.loads(p.read_text())["records"]} == {"ops", "microbench"})  # fmt: skip
    shutil.copy(run, tmp_path / run.name)
    monkeypatch.setattr(predict_cpu, "describe_cpu", lambda: {"name": "a measured CPU", "id": "cpu-b1a70681", "flags": ["avx512_bf16"]})
    assert main(["predict", "--model", "smollm2-135m", "--device", "cpu", "--results", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds operator curves but no measured decode steps" in lines[0], lines


def test_the_articles_formula_uses_the_asked_models_parameters(capsys):
    # 1e12 output tokens a day x 2 x 70.6e9 (Llama-3.1-70B's published count, catalog.toml) / 86,400 = 1.634e18 ops/s,
    # published as 1.6e18 (two digits): 1.6e18 / (0.5 x 1,978e12) = 1,617.8 -> 1,617 H100 ... for 671e9 it stays 16,177
    assert main(["estimate", "--model", "llama-3.1-70b", "--scenario", "article", "--gpu", "H100", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["article_inputs"]["params_per_token"] == 70.6e9
    assert doc["demand_ops_per_s_exact"] == pytest.approx(1e12 / 86_400 * 2 * 70.6e9)
    assert doc["gpus"]["H100"] == int(round(doc["demand_ops_per_s_exact"], -17) / (0.5 * 1978e12))
    assert main(["estimate", "--scenario", "article", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpus"] == {"H100": 16177, "A100": 51282}  # DeepSeek's 671e9: the article
