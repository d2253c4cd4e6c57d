"""What the simulator reports against the client's own metric code, and the traffic, routers, pools and MTP it runs."""

from __future__ import annotations

import numpy as np
import pytest

from bench.metrics import RequestTimeline, serving_metrics
from core.traces import load_trace
from estimator.sim.engine import EngineRules
from estimator.sim.fleet import Fleet, Pool, simulate
from estimator.sim.request import Req
from estimator.sim.results import summarize
from estimator.sim.stats import LogHistogram
from estimator.sim.steps import AffineSteps
from estimator.sim.traffic import Lengths, admissible, generated, replay

STEP = AffineSteps(0.01)


def test_the_summary_is_what_the_serving_client_computes_from_the_same_timelines():
    """A loaded run with chunking and preemptions, every token's time traced: bench.metrics.serving_metrics (what a real
    server's run records) on those timelines gives the summary's TTFT, TPOT, E2E and throughput exactly, and its ITL
    within the histogram's 0.005%."""
    reqs = generated(400, 30.0, 1.0, Lengths("uniform", 200, 40, range_ratio=0.9), seed=3)
    run = simulate(Fleet(Pool(EngineRules(256, 16, 16, 120), AffineSteps(0.002, 1e-5, 1e-7))), reqs, trace=True)
    s = summarize(run)
    assert s["preemptions"] > 0, "the KV room is small enough to preempt"
    timelines = [RequestTimeline(q.arrival_s, q.prompt, run.trace[q.rid], q.output, True) for q in run.requests]
    ref = serving_metrics(timelines, s["duration_s"])
    for key in ("ttft_ms", "tpot_ms", "e2el_ms"):
        assert s[key] == pytest.approx(ref[key], rel=1e-9)
    for stat in ("p50", "p90", "p99"):
        assert s["itl_ms"][stat] == pytest.approx(ref["itl_ms"][stat], rel=1e-4)
    assert s["itl_ms"]["mean"] == pytest.approx(ref["itl_ms"]["mean"], abs=1e-4)
    assert s["output_tokens_per_s"] == pytest.approx(ref["output_tokens_per_s"], rel=1e-3)
    assert all(len(run.trace[q.rid]) == q.output for q in run.requests), "one chunk per token"


def test_the_histogram_percentile_is_numpys_linear_percentile_within_its_bin():
    rng = np.random.default_rng(0)
    values = rng.lognormal(-4, 1, 5000)
    h = LogHistogram()
    for v in values[:1000]:
        h.add(float(v))
    h.add_linear(0.01, 0.0001, 4000, 1)
    pooled = np.concatenate([values[:1000], 0.01 + 0.0001 * np.arange(4000)])
    ref = np.percentile(pooled * 1000, [50, 90, 99])
    got = h.stats_ms()
    assert [got["p50"], got["p90"], got["p99"]] == pytest.approx(list(ref), rel=1e-4)
    assert got["mean"] == pytest.approx(pooled.mean() * 1000, abs=1e-4)  # rounded to 4 decimals, as stats_ms rounds


def test_gamma_arrivals_keep_the_rate_and_burstiness_spreads_them():
    lengths = Lengths("fixed", 10, 2)
    for shape in (1.0, 0.25):
        t = np.array([q.arrival_s for q in generated(20_000, 4.0, shape, lengths, seed=0)])
        gaps = np.diff(t)
        assert 1 / gaps.mean() == pytest.approx(4.0, rel=0.03)
        assert (gaps.std() / gaps.mean()) ** 2 == pytest.approx(1 / shape, rel=0.1)  # a gamma's squared CV is 1 / shape


def test_length_distributions_keep_their_means():
    rng = np.random.default_rng(0)
    for kind in ("fixed", "uniform", "lognormal"):
        i, o = Lengths(kind, 1000, 200, range_ratio=0.5, sigma=0.8).draw(50_000, rng)
        assert i.mean() == pytest.approx(1000, rel=0.02) and o.mean() == pytest.approx(200, rel=0.02)
    i, o = Lengths("trace", trace=load_trace("azure-conv")).draw(50_000, rng)
    assert i.mean() == pytest.approx(1154.7, rel=0.03) and np.median(o) == pytest.approx(129, abs=3)


