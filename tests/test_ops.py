"""Operator microbenchmarks: shapes read from the model configs, FLOP and byte counts by hand, real timings on this CPU."""

from __future__ import annotations

import json

import pytest

from bench.ops import OPERATORS, plan_cases
from bench.ops_timing import run_case
from core.hardware import Peaks
from core.models import MODEL_DIR
from core.schema import load_document
from core.shapes import shapes_from_config
from fleetcal.cli import main


def test_deepseek_v3_shapes_come_from_its_config():
    # DeepSeek-V3 config.json: hidden 7,168; q_lora_rank 1,536; kv_lora_rank 512; rope 64; nope 128; v 128;
    # 128 heads; dense FFN 18,432; expert FFN 2,048; 1 shared expert; vocabulary 129,280
    s = shapes_from_config(MODEL_DIR / "deepseek-v3", "deepseek-v3")
    assert s.linears["q_a_proj"] == (7168, 1536)
    assert s.linears["q_b_proj"] == (1536, 128 * 192)
    assert s.linears["kv_a_proj"] == (7168, 576)
    assert s.linears["o_proj"] == (128 * 128, 7168)
    assert s.linears["dense_gate_up"] == (7168, 2 * 18432)
    assert s.linears["shared_gate_up"] == (7168, 2 * 2048)
    assert s.linears["lm_head"] == (7168, 129280)
    assert s.expert_k_n == ((7168, 4096), (2048, 7168))
    assert s.mla == {"kv_lora_rank": 512, "rope": 64, "nope": 128, "v": 128}


def test_llama_gqa_shapes_come_from_its_config():
    # Llama-3.1-8B config.json: hidden 4,096; 32 heads, 8 KV heads of 128; FFN 14,336; vocabulary 128,256
    s = shapes_from_config(MODEL_DIR / "llama-3.1-8b", "llama-3.1-8b")
    assert s.linears == {
        "qkv_proj": (4096, 6144),
        "o_proj": (4096, 4096),
        "gate_up": (4096, 28672),
        "down": (14336, 4096),
        "lm_head": (4096, 128256),
    }
    assert (s.heads, s.kv_heads, s.head_dim) == (32, 8, 128)


def test_flop_and_byte_counts_by_hand():
    s = shapes_from_config(MODEL_DIR / "deepseek-v3", "deepseek-v3")
    cases = plan_cases(s, "cuda", ("bf16", "fp8"), quick=True)
    g = next(c for c in cases if c.operator == "gemm" and c.dtype == "fp8" and c.shape["layer"] == "kv_a_proj" and c.shape["m"] == 64)
    assert g.flops == 2 * 64 * 7168 * 576
    assert g.nbytes == 7168 * 576 * 1 + 64 * 7168 * 1 + 64 * 576 * 2  # fp8 weights and input, bf16 output
    a = next(c for c in cases if c.operator == "attention_decode" and c.shape["batch"] == 16)
    # MLA absorbed: 128 heads score against 576-wide keys and sum 512-wide values of one latent per token
    assert a.shape["layout"] == "MLA absorbed"
    assert a.flops == 2 * 16 * 128 * 512 * (576 + 512)
    assert a.nbytes == 16 * 512 * 576 * 2 + 2 * 16 * 128 * (576 + 512) * 2
    p = next(c for c in cases if c.operator == "attention_prefill")
    # not absorbed: 128 heads of 192 (query, key) and 128 (value); causal, so half the square
    assert p.flops == 2 * 128 * 256 * 256 * (192 + 128) / 2
    assert {c.dtype for c in cases if c.operator in ("gemm", "grouped_gemm")} == {"bf16", "fp8"}
    assert {c.dtype for c in cases if c.operator.startswith("attention")} == {"bf16"}
    assert a.impl.endswith("KV cycled") and not p.impl.endswith("KV cycled"), (
        "decode reads its cache from memory; a prefill its own fresh keys"
    )


def test_a_cycled_decode_attention_computes_what_one_cache_does():
    import torch

    from bench.ops import _attention, _mla_decode

    for build in (
        lambda c: _attention(2, 4, 2, 1, 100, 32, 32, False, "fp32", "cpu", c),
        lambda c: _mla_decode(2, 4, 100, 48, 32, "fp32", "cpu", c),
    ):
        torch.manual_seed(0)
        want = build(1)()()
        torch.manual_seed(0)
        call = build(3)()
        for _ in range(4):
            assert torch.equal(call(), want)


def test_operator_filter_keeps_only_the_named_operators():
    s = shapes_from_config(MODEL_DIR / "smollm2-135m", "smollm2-135m")
    assert {c.operator for c in plan_cases(s, "cpu", ("fp32",), True, ("gemm", "copy"))} == {"gemm", "copy"}
    # a dense model; one layer's elementwise work is timed with vLLM's kernels, in full sweeps only
    assert {c.operator for c in plan_cases(s, "cpu", ("fp32",), True)} == set(OPERATORS) - {"grouped_gemm", "layer_elementwise"}


def test_a_cpu_case_is_timed_and_its_rates_follow_from_flops_bytes_and_time():
    s = shapes_from_config(MODEL_DIR / "smollm2-135m", "smollm2-135m")
    case = next(c for c in plan_cases(s, "cpu", ("fp32",), True) if c.operator == "gemm" and c.shape["m"] == 64)
    rec = run_case(case, "cpu", {}, {"fp32": Peaks("measured", 1e12, 1e10)})
    assert rec["time_ms"] > 0 and rec["repeats"] >= 3
    assert rec["tflops"] == pytest.approx(case.flops / (rec["time_ms"] / 1e3) / 1e12, rel=1e-3)
    assert rec["mfu_measured_peak"] == pytest.approx(rec["tflops"] / 1.0, rel=1e-3)
    assert rec["mfu"] is None, "no datasheet for a CPU"


def test_bench_ops_mode_writes_one_record_per_case(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["bench", "--mode", "ops", "--model", "smollm2-135m", "--load-format", "dummy",
            "--operators", "gemm,attention_decode", "--microbench", "quick", "--out", str(out)]  # fmt: skip
    assert main(args) == 0  # in this process: torch and transformers are loaded already
    stdout = capsys.readouterr().out
    (path,) = out.glob("*.json")
    doc = load_document(path)
    ops = [r for r in doc["records"] if r["mode"] == "ops"]
    assert {r["operator"] for r in ops} == {"gemm", "attention_decode"}
    assert all(r["status"] in ("ok", "suspect") and r["tflops"] >= 0 for r in ops)
    keys = {(r["operator"], json.dumps(r["shape"], sort_keys=True), r["dtype"]) for r in ops}
    assert len(keys) == len(ops), "one record per case"
    assert doc["run"]["device"]["id"] in path.name
    assert "ops:" in stdout
