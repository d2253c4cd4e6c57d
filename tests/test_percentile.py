"""The percentile search (estimator/percentile.py) on cases worked out by hand and by queueing theory.

One engine serving one request at a time (max_num_seqs 1), each a single step of fixed time D (a prompt of one chunk and
one output token: TTFT = wait + D), is a single-server queue with deterministic service: with periodic arrivals nothing
waits below the rate 1/D and the queue grows above it; with Poisson arrivals it is M/D/1, whose waiting time has Erlang's
closed-form distribution (A. K. Erlang 1909; e.g. Gross, Shortle, Thompson & Harris, Fundamentals of Queueing Theory,
4th ed., section 6.1.2: P(W <= t) = (1 - rho) sum_{k=0}^{floor(t/D)} [lambda (k D - t)]^k / k! e^{-lambda (k D - t)}).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import UsageError
from core.traces import Trace
from estimator.percentile import Limits, Probe, Traffic, largest_rate, percentiles_ms, probe
from estimator.sim.engine import EngineRules
from estimator.sim.fleet import Fleet, Pool
from estimator.sim.steps import AffineSteps
from estimator.traffic import Request

D = 0.1  # seconds of the one step that serves a request
ONE_AT_A_TIME = EngineRules(max_num_batched_tokens=64, max_num_seqs=1, block_size=16, kv_blocks=1000, prefix_caching=False)
FLEET = Fleet(Pool(ONE_AT_A_TIME, AffineSteps(D), 1))
REQ = Request("llama-3.1-8b", 16, 1)


def _search(traffic: Traffic, limits: Limits, guess: float, n: int = 20_000) -> float:
    def at(rate: float) -> Probe:
        reqs, unit = traffic.requests(rate, REQ, 10**6, n, 16)
        return probe(FLEET, reqs, unit, rate, limits)

    return largest_rate(at, guess).rate_per_s


def md1_wait_cdf(t: float, lam: float) -> float:
    """Erlang's M/D/1 waiting-time distribution P(W <= t) at arrival rate ``lam`` and service D (module docstring)."""
    rho = lam * D
    return (1 - rho) * sum((lam * (k * D - t)) ** k / math.factorial(k) * math.exp(-lam * (k * D - t)) for k in range(int(t / D) + 1))


def md1_rate_for(ttft_s: float, q: float) -> float:
    """The arrival rate at which the q-quantile of TTFT (wait + D) is ``ttft_s``, by bisection on Erlang's formula."""
    lo, hi = 1e-6, 1 / D - 1e-9
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if md1_wait_cdf(ttft_s - D, mid) >= q else (lo, mid)
    return lo


def test_erlang_formula_is_what_the_simulated_queue_gives():
    # the reference itself checked first: at rho 0.7 the simulated TTFT's quantiles sit on Erlang's distribution
    traffic = Traffic("poisson", 90)
    reqs, unit = traffic.requests(7.0, REQ, 10**6, 40_000, 16)
    fig = probe(FLEET, reqs, unit, 7.0, Limits(90))
    assert md1_wait_cdf(fig.ttft_ms / 1000 - D, 7.0) == pytest.approx(0.90, abs=0.01)


@pytest.mark.parametrize(("percentile", "ttft_ms"), [(50, 150.0), (90, 300.0), (99, 600.0)])
def test_poisson_search_finds_the_md1_rate(percentile, ttft_ms):
    expected = md1_rate_for(ttft_ms / 1000, percentile / 100)  # p50 150 ms: 6.36/s; p90 300 ms: 5.87/s; p99 600 ms: 6.30/s
    found = _search(Traffic("poisson", percentile), Limits(percentile, ttft_ms=ttft_ms), guess=5.0)
    assert found == pytest.approx(expected, rel=0.04)  # the bisection's 2% and the sampling noise of 20,000 requests


