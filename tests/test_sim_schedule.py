"""The simulated engine against schedules worked out by hand, step by step (a step of the AffineSteps model costs a fixed
10 ms, plus 1 ms a token where said), and against queueing theory."""

from __future__ import annotations

import pytest

from estimator.sim.engine import EngineRules
from estimator.sim.fleet import Fleet, Pool, simulate
from estimator.sim.request import Req
from estimator.sim.results import summarize
from estimator.sim.steps import AffineSteps
from estimator.sim.traffic import Lengths, generated

STEP = AffineSteps(0.01)


def _run(reqs, rules, steps=STEP, unit=0, **pool):
    run = simulate(Fleet(Pool(rules, steps, **pool)), reqs, unit, trace=True)
    assert run.pages_held_at_end == 0, "every page comes back"
    return run, {q.rid: q for q in run.requests}


def _times(run, rid):
    return [round(t, 6) for t in run.trace[rid]]


def test_a_token_budget_forces_chunked_prefill():
    """Budget 64: A (100-token prompt) and B (30) arrive at 0.
    step 1: A's first chunk, 64 tokens (the budget);  step 2: A's last 36 and B's first 28 -> A's first token at 0.02;
    step 3: A decodes (1 token) and B's last 2 -> B's first token at 0.03; then both decode a token a step:
    A's 5 tokens at 0.02 .. 0.06, B's 3 at 0.03 .. 0.05."""
    run, q = _run([Req(0, 0.0, 100, 5), Req(1, 0.0, 30, 3)], EngineRules(64, 8, 16, 100))
    assert _times(run, 0) == [0.02, 0.03, 0.04, 0.05, 0.06]
    assert _times(run, 1) == [0.03, 0.04, 0.05]
    assert (q[0].first_s, q[1].finish_s) == pytest.approx((0.02, 0.05))


def test_a_kv_room_that_runs_out_preempts_the_last_admitted_and_recomputes_it():
    """6 pages of 4 tokens (7 blocks, one of them vLLM's null block); A and B (8-token prompts, 8 output tokens) arrive at 0.
    step 1 (to 0.01): both prompts, 2 pages each (2 left); first tokens at 0.01.
    step 2: token 9 of each needs a third page: the last 2 taken. Steps 3-5: tokens 10-12 fit in the third pages.
    step 6 (from 0.05): token 13 needs a fourth page each, none is free: A (admitted first) asks, B (the last admitted) is
    preempted, its 3 pages freed, A takes one. B waits, its 13 tokens (prompt and 5 outputs) to recompute: 4 pages, 2 free.
    A's tokens 6-8 at 0.06-0.08, it finishes and frees 4 pages; step 9 recomputes B's 13 tokens and samples its 6th
    token (0.09, 40 ms after its 5th); tokens 7 and 8 at 0.10 and 0.11."""
    run, q = _run([Req(0, 0.0, 8, 8), Req(1, 0.0, 8, 8)], EngineRules(64, 4, 4, 7))
    assert _times(run, 0) == [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]
    assert _times(run, 1) == [0.01, 0.02, 0.03, 0.04, 0.05, 0.09, 0.10, 0.11]
    assert (q[0].preemptions, q[1].preemptions) == (0, 1)
    assert summarize(run)["preemptions"] == 1


def test_a_prefix_hit_skips_the_cached_blocks():
    """Steps cost 10 ms + 1 ms a token; 16-token pages, one hash unit per page. A (64 tokens, units 0-3) prefills in
    74 ms and decodes its second token in 11 ms. B, the same prompt at 1 s, finds 3 units cached (never the last prompt
    token: vLLM recomputes the last block) and prefills 16 tokens: 26 ms to its first token."""
    steps = AffineSteps(0.01, 0.001)
    a, b = Req(0, 0.0, 64, 2, ids=(0, 1, 2, 3)), Req(1, 1.0, 64, 2, ids=(0, 1, 2, 3))
    run, q = _run([a, b], EngineRules(8192, 8, 16, 100), steps, unit=16)
    assert q[0].first_s == pytest.approx(0.074) and q[0].finish_s == pytest.approx(0.085)
    assert q[1].first_s - 1.0 == pytest.approx(0.026) and q[1].cached == 48
    assert summarize(run)["prefix_cache_hit_share"] == pytest.approx(48 / 128)


