"""A measured run predicted from the operators measured with it (estimator/run_prediction.py, `fleetcal validate --run`),
on committed sessions: the H200 session of scripts/gpu_run.sh and a CPU session of scripts/measure_cpu_steps.sh."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UsageError
from core.hardware import get_gpu
from estimator.arch import Layout, load_arch
from estimator.cpu_steps import build_curves
from estimator.cpu_validation import validate
from estimator.kernels import kernels_for
from estimator.planning import aggregated_point
from estimator.run_prediction import configurations, load_session, predict_run, summary, wave_output_tokens_per_s
from estimator.run_prediction_cpu import prefill_s
from estimator.run_prediction_gpu import predict_gpu_device
from estimator.traffic import Request
from fleetcal.cli import main

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"
H200 = sorted(RUNS.glob("20261128T18*-cuda-2403e867-*.json")) + sorted(RUNS.glob("20261128T19*-cuda-2403e867-*.json"))
GPU_LOOP = Path(__file__).resolve().parent.parent / "results" / "gpu" / "20261204-h200"  # scripts/gpu_run.sh with its step 4
QUICK_START = Path(__file__).resolve().parent / "fixtures" / "loop"  # scripts/main.sh on a 2-core EPYC, one run file
CPU_SESSION = sorted(RUNS.glob("20261129T10*-cpu-b1a70681-*.json")) + sorted(RUNS.glob("20261129T110*-cpu-b1a70681-*.json"))


def _configs(rows: pd.DataFrame) -> set[tuple]:
    return {(r.model, r.engine, r.mode, r.batch_size, r.input_len, r.output_len, r.run_file) for r in rows.itertuples()}


def test_every_configuration_of_the_h200_session_is_predicted_or_named():
    """gpu_run.sh's H200 session (operators of two models, transformers decode and prefill, eager and compiled): each
    successful configuration gets a row, held out (nothing is fitted on a GPU); the failed one is named, not dropped."""
    assert len(H200) == 9
    pred = predict_run(H200)
    runs, _, _ = load_session(H200)
    measured = configurations(runs)
    assert len(measured) == 14 and len(pred.rows) == 14  # 8 eager decode + 4 prefill + 2 compiled decode, one metric each
    assert _configs(pred.rows) == _configs(measured)
    assert set(pred.rows["role"]) == {"held out"}
    assert list(pred.unpredicted["why"].str.startswith("not measured (failed: RuntimeError")) == [True]
    (how,) = pred.methods.values()
    assert "measured attention_prefill, elementwise, gemm, gemm_bf16 (H200 [cuda-2403e867])" in how and "eager engine" in how


def test_the_rented_gpu_loop_predicts_every_configuration_it_measured():
    """gpu_run.sh's own run on an H200 with step 4 (2026-12-04, its log beside the directory): every configuration it
    measured has its prediction, and nothing measured is left unpredicted."""
    pred = predict_run([GPU_LOOP])
    runs, _, _ = load_session([GPU_LOOP])
    assert len(configurations(runs)) == len(pred.rows) == 8 and pred.unpredicted.empty
    kinds = sorted(pred.rows["mode"] + " " + pred.rows["engine"])
    assert kinds == ["decode transformers"] * 4 + ["decode transformers compiled"] * 2 + ["prefill transformers"] * 2
    log = (GPU_LOOP.parent / "20261204-h200-gpu_run.log").read_text()
    assert "predicted from the operators measured above" in log and log.count(" held out ") == 8


def test_a_decode_step_on_the_h200_by_hand():
    """Llama-3.1-8B at batch 1 reads every linear layer's bf16 weights once a step; at M = 1 the session's own GEMM
    curve gives the bandwidth share (kernels_for on the session's operator records), so the operators take those bytes
    over that share of the H200's 4.8 TB/s (datasheet), the rest (attention over 144 tokens, norms) well under 1%. The
    step then launches its kernels from a CUDA graph: 32 layers of 10 (vLLM's Llama decoder layer,
    core/data/engines/vllm-0.32.toml), the embedding and the final norm, and the LM head: 323, each the graph's gap
    (kernels.toml [launch]). Shapes from core/data/models/llama-3.1-8b/config.json: hidden 4,096, 32 query and 8 KV heads
    of 128, intermediate 14,336, vocabulary 128,256, 32 layers."""
    pred = predict_run(H200)
    row = pred.rows[(pred.rows["mode"] == "decode") & (pred.rows["batch_size"] == 1) & (pred.rows["engine"] == "transformers compiled")]
    _, ops, _ = load_session(H200)
    k = kernels_for(get_gpu("H200"), ops)[0]
    eff = k.ops["gemm_bf16"]
    assert eff.source.startswith("measured: gemm bf16 on H200 [cuda-2403e867]")
    per_layer = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 4096 * 2 * 14336 + 14336 * 4096
    weight_bytes = 2 * (32 * per_layer + 4096 * 128256)
    by_hand_ms = (weight_bytes / (eff.at(1).memory * 4.8e12) + (32 * 10 + 2 + 1) * k.graph_gap_s) * 1e3
    assert row["predicted"].item() == pytest.approx(by_hand_ms, rel=0.01)
    assert row["measured"].item() == pytest.approx(9.2649)  # the record's decode_step_ms
    assert row["error"].item() == pytest.approx(row["predicted"].item() / 9.2649 - 1)


def test_the_cpu_session_is_cpu_validations_own_steps_fitted_and_held_out():
    """measure_cpu_steps.sh's session of 2026-11-29 10:10 (curves, decode and prefill of two models): the prediction is
    cpu_validation's, not a second one: the same predicted step per configuration, the same fitted rows (the bundled
    model's decode at batches up to 32 at its 128-token prompts), every other configuration held out."""
    pred = predict_run(CPU_SESSION)
    runs, ops, _ = load_session(CPU_SESSION)
    assert len(pred.rows) == len(configurations(runs)) == 30 and pred.unpredicted.empty
    fitted = pred.rows[pred.rows["role"] == "fitted"]
    assert sorted(fitted["batch_size"]) == [1, 2, 4, 8, 16, 32]
    assert set(fitted["model"]) == {"SmolLM2-135M-Instruct"} and set(fitted["input_len"]) == {128} and set(fitted["mode"]) == {"decode"}
    device = pred.rows["device_name"].iloc[0]
    steps = validate(runs, ops, device).steps.set_index(["model", "phase", "batch", "input_len", "run_file"])
    for r in pred.rows.itertuples():
        assert r.predicted == pytest.approx(steps.loc[(r.model, r.mode, r.batch_size, r.input_len, r.run_file), "predicted_ms"])
    s = summary(pred.rows)
    assert s["fitted"] == 6 and s["held_out"] == 24 and s["article_utilization"] == 0.5


def test_the_quick_start_run_predicts_its_throughput_from_its_own_decode_fit():
    """scripts/main.sh's CPU run (2026-12-04: 46 operator cases of --ops-range sweep, bench's default throughput and decode
    in one file): the decode steps at batches 1, 8 and 32 are fitted, the throughput configurations held out. By hand:
    a throughput wave of B prompts is one prefill of B x 32 tokens plus 63 decode steps at context 32 + 64 / 2 = 64, the
    context of the decode rows, so each throughput row is 64 B / (prefill + 63 x that decode row's predicted step)."""
    pred = predict_run([QUICK_START])
    rows = pred.rows.set_index(["mode", "batch_size"])
    assert len(pred.rows) == 6 and pred.unpredicted.empty
    assert list(pred.rows.loc[pred.rows["role"] == "fitted", "mode"]) == ["decode"] * 3
    assert set(pred.rows.loc[pred.rows["role"] == "held out", "mode"]) == {"throughput"}
    runs, ops, _ = load_session([QUICK_START])
    device, model = pred.rows["device_name"].iloc[0], pred.rows["model"].iloc[0]
    v = validate(runs, ops, device)
    curves, over = build_curves(ops, device, model, "bf16"), v.latest_overhead
    for b in (1, 8, 32):
        step_s = rows.loc[("decode", b), "predicted"] / 1e3
        by_hand = 64 * b / (prefill_s(curves, over, b, 32) + 63 * step_s)
        assert rows.loc[("throughput", b), "predicted"] == pytest.approx(by_hand, rel=1e-9)
        assert rows.loc[("throughput", b), "peak"] == "measured"  # a CPU: MFU against the run's own microbenchmark peak


def test_served_configurations_get_ttft_and_tpot_at_each_concurrency():
    """The CPU session of 2026-11-29 02:39 (curves, decode steps, and the server at concurrencies 1, 4 and 8 with 1,024-token
    prompts sharing 0%, 50% and 87.5% of them through the prefix cache): each closed-loop configuration gets TTFT and TPOT
    p50, held out, and a prompt served more from the cache is predicted to reach its first token sooner."""
    files = sorted(RUNS.glob("20261129T02[34]*-cpu-b1a70681-*.json")) + sorted(RUNS.glob("20261129T03*-cpu-b1a70681-*.json"))
    pred = predict_run(files + sorted(RUNS.glob("20261129T04*-cpu-b1a70681-*.json")))
    serve = pred.rows[pred.rows["mode"] == "serve"]
    assert len(serve) == 3 * 3 * 2 and set(serve["role"]) == {"held out"}
    assert (serve.groupby(["run_file", "concurrency"])["metric"].apply(sorted) == [["tpot_ms_p50", "ttft_ms_p50"]] * 9).all()
    ttft = serve[(serve["metric"] == "ttft_ms_p50") & (serve["concurrency"] == 1)].sort_values("run_file")["predicted"]
    assert list(ttft) == sorted(ttft, reverse=True) and ttft.iloc[0] > 1.5 * ttft.iloc[1]  # hit rates 0, 0.5, 0.875 in file order


def test_a_served_configuration_on_a_gpu_is_the_whole_request_model_at_its_concurrency():
    """No committed GPU run has served under load yet: a closed-loop configuration at concurrency 16 (and an open-loop one)
    is set into the H200 session. Its TTFT and TPOT are planning.aggregated_point at 16 sequences on one GPU with the
    session's kernels; the open-loop one is named with why."""
    runs, ops, engines = load_session(H200)
    base = configurations(runs).iloc[0]
    serve = {**base, "mode": "serve", "engine": "vllm compiled", "batch_size": float("nan"), "input_len": 1000, "output_len": 200,
             "ttft_ms_p50": 100.0, "tpot_ms_p50": 10.0}  # fmt: skip
    served = pd.DataFrame([{**serve, "concurrency": 16.0}, {**serve, "concurrency": float("nan"), "request_rate": 4.0}])
    rows, unpredicted, _ = predict_gpu_device(served, runs, ops, engines)
    gpu = get_gpu("H200")
    point = aggregated_point(load_arch("llama-3.1-8b", "bf16"), gpu, Layout(1), kernels_for(gpu, ops)[0],
                             Request("llama-3.1-8b", 1000, 200), 16)  # fmt: skip
    assert {r["metric"]: r["predicted"] for r in rows} == {"ttft_ms_p50": point.ttft_ms, "tpot_ms_p50": point.tpot_ms}
    assert [why for _, why in unpredicted] == [unpredicted[0][1]] and "open-loop arrivals" in unpredicted[0][1]


def test_offline_waves_are_one_prefill_and_output_len_minus_one_steps():
    # 8 prompts prefilled in 0.5 s, then 63 steps of 0.1 s: 8 x 64 tokens in 6.8 s
    assert wave_output_tokens_per_s(0.5, 0.1, 8, 64) == pytest.approx(8 * 64 / 6.8)


def test_a_run_of_operators_only_is_refused_in_one_line(capsys):
    ops_only = RUNS / "20261128T184640Z-cuda-2403e867-transformers-llama-3.1-8b.json"
    with pytest.raises(UsageError, match="operator records only: nothing measured end to end"):
        predict_run([ops_only])
    assert main(["validate", "--run", str(ops_only)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--mode ops" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["validate", "--run", "no/such/run.json"], "--run no/such/run.json: no such run file or directory"),
        (["validate", "--run", str(RUNS), "--peer", "aiconfigurator"], "--run predicts a measured run"),
    ],
)
def test_bad_run_arguments_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_validate_run_json(capsys):
    """The document: a row per configuration and metric, the summary (median |error| beside measured MFU/MBU and the
    article's 50%), how each session was predicted, and what was not predicted with why."""
    args = ["validate", "--json"] + [a for f in H200 for a in ("--run", str(f))]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"rows", "summary", "sessions", "unpredicted"}
    assert len(doc["rows"]) == 14
    row = doc["rows"][0]
    for key in ("session", "mode", "metric", "role", "measured", "predicted", "error", "mfu", "mbu", "peak", "run_file"):
        assert key in row
    assert row["error"] == pytest.approx(row["predicted"] / row["measured"] - 1)
    s = doc["summary"]
    assert s["held_out"] == 14 and s["article_utilization"] == 0.5 and 0 < s["mfu_max"] <= 1
    assert s["held_out_median_abs_error"] == pytest.approx(pd.Series([abs(r["error"]) for r in doc["rows"]]).median())
    (session,) = doc["sessions"]
    assert session == "H200 [cuda-2403e867] 20261128T184529Z" and "serving model" in doc["sessions"][session]["method"]
    assert [u["configuration"].split(" (")[0] for u in doc["unpredicted"]] == ["decode b=1 in=128 out=32"]


def test_validate_run_prints_the_table(capsys):
    assert main(["validate", "--run", str(CPU_SESSION[0].parent), "--run", str(H200[0])]) == 0  # a directory and a file
    out = capsys.readouterr().out
    assert "== H200 [cuda-2403e867] 20261128T184529Z" in out and "median |error|" in out and "the article assumed 50%" in out
    assert "fitted" in out and "held out" in out and "not predicted" in out
