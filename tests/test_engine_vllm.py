"""The real vLLM engine on the bundled model: correct greedy output and a positive measurement."""

from __future__ import annotations

import pytest

from bench.efficiency import MeasureContext
from bench.engines import EngineConfig, make_prompts, start_engine
from bench.offline import measure_decode, measure_prefill, measure_throughput
from core.hardware import Peaks
from core.models import get_model

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def vllm_engine(bundled_model_dir, cpu_dtype):
    engine = start_engine(
        EngineConfig(model=str(bundled_model_dir), device="cpu", dtype=cpu_dtype, max_model_len=256, max_num_seqs=8, kv_cache_gb=1.0)
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def ctx():
    return MeasureContext(seed=0, device="cpu", measured=Peaks("test", 1e12, 40e9))


def test_greedy_completion_is_paris(vllm_engine):
    assert vllm_engine.complete("The capital of France is", max_tokens=8).startswith(" Paris.")


def test_throughput_counts_forced_tokens_and_is_positive(vllm_engine, bundled_model_dir, ctx):
    spec = get_model(str(bundled_model_dir))
    rec = measure_throughput(vllm_engine, spec, batch_size=4, input_len=16, output_len=8, num_prompts=4, ctx=ctx)
    assert rec["output_tokens"] == 4 * 8  # ignore_eos forces every output to full length
    assert rec["output_tokens_per_s"] > 0
    assert rec["total_tokens_per_s"] == pytest.approx(rec["output_tokens_per_s"] * (16 + 8) / 8, rel=1e-3)
    assert 0 < rec["mfu_measured_peak"] < 1 and 0 < rec["mbu_measured_peak"]
    assert rec["mfu"] is None  # a CPU has no datasheet entry


def test_prefill_and_decode_separate(vllm_engine, bundled_model_dir, ctx):
    spec = get_model(str(bundled_model_dir))
    pre = measure_prefill(vllm_engine, spec, batch_size=2, input_len=64, output_len=1, num_prompts=2, ctx=ctx)
    dec = measure_decode(vllm_engine, spec, batch_size=2, input_len=16, output_len=16, num_prompts=2, ctx=ctx)
    assert pre["prefill_tokens_per_s"] > 0 and pre["output_len"] == 1
    assert dec["decode_tokens_per_s"] > 0 and dec["decode_step_ms"] > 0
    assert dec["decode_s"] < dec["elapsed_s"]


def test_prompts_are_seeded_and_isolated():
    a = make_prompts(3, 5, 1000, seed=7)
    b = make_prompts(3, 5, 1000, seed=7)
    assert a == b and all(len(p) == 5 for p in a)
    assert make_prompts(3, 5, 1000, seed=8) != a