def test_periodic_arrivals_meet_the_limit_up_to_the_service_rate():
    # D/D/1: below 1/D = 10 requests/s every TTFT is D; above it the queue grows, so a TTFT limit of 1.5 D holds up to 10/s
    n = 5000
    trace = Trace("periodic", np.arange(n, dtype=float), np.full(n, 16), np.ones(n, dtype=np.int64))
    found = _search(Traffic("trace", 99, trace=trace), Limits(99, ttft_ms=1.5 * D * 1000), guess=3.0, n=n)
    assert 10 / 1.02 <= found <= 10.0


def test_looser_percentile_or_limit_never_lowers_the_rate():
    rates = [_search(Traffic("poisson", p), Limits(p, ttft_ms=300.0), guess=5.0, n=10_000) for p in (50, 90, 99)]
    assert rates[0] >= rates[1] >= rates[2]
    tighter, looser = (_search(Traffic("poisson", 90), Limits(90, ttft_ms=ms), guess=5.0, n=10_000) for ms in (200.0, 400.0))
    assert looser >= tighter


def test_largest_rate_walks_and_bisects_to_the_edge():
    for guess in (0.2, 3.0, 3.8, 90.0):
        s = largest_rate(lambda x: Probe(x, x <= 3.7, False), guess)
        assert 3.7 / 1.02 <= s.rate_per_s <= 3.7 and s.bracketed
        assert len(s.probes) <= 16
    assert largest_rate(lambda x: Probe(x, False, True), 1.0).rate_per_s == 0.0  # never met: none
    always = largest_rate(lambda x: Probe(x, True, False), 1.0)  # never missed: the walk's end, said unbracketed
    assert always.rate_per_s > 100 and not always.bracketed


def test_probe_length_follows_the_percentile():
    assert [Traffic("poisson", p).requests_per_probe for p in (50, 90, 99, 99.9)] == [5000, 5000, 10_000, 100_000]
    short = Trace("t", np.arange(300, dtype=float), np.full(300, 10), np.full(300, 5))
    assert Traffic("trace", 99, trace=short).requests_per_probe == 300  # a trace's length at most


def test_cached_share_is_one_prefix_every_prompt_shares():
    reqs, unit = Traffic("poisson").requests(1.0, Request("llama-3.1-8b", 1000, 10, cached_fraction=0.5), 10**6, 50, 16)
    assert unit == 496 and all(q.ids == (0,) for q in reqs)  # 500 tokens in whole 16-token pages, hashed as one unit
    reqs, unit = Traffic("poisson").requests(1.0, Request("llama-3.1-8b", 1000, 10), 10**6, 50, 16)
    assert unit == 0 and all(q.ids is None for q in reqs)


def test_warmup_arrivals_are_left_out_of_the_percentiles():
    reqs, _ = Traffic("poisson").requests(1.0, REQ, 10**6, 100, 16)
    for i, q in enumerate(reqs):  # the first ten wait 10 s, the rest 0.1 s
        q.first_s = q.finish_s = q.arrival_s + (10.0 if i < 10 else 0.1)
    assert percentiles_ms(reqs, 99)["ttft_ms"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [({"kind": "poisson", "percentile": 40}, "--slo-percentile must be from 50 to 99.9"),
     ({"kind": "poisson", "percentile": 99.95}, "--slo-percentile must be from 50 to 99.9"),
     ({"kind": "bursty"}, "--traffic must be poisson, gamma or a trace"),
     ({"kind": "poisson", "burstiness": 0.5}, "poisson is burstiness 1"),
     ({"kind": "trace"}, "a trace to replay is needed"),
     ({"kind": "gamma", "burstiness": 0}, "--burstiness must be above 0"),
     ({"kind": "poisson", "e2e_ms": -1}, "--e2e-ms must be above 0")],
)  # fmt: skip
def test_bad_traffic_is_refused_by_name(kwargs, says):
    with pytest.raises(UsageError, match=says):
        Traffic(**kwargs)
