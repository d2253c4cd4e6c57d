"""The accuracy gate: the serving model against the committed published end-to-end figures (core/data/validation.toml)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import estimator.validation as v
from core.hardware import get_gpu
from core.models import load_config
from core.paths import RESULTS_DIR
from estimator.arch import Layout, load_arch
from estimator.kernels import Knob, kernels_for, with_value
from estimator.operators import load_ops
from estimator.serving import step
from fleetcal.cli import main

# Median absolute error over the gated rows when this bound was set: 5.8% (122 rows: fused add-and-norm kernels counted,
# the database's GEMM efficiency held beyond its largest measured M, row-parallel GEMMs at their own shape); the bound
# leaves 0.7 points above it. The table is deterministic (no machine noise): a change that makes the model worse by that
# much over these rows fails here, and says why in its commit if it moves the bound.
MEDIAN_BOUND_PCT = 6.5


@pytest.fixture(scope="module")
def table():
    rows, sources = v.load_rows()
    return rows, sources, v.validate(rows, load_ops(RESULTS_DIR, warn=False))


def test_the_table_holds_70_gated_published_rows_dense_and_moe_on_four_gpus_each_with_its_source(table):
    rows, sources, _ = table
    gated = [r for r in rows if r.gate]
    assert len(gated) >= 70  # issue 34: the gate has at least 70 rows
    assert {"llama-3.1-8b", "llama-2-70b", "deepseek-v3"} <= {r.model for r in gated}  # dense and MoE
    assert {"H100", "H200", "A100", "L40S"} <= {r.gpu for r in gated}
    assert all(r.source in sources and sources[r.source]["where"] for r in rows)
    assert len({r.id for r in rows}) == len(rows)


def test_the_gate_covers_two_model_families_besides_llama_and_deepseek(table):
    """Issue 33: the validation gate covers at least two model families besides Llama and DeepSeek (Mixtral's v0.17 rows and
    gpt-oss-20b's B200 rows, each with why its conditions are read from its source in its note)."""
    rows, _, _ = table
    families = {load_config(r.model)[0]["model_type"] for r in rows if r.gate}
    assert len(families - {"llama", "deepseek_v3"}) >= 2, families


def test_the_median_error_stays_within_the_gate(table):
    s = v.summary(table[2])
    assert s["rows"] >= 70
    assert s["median_abs_error_pct"] <= MEDIAN_BOUND_PCT, s


def test_the_gate_fails_a_worse_model(table, monkeypatch):
    # the same rows with every GEMM reaching 70% of what it does now: the median must cross the bound
    def slower(gpu, ops=None, fp8_block_scaled=False, **engine):  # with_value moves the database's GEMMs by the same factor
        k, src = kernels_for(gpu, ops, fp8_block_scaled, **engine)
        for cls in ("gemm", "gemm_bf16", "grouped_gemm"):
            for part in ("compute", "memory"):
                k = with_value(k, Knob(part, cls), getattr(k.ops[cls], part) * 0.7)
        return k, src

    monkeypatch.setattr(v, "kernels_for", slower)
    assert v.summary(v.validate(table[0], load_ops(RESULTS_DIR, warn=False)))["median_abs_error_pct"] > MEDIAN_BOUND_PCT


def test_a_static_batch_is_one_prefill_then_output_len_minus_one_decode_steps():
    row = v.Row(id="t", source="s", model="llama-2-7b", gpu="A100", weight_dtype="fp16", kv_dtype="bf16", num_gpus=1, kind="static_batch",
                counts="output", per="gpu", value=1.0, batch=60, input_len=128, output_len=2048)  # fmt: skip
    a, gpu, lay = load_arch("llama-2-7b", "fp16"), get_gpu("A100"), Layout(1)
    k = row.kernels(gpu, None, a)  # the engine the row names (kv_rule, TensorRT-LLM), its measured kernels
    pre = step(a, gpu, lay, k, "prefill", tokens_per_gpu=60 * 128, prompt_len=128)
    dec = step(a, gpu, lay, k, "decode", batch_per_gpu=60, context=128 + 1024)
    assert pre.tokens == 60 * 128
    assert v.predict_row(row)[0] == pytest.approx(60 * 2048 / (pre.seconds + 2047 * dec.seconds), rel=1e-9)


def test_max_load_holds_what_the_engines_kv_rule_admits():
    row = v.Row(id="t", source="s", model="llama-3.1-8b", gpu="H100", weight_dtype="fp8", kv_dtype="fp8", num_gpus=1, kind="max_load",
                counts="output", per="instance", value=1.0, input_len=1000, output_len=2000, kv_fraction=0.95)  # fmt: skip
    _, trt = v.predict_row(row)
    _, vllm = v.predict_row(replace(row, kv_rule="vllm", kv_fraction=0.9))
    assert "KV room" in vllm and "KV room" in trt
    # TensorRT-LLM reserves 3,000 tokens a request, vLLM holds 2,000 on average: more sequences in flight under vLLM's rule
    # (compared by sequences: the two engines' steps differ besides, vLLM padding its CUDA graphs and TensorRT-LLM not)
    batch = {e: int(how.split("batch ")[1].split()[0].replace(",", "")) for e, how in (("trt", trt), ("vllm", vllm))}
    assert 0 < batch["trt"] < batch["vllm"]


def test_validate_prints_every_row_and_the_summary(capsys):
    assert main(["validate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == len(v.load_rows()[0]) and out["summary"]["median_abs_error_pct"] <= MEDIAN_BOUND_PCT
    assert all(set(r) >= {"id", "published", "predicted", "error_pct", "source"} for r in out["rows"])


