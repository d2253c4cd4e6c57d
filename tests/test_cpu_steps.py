"""The CPU step model: vLLM's own CPU kernels timed at a model's shapes, curves read off them, the
engine overhead fitted on small batches only, and every other measured step predicted."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from bench import ops_vllm
from bench.ops import plan_cases
from bench.ops_timing import run_case
from core.errors import UsageError
from core.models import MODEL_DIR
from core.paths import RESULTS_DIR, RUNS_DIR
from core.shapes import shapes_from_config
from estimator.cpu_steps import FIT_MAX_BATCH, Curve, UndeterminedError, fit_overhead
from estimator.cpu_validation import REFERENCE_MODEL, validate
from estimator.operators import load_ops
from estimator.runs import load_runs

VLLM_CPU = ops_vllm.available("cpu")
needs_vllm = pytest.mark.skipif(not VLLM_CPU, reason="vLLM's CPU kernels do not load on this machine")


def _curve(points: dict[float, float]) -> Curve:
    return Curve.of(pd.DataFrame({"x": list(points), "seconds": list(points.values())}))


def test_a_curve_interpolates_log_log_and_grows_in_proportion_past_its_last_point():
    c = _curve({1: 1e-3, 100: 1e-1})
    assert c(1) == pytest.approx(1e-3) and c(100) == pytest.approx(1e-1)
    assert c(10) == pytest.approx(1e-2)  # halfway in log x is halfway in log t
    assert c(0.5) == pytest.approx(1e-3)  # flat before the first point: launch-bound
    assert c(400) == pytest.approx(4e-1)  # proportional past the last: bound by compute or bytes


def test_prefill_attention_grows_as_the_square_of_the_prompt_past_its_last_point():
    # one prompt of L tokens scores L (L + 1) / 2 query-key pairs: twice the prompt is four times the work (a
    # 4,085-token prompt of Azure's conversation trace is past the longest prompt timed, 2,048)
    pts = pd.DataFrame({"x": [512.0, 2048.0], "seconds": [4e-3, 6e-2]})
    assert Curve.of(pts, power=2)(4096) == pytest.approx(4 * 6e-2) and Curve.of(pts)(4096) == pytest.approx(2 * 6e-2)
    assert Curve.of(pts, power=2)(1024) == Curve.of(pts)(1024)  # inside the points the curve is measured, not modelled


def test_a_curve_never_decreases_a_slow_outlier_is_cut_to_the_next_larger_shape():
    c = _curve({1: 5e-3, 4: 1e-3, 16: 2e-3})  # M = 1 measured slower than M = 4 on a noisy machine
    assert c(1) == pytest.approx(1e-3)
    assert all(c(a) <= c(b) for a, b in [(1, 2), (2, 4), (4, 8), (8, 16), (16, 64)])


def test_the_overhead_fit_recovers_known_terms():
    per_step, per_seq = 0.009, 0.0004
    pts = [(1, b, per_step + per_seq * b, 0.03 + 0.001 * b) for b in (1, 2, 4, 8, 16, 32)]
    o = fit_overhead("decode", pts)
    assert o.per_step == pytest.approx(per_step, rel=1e-6) and o.per_sequence == pytest.approx(per_seq, rel=1e-6)
    assert o.fitted_on == 6


def test_the_overhead_fit_refuses_batches_that_cannot_separate_its_terms():
    with pytest.raises(UndeterminedError, match="per-sequence overhead"):
        fit_overhead("decode", [(1, 4, 0.01, 0.05), (1, 8, 0.012, 0.06)])  # a 2x range only
    with pytest.raises(UndeterminedError, match="per-step overhead"):
        fit_overhead("decode", [])


def test_a_term_the_noise_hides_is_named_undetermined_not_silently_bounded():
    pts = [(1, b, 0.01 - 0.0001 * b + (0.002 if b % 2 else -0.002), 0.05) for b in (1, 2, 4, 16, 32)]  # residuals fall with batch
    o = fit_overhead("decode", pts)
    assert o.per_sequence == 0.0 and o.per_step > 0
    assert any(u.startswith("per-sequence overhead") for u in o.undetermined)
    clean = fit_overhead("decode", [(1, b, 0.009 + 0.0004 * b, 0.05) for b in (1, 2, 4, 16, 32)])
    assert clean.undetermined == (), "exact data pins both terms down"


@needs_vllm
def test_vllms_cpu_gemm_dispatch_computes_the_linear_layer():
    import torch

    w = (torch.randn(384, 256) * 0.1).to(torch.bfloat16)
    x = (torch.randn(5, 256) * 0.1).to(torch.bfloat16)
    layer = ops_vllm.linear_layer(w)
    got = layer.cpu_linear(x, layer.weight, None).float()
    assert torch.allclose(got, (x.float() @ w.float().t()), atol=2e-2, rtol=2e-2)


@needs_vllm
def test_the_full_sweep_adds_vllm_kernels_on_the_engines_thread_count():
    s = shapes_from_config(MODEL_DIR / "smollm2-135m", "smollm2-135m")
    cases = [c for c in plan_cases(s, "cpu", ("bf16", "fp32"), quick=False) if c.impl.startswith("vllm")]
    ops = {c.operator for c in cases}
    assert ops == {"gemm", "attention_decode", "attention_prefill", "sampling", "layer_elementwise"}
    assert {c.dtype for c in cases} == {"bf16"}, "vLLM's kernels are timed in the run's precision"
    threads = ops_vllm.engine_threads()
    assert all(c.threads == threads for c in cases) and 1 <= threads
    small = [c for c in cases if c.shape.get("m") == 1 or c.shape.get("batch") == 1 or c.shape.get("tokens") == 1][:6]
    for c in small:
        rec = run_case(c, "cpu", {}, {})
        assert rec["time_ms"] > 0 and rec["threads"] == threads and rec["impl"] == c.impl


@needs_vllm
def test_vllm_sampling_and_attention_cases_run_real_kernels():
    import torch

    tokens = ops_vllm.sampling(3, 1000, "bf16")()()
    assert tokens.shape == (3,) and int(tokens.min()) >= 0 and int(tokens.max()) < 1000
    out = ops_vllm.attention(2, 4, 2, 64, 1, 200, "bf16")()()
    assert out.shape == (2, 4, 64) and torch.isfinite(out.float()).all()
    out = ops_vllm.attention(1, 4, 2, 64, 64, 64, "bf16")()()  # a prefill of 64 tokens, causal
    assert out.shape == (64, 4, 64) and torch.isfinite(out.float()).all()
    torch.manual_seed(0)
    one = ops_vllm.attention(2, 4, 2, 64, 1, 200, "bf16")()
    torch.manual_seed(0)
    cycled = ops_vllm.attention(2, 4, 2, 64, 1, 200, "bf16", copies=3)()
    want = one().clone()
    for _ in range(4):  # every copy of the cache holds the same values: cycling changes where the bytes come from, not the result
        assert torch.equal(cycled(), want)


@needs_vllm
def test_decode_attention_reads_a_cycled_cache_and_prefill_its_own():
    s = shapes_from_config(MODEL_DIR / "smollm2-135m", "smollm2-135m")
    cases = [c for c in plan_cases(s, "cpu", ("bf16",), quick=False) if c.impl.startswith("vllm") and c.operator.startswith("attention")]
    assert {c.impl for c in cases if c.operator == "attention_decode"} == {"vllm cpu_attention_with_kv_cache, KV cycled"}
    assert {c.impl for c in cases if c.operator == "attention_prefill"} == {"vllm cpu_attention_with_kv_cache"}


def _measured_cpu() -> str | None:
    """The CPU measured with scripts/measure_cpu_steps.sh's whole sweep (vLLM-kernel curves of both its models); a CPU
    measured for the serve comparison alone (the bundled model's steps, tests/test_sim_vs_serve.py) is not it."""
    ops = load_ops(RESULTS_DIR)
    v = ops[ops["impl"].fillna("").str.startswith("vllm") & ops["device_name"].str.contains(r"\[cpu-")]
    models = v.groupby("device_name")["model"].nunique()
    return str(models.idxmax()) if not models.empty and models.max() >= 2 else None


def test_the_committed_cpu_steps_are_predicted_held_out():
    """The step model on every committed measuring session of this CPU: held-out steps within the measurement issue's 15%.

    Four sessions give 13.9% pooled (13.3 / 18.7 / 18.3 / 12.4% each; the fourth is the first whose decode attention was
    timed over a cycled KV cache). 15% is also a bound a broken model crosses on the same records: without the engine
    overhead the median is 23.0%, with GEMMs as fast as on both cores (1.6x) 18.4%."""
    dev = _measured_cpu()
    assert dev is not None, "the committed results hold vLLM-kernel operator curves of a CPU"
    v = validate(load_runs(RESULTS_DIR), load_ops(RESULTS_DIR), dev)
    df, over = v.steps, v.latest_overhead
    fitted, held = df[df["role"] == "fitted"], df[df["role"] == "held out"]
    assert set(fitted["model"]) == {REFERENCE_MODEL} and fitted["batch"].max() <= FIT_MAX_BATCH and set(fitted["phase"]) == {"decode"}
    assert held["batch"].max() > FIT_MAX_BATCH and len(set(held["model"])) >= 2, "larger batches and another model are held out"
    assert held["error"].abs().median() <= 0.15
    parts = held[["gemm_ms", "attention_ms", "elementwise_ms", "sampling_ms", "overhead_ms"]].sum(axis=1)
    assert np.allclose(parts, held["predicted_ms"]), "the prediction is the sum of its parts"
    assert over.per_step > 0


def _predict_args(**kw: object) -> argparse.Namespace:
    """predict's own parser, its defaults, then ``kw``: a flag added to predict is never missing here."""
    from fleetcal.commands.predict import add_cli_args

    p = argparse.ArgumentParser()
    add_cli_args(p)
    base = vars(p.parse_args(["--model", "smollm2-360m", "--device", "cpu", "--output-len", "64", "--results", str(RESULTS_DIR), "--json"]))
    return argparse.Namespace(**{**base, **kw})


def test_predict_on_the_cpu_uses_only_the_calibration_of_the_cpu_it_runs_on(monkeypatch):
    from fleetcal.commands import predict as cli_predict
    from fleetcal.commands import predict_cpu

    dev = _measured_cpu()
    ident = dev.split("[")[1].rstrip("]")
    monkeypatch.setattr(predict_cpu, "describe_cpu", lambda: {"name": "a measured CPU", "id": ident, "flags": ["avx512_bf16"]})
    out = cli_predict.predict(_predict_args(batch_per_gpu=16))
    dec = out["breakdown_ms"]["decode"]
    assert set(dec) == {"gemm", "attention", "elementwise", "sampling", "overhead"}
    assert out["step_ms"] == pytest.approx(sum(dec.values()))
    assert out["output_tokens_per_s_per_gpu"] > 0 and dev in out["device"]
    target = 0.8 * out["tokens_per_s_per_user"]  # a slower per-user target allows a larger batch
    more = cli_predict.predict(_predict_args(phase="decode", tokens_per_s_per_user=target))
    assert more["batch_per_gpu"] > 16 and more["tokens_per_s_per_user"] >= target
    monkeypatch.setattr(predict_cpu, "describe_cpu", lambda: {"name": "another CPU", "id": "cpu-00000000", "flags": []})
    with pytest.raises(UsageError, match="has not been measured.*measure_cpu_steps"):
        cli_predict.predict(_predict_args())


def test_ops_records_of_vllm_kernels_carry_their_thread_count():
    ops_files = sorted(RUNS_DIR.glob("*cpu-*.json"))
    recs = [r for f in ops_files for r in json.loads(f.read_text())["records"] if r.get("impl", "").startswith("vllm")]
    assert recs and all(r["threads"] >= 1 for r in recs)


def test_run_files_an_hour_apart_are_different_sessions():
    from estimator.cpu_validation import sessions

    # consecutive starts at most an hour apart chain into one session; 22:42 -> 03:11 is a new one
    files = ["20261129T031117Z-a.json", "20261128T212123Z-b.json", "20261128T221622Z-c.json", "20261128T224239Z-d.json",
             "20261129T040859Z-e.json"]
    assert sessions(files) == {"20261128T212123Z-b.json": "20261128T212123Z", "20261128T221622Z-c.json": "20261128T212123Z",
                               "20261128T224239Z-d.json": "20261128T212123Z", "20261129T031117Z-a.json": "20261129T031117Z",
                               "20261129T040859Z-e.json": "20261129T031117Z"}  # fmt: skip