def test_a_replayed_trace_is_time_scaled_to_the_rate_asked():
    trace = load_trace("mooncake-conv")
    reqs = replay(trace, rate=10.0)
    t = np.array([q.arrival_s for q in reqs])
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(10.0)
    assert reqs[5].ids == trace.hash_ids[5] and reqs[5].prompt == trace.input_tokens[5]
    assert len(replay(trace, None, 100)) == 100 and replay(trace, None, 3)[2].arrival_s == trace.arrival_s[2]


def test_a_session_turn_follows_the_reply_and_hits_its_history_in_the_cache():
    """Two turns: the second is sent after the first's last token and a think time, its prompt the first prompt, the reply
    and its own new tokens, whose history (whole 16-token units) the prefix cache holds."""
    first = generated(2, 1.0, 1.0, Lengths("fixed", 64, 32), turns=2, think_s=1.0, seed=0)  # 2 requests: one session
    second = first[0].follow
    assert second.prompt == 64 + 32 + 64 and list(second.ids[:6]) == list(first[0].ids)
    run = simulate(Fleet(Pool(EngineRules(8192, 8, 16, 100), STEP)), first, unit_tokens=16)
    q = {r.rid: r for r in run.requests}
    assert q[1].arrival_s > q[0].finish_s  # after the reply and a think time drawn from the exponential
    # the first turn computed its 64 prompt tokens and 31 of its 32 reply tokens (the last is sampled, never fed back):
    # 5 whole units of 16 are cached, and the second turn finds them
    assert q[1].cached == 80
    # turns of 64 + 32, 160 + 32, 256 + 32 tokens in a context of 150: the session ends after its first turn
    kept, dropped = admissible(generated(3, 1.0, 1.0, Lengths("fixed", 64, 32), turns=3, seed=0), 150)
    assert dropped == 2 and len(kept) == 1 and kept[0].follow is None


def test_round_robin_takes_turns_and_least_loaded_picks_the_idle_instance():
    """Two instances: request 0 (50 tokens) on the first, request 1 (2 tokens, done by 0.021) on the second; request 2 at
    0.055: round robin sends it to the first, busy decoding, where it waits for the step boundary at 0.06 and has its
    first token at 0.07; least loaded sends it to the idle second, which starts at once: 0.065."""
    for router, first in (("round-robin", 0.07), ("least-loaded", 0.065)):
        reqs = [Req(0, 0.0, 16, 50), Req(1, 0.001, 16, 2), Req(2, 0.055, 16, 2)]
        run = simulate(Fleet(Pool(EngineRules(64, 4, 16, 100), STEP, 2, router)), reqs)
        q = {r.rid: r for r in run.requests}
        assert q[1].first_s == pytest.approx(0.011) and q[2].first_s == pytest.approx(first)


def test_disaggregated_prefill_then_kv_transfer_then_decode():
    """Prefill pool: one 10 ms step for the prompt; the KV (100 tokens at 1 ms a token) takes 100 ms; the decode pool
    admits it with 99 tokens computed, computes the last and streams the first token after one 10 ms step: TTFT 120 ms,
    then one token per 10 ms step."""
    rules = EngineRules(256, 8, 16, 100)
    fleet = Fleet(Pool(rules, STEP), Pool(rules, STEP), kv_transfer_s_per_token=0.001)
    run = simulate(fleet, [Req(0, 0.0, 100, 5)], trace=True)
    q = run.requests[0]
    assert q.first_s == pytest.approx(0.12) and q.finish_s == pytest.approx(0.16)
    assert run.pages_held_at_end == 0


def test_mtp_gains_drafted_tokens_at_the_acceptance_rate():
    """One drafted token accepted half the time: 1.5 tokens a step on average, so 31 tokens after the first take 21
    decode steps (the accepted drafts spread evenly: steps gaining 1, 2, 1, 2, ...)."""
    rules = EngineRules(64, 4, 16, 100, mtp_tokens=1, mtp_acceptance=0.5)
    run = simulate(Fleet(Pool(rules, STEP)), [Req(0, 0.0, 16, 32)])
    q = run.requests[0]
    assert rules.tokens_per_step == 1.5
    assert q.finish_s - q.first_s == pytest.approx(0.21)
