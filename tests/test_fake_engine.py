"""The offline modes' logic on a fake engine implementing the ``Engine`` protocol: waves, budgets, decode pairs, checks.

The fake reports the time its clock model gives (no sleeping, no real clock), so every expected figure is derived by
hand from that model; the real engine is driven in test_engine_vllm.py.
"""

from __future__ import annotations

import pytest

from bench.efficiency import MeasureContext
from bench.engines import Engine
from bench.offline import DECODE_REPEATS, MAX_WAVES, measure_decode, measure_prefill, measure_throughput
from core.hardware import Peaks
from core.models import get_model

PREFILL_S_PER_TOKEN = 1e-4
STEP_S = 0.01  # one decode step of the whole batch


class FakeEngine:
    """Prefill costs PREFILL_S_PER_TOKEN per prompt token, each further output token a STEP_S step of the batch."""

    vocab_size = 5000

    def __init__(self, jitter: list[float] | None = None, short_by: int = 0):
        self.calls: list[tuple[int, int]] = []  # (prompts, output_len) per generate call
        self.jitter = list(jitter or [])  # extra seconds added to successive full-length runs
        self.short_by = short_by

    def generate(self, prompts: list[list[int]], output_len: int) -> tuple[float, int]:
        self.calls.append((len(prompts), output_len))
        seconds = sum(len(p) for p in prompts) * PREFILL_S_PER_TOKEN + (output_len - 1) * STEP_S
        if output_len > 1 and self.jitter:
            seconds += self.jitter.pop(0)
        return seconds, len(prompts) * output_len - self.short_by

    def complete(self, text: str, max_tokens: int) -> str:
        return text

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def spec():
    return get_model("smollm2-135m")


CTX = MeasureContext(seed=0, device="cpu", measured=Peaks("fake", 1e12, 1e10))


def test_the_fake_is_an_engine():
    engine: Engine = FakeEngine()
    assert engine.generate([[1, 2]], 3) == (2 * PREFILL_S_PER_TOKEN + 2 * STEP_S, 3)


def test_throughput_submits_the_prompts_in_waves_after_one_uncounted_warm_up(spec):
    engine = FakeEngine()
    rec = measure_throughput(engine, spec, batch_size=4, input_len=10, output_len=5, num_prompts=10, ctx=CTX)
    assert engine.calls == [(4, 4), (4, 5), (4, 5), (2, 5)]  # warm-up (4 tokens), then 10 prompts in waves of 4
    seconds = 10 * 10 * PREFILL_S_PER_TOKEN + 3 * 4 * STEP_S
    assert rec["num_prompts"] == 10 and rec["output_tokens"] == 50
    assert rec["output_tokens_per_s"] == pytest.approx(50 / seconds, rel=1e-3)
    assert rec["total_tokens_per_s"] == pytest.approx((50 + 100) / seconds, rel=1e-3)


def test_without_a_prompt_count_waves_run_until_the_budget_is_spent(spec):
    engine = FakeEngine()
    wave_s = 2 * 10 * PREFILL_S_PER_TOKEN + 4 * STEP_S
    ctx = MeasureContext(seed=0, device="cpu", budget_s=3.5 * wave_s)
    rec = measure_throughput(engine, spec, batch_size=2, input_len=10, output_len=5, num_prompts=None, ctx=ctx)
    assert rec["num_prompts"] == 2 * 4  # the fourth wave crosses the budget; no fifth starts
    never_ends = MeasureContext(seed=0, device="cpu", budget_s=1e9)
    assert measure_throughput(FakeEngine(), spec, 2, 10, 5, None, never_ends)["num_prompts"] == 2 * MAX_WAVES


def test_a_short_answer_is_an_error_not_a_rate(spec):
    with pytest.raises(RuntimeError, match="expected 20"):
        measure_throughput(FakeEngine(short_by=1), spec, 4, 10, 5, 4, CTX)
    with pytest.raises(RuntimeError, match="expected 20"):
        measure_decode(FakeEngine(short_by=1), spec, 4, 10, 5, 4, CTX)


def test_prefill_counts_prompt_tokens_with_one_output_token(spec):
    engine = FakeEngine()
    rec = measure_prefill(engine, spec, batch_size=4, input_len=50, output_len=8, num_prompts=8, ctx=CTX)
    assert {n for _, n in engine.calls} == {1}
    assert rec["prefill_tokens_per_s"] == pytest.approx(1 / PREFILL_S_PER_TOKEN, rel=1e-3)
    assert rec["time_to_first_token_ms"] == pytest.approx(4 * 50 * PREFILL_S_PER_TOKEN * 1000, rel=1e-3)


def test_decode_is_the_full_run_minus_the_run_to_one_token(spec):
    rec = measure_decode(FakeEngine(), spec, batch_size=8, input_len=100, output_len=11, num_prompts=8, ctx=CTX)
    assert rec["repeats"] == 1  # a prompt count means one pair
    assert rec["decode_step_ms"] == pytest.approx(STEP_S * 1000)
    assert rec["decode_tokens_per_s"] == pytest.approx(8 / STEP_S)
    assert rec["prefill_s"] == pytest.approx(8 * 100 * PREFILL_S_PER_TOKEN)


def test_decode_reports_the_median_pair_while_the_budget_lasts(spec):
    jitter = [0.0, 0.5, 0.1, 0.0, 0.3, 0.0, 0.0]  # per full-length run: the warm-up, then the pairs
    ctx = MeasureContext(seed=0, device="cpu", budget_s=1e9)
    rec = measure_decode(FakeEngine(jitter=jitter), spec, batch_size=2, input_len=10, output_len=11, num_prompts=None, ctx=ctx)
    assert rec["repeats"] == DECODE_REPEATS == 5
    assert rec["decode_s"] == pytest.approx(10 * STEP_S + 0.1)  # of extras 0.5, 0.1, 0.0, 0.3, 0.0 the median is 0.1
