"""The short operator sweep (`fleetcal bench --mode ops --ops-range sweep`): the cases a plan's configurations reach."""

from __future__ import annotations

import pytest

from bench import ops, ops_reach, ops_vllm_cases
from core.models import get_model

CURVES = ("gemm", "attention_decode", "attention_prefill", "layer_elementwise", "sampling")


@pytest.fixture
def cases(monkeypatch):
    """Every case of the bundled model's shapes on a CPU where vLLM's kernels run: the torch ones and vLLM's (built lazily:
    nothing is timed or allocated; vLLM's thread rule is stood in for, so vLLM is not imported)."""
    monkeypatch.setattr(ops_vllm_cases, "engine_threads", lambda: 1)
    s = get_model("smollm2-135m").shapes
    torch_cases = ops._all_cases(s, "cpu", ("fp32", "bf16"), quick=False)
    vllm_cases = [ops.Case(**spec) for spec in ops_vllm_cases.case_specs(s, "bf16", ops._copies)]
    return [c for c in torch_cases + vllm_cases if c.operator in CURVES]


def test_the_default_sweep_keeps_vllms_cases_up_to_one_grid_point_past_its_reach(cases):
    """bench's defaults: batches up to 32, 32-token prompts, 64-token replies. A step's rows reach 32 x 32 = 1,024 (a
    wave's prefill), decode attention 32 x (32 + 64) = 3,072 KV tokens, prefill attention 32 tokens, sampling 32
    sequences: each axis keeps its grid (bench/ops_vllm_cases.py) up to the first point at or past that."""
    limits = ops_reach.reach(32, 32, 64)
    assert limits == {"m": 1024, "tokens": 1024, "kv_tokens": 3072, "context": 32, "batch": 32}
    kept = ops_reach.within(cases, limits)
    assert {c.impl.split()[0] for c in kept} == {"vllm"}, "the torch twins of vLLM's operators are left out"
    by_op = {op: sorted({ops_reach.axis(c.operator, c.shape)[1] for c in kept if c.operator == op}) for op in CURVES}
    assert by_op["gemm"] == [1, 4, 16, 64, 256, 1024]
    assert by_op["attention_decode"] == [128, 512, 1024, 2048, 4096]  # batch x context of (1|8|32) x (128|512|2048), <= 4,096
    assert by_op["attention_prefill"] == [128]
    assert by_op["sampling"] == [1, 8, 32]
    assert by_op["layer_elementwise"] == [1, 8, 32, 128, 512, 2048]
    assert len(kept) < len([c for c in cases if c.impl.startswith("vllm")]) < len(cases)


def test_a_reach_past_the_grid_keeps_every_case(cases):
    kept = ops_reach.within(cases, ops_reach.reach(100_000, 100_000, 100_000))
    assert len(kept) == len([c for c in cases if c.impl.startswith("vllm")])