def test_one_at_a_time_is_an_md1_queue():
    """max_num_seqs 1 and 10-token replies: each request holds the engine for 10 steps of 10 ms (1 prefill, 9 decode),
    a deterministic service of 0.1 s; Poisson arrivals at 5/s make an M/D/1 queue at utilisation 0.5, whose mean wait is
    rho / (2 mu (1 - rho)) = 0.05 s (Pollaczek-Khinchine): mean E2E 0.15 s. 20,000 requests: within 3%.
    Little's law on the same run: the sampled count in the system over time = rate x mean E2E, within 10% (200 samples)."""
    reqs = generated(20_000, 5.0, 1.0, Lengths("fixed", 16, 10), seed=1)
    run, _ = _run(reqs, EngineRules(64, 1, 16, 100))
    s = summarize(run)
    assert s["e2el_ms"]["mean"] == pytest.approx(150, rel=0.03)
    assert s["ttft_ms"]["mean"] == pytest.approx(50 + 10, rel=0.05)  # the wait, then one prefill step
    in_system = [w + r for w, r in zip(run.series["waiting"], run.series["running"])]
    assert sum(in_system) / len(in_system) == pytest.approx(5.0 * s["e2el_ms"]["mean"] / 1000, rel=0.1)
    assert not s["saturated"] and s["gpu_busy_share"] == pytest.approx(0.5, abs=0.02)


def test_past_capacity_the_queue_grows_and_is_called_saturated():
    """The same engine serves 10 requests/s: at 20/s the queue grows by about half the arrivals, no percentile is a figure
    of the rate; at 8/s (utilisation 0.8) it is stationary, and so is a bursty 5/s."""
    rules, lengths = EngineRules(64, 1, 16, 100), Lengths("fixed", 16, 10)
    over = summarize(_run(generated(4000, 20.0, 1.0, lengths, seed=2), rules)[0])
    under = summarize(_run(generated(4000, 8.0, 1.0, lengths, seed=2), rules)[0])
    assert over["saturated"] and over["ttft_ms"]["p99"] is None
    assert over["in_system_growth"] == pytest.approx(0.5 * over["arrivals_between"], rel=0.2)
    assert over["request_throughput_per_s"] == pytest.approx(10, rel=0.05), "at saturation it serves its capacity"
    assert not under["saturated"] and under["ttft_ms"]["p99"] is not None
    # bursts (gamma gaps of shape 0.1: squared CV 10) swing the queue without a trend: still not saturated at 5/s
    bursty = summarize(_run(generated(4000, 5.0, 0.1, lengths, seed=2), rules)[0])
    assert not bursty["saturated"] and bursty["in_system_noise"] > 2 * under["in_system_noise"]


def test_at_a_low_rate_ttft_is_one_prefill_step_and_tpot_one_decode_step():
    """10 ms a step + 1 ms a token, requests 100 s apart: TTFT = one 100-token prefill step (110 ms), TPOT = one 1-token
    decode step (11 ms), exactly."""
    reqs = [Req(i, 100.0 * i, 100, 20) for i in range(20)]
    s = summarize(_run(reqs, EngineRules(8192, 8, 16, 1000), AffineSteps(0.01, 0.001))[0])
    assert s["ttft_ms"]["p50"] == pytest.approx(110) and s["ttft_ms"]["p99"] == pytest.approx(110)
    assert s["tpot_ms"]["p50"] == pytest.approx(11) and s["itl_ms"]["p99"] == pytest.approx(11, rel=1e-4)
