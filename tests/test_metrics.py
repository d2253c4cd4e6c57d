"""Serving metrics on hand-built timelines, by vLLM's `bench serve` definitions."""

from __future__ import annotations

import pytest

from bench.metrics import RequestTimeline, serving_metrics, stats_ms


def _tl(sent, chunks, tokens, prompt=10, ok=True):
    return RequestTimeline(sent_s=sent, prompt_tokens=prompt, chunk_times_s=chunks, output_tokens=tokens, success=ok)


def test_single_request_ttft_tpot_itl_e2el():
    # sent at 1.0; chunks at 1.5, 1.6, 1.8, 2.1 -> TTFT 500 ms, E2E 1100 ms, ITLs 100/200/300 ms,
    # TPOT = (1100 - 500) / (4 - 1) = 200 ms
    m = serving_metrics([_tl(1.0, [1.5, 1.6, 1.8, 2.1], 4)], wall_s=2.0)
    assert m["ttft_ms"]["mean"] == pytest.approx(500.0)
    assert m["e2el_ms"]["mean"] == pytest.approx(1100.0)
    assert m["tpot_ms"]["mean"] == pytest.approx(200.0)
    assert m["itl_ms"]["mean"] == pytest.approx(200.0)
    assert m["itl_ms"]["p50"] == pytest.approx(200.0)
    assert m["interactivity_tokens_per_s"] == pytest.approx(5.0)
    assert m["output_tokens_per_s"] == pytest.approx(2.0)  # 4 tokens / 2 s
    assert m["total_tokens_per_s"] == pytest.approx(7.0)  # (4 + 10) / 2 s


def test_itl_pools_gaps_over_requests_and_tpot_is_per_request():
    a = _tl(0.0, [0.1, 0.2, 0.3], 3)  # gaps 100, 100; TPOT 100
    b = _tl(0.0, [0.4, 1.0], 2)  # gap 600; TPOT 600
    m = serving_metrics([a, b], wall_s=1.0)
    assert m["itl_ms"]["mean"] == pytest.approx((100 + 100 + 600) / 3)
    assert m["tpot_ms"]["mean"] == pytest.approx((100 + 600) / 2)
    assert m["ttft_ms"]["p50"] == pytest.approx(250.0)


def test_one_token_requests_have_no_tpot_and_failures_are_counted():
    one = _tl(0.0, [0.2], 1)
    failed = _tl(0.0, [], 0, ok=False)
    failed.error = "HTTP 500"
    m = serving_metrics([one, failed], wall_s=1.0)
    assert m["sent"] == 2 and m["completed"] == 1 and m["failed"] == 1
    assert m["tpot_ms"]["mean"] is None
    assert m["errors"] == ["HTTP 500"]
    assert m["output_tokens_per_s"] == pytest.approx(1.0)


def test_percentiles_interpolate_linearly():
    s = stats_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert stats_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_the_steady_window_leaves_out_the_drain():
    # three requests sent at 0, 1 and 2 s, each 4 tokens in chunks 0.5 s apart from 0.5 s after sending:
    # the window is [0, 2] s; chunks inside it: a at 0.5, 1.0, 1.5, 2.0; b at 1.5, 2.0; c none (2.5..4.0) -> 6 tokens / 2 s
    a = _tl(0.0, [0.5, 1.0, 1.5, 2.0], 4)
    b = _tl(1.0, [1.5, 2.0, 2.5, 3.0], 4)
    c = _tl(2.0, [2.5, 3.0, 3.5, 4.0], 4)
    m = serving_metrics([a, b, c], wall_s=4.0)
    assert m["window_s"] == pytest.approx(2.0)
    assert m["steady_output_tokens_per_s"] == pytest.approx(3.0)
    assert m["output_tokens_per_s"] == pytest.approx(3.0)  # 12 tokens over the whole 4 s, drain included
    # two tokens per chunk count twice
    assert serving_metrics([_tl(0.0, [0.5, 1.0], 4), _tl(1.0, [1.5], 2)], wall_s=2.0)["steady_output_tokens_per_s"] == pytest.approx(4.0)
    # every request sent at once: no window
    assert serving_metrics([_tl(0.0, [0.5], 1), _tl(0.0, [0.6], 1)], wall_s=1.0)["window_s"] is None


def test_one_per_user_rate_and_goodput_on_a_timeline():
    from bench.metrics import goodput

    fast = _tl(0.0, [0.1, 0.2, 0.3], 3)  # TTFT 100 ms, TPOT 100 ms
    slow = _tl(0.0, [0.5, 1.5, 2.5], 3)  # TTFT 500 ms, TPOT 1000 ms
    m = serving_metrics([fast, slow], wall_s=2.5)
    assert m["interactivity_tokens_per_s"] == pytest.approx(1000 / 550, abs=1e-3)  # 1000 / mean TPOT: the per-user rate (rounded)
    assert goodput([fast, slow], 2.5, slo_ttft_ms=200, slo_tpot_ms=None) == pytest.approx(1 / 2.5)
    assert goodput([fast, slow], 2.5, slo_ttft_ms=None, slo_tpot_ms=2000) == pytest.approx(2 / 2.5)
    assert goodput([fast, slow], 2.5, slo_ttft_ms=600, slo_tpot_ms=500) == pytest.approx(1 / 2.5)


def test_gamma_arrivals_have_the_asked_rate_and_burstiness():
    import numpy as np

    from bench.load import arrival_offsets

    poisson = np.diff(arrival_offsets(20_001, rate=4.0, burstiness=1.0, seed=0))
    assert poisson.mean() == pytest.approx(0.25, rel=0.03)  # mean gap 1 / rate
    assert poisson.std() / poisson.mean() == pytest.approx(1.0, rel=0.05)  # exponential: coefficient of variation 1
    bursty = np.diff(arrival_offsets(20_001, rate=4.0, burstiness=0.25, seed=0))
    assert bursty.mean() == pytest.approx(0.25, rel=0.05) and bursty.std() / bursty.mean() == pytest.approx(
        2.0, rel=0.08
    )  # CV 1/sqrt(shape)
    assert arrival_offsets(3, rate=float("inf"), burstiness=1.0, seed=0) == [0.0, 0.0, 0.0]
    assert arrival_offsets(5, 2.0, 1.0, seed=7) == arrival_offsets(5, 2.0, 1.0, seed=7), "seeded"


def test_the_slo_search_doubles_then_bisects():
    from bench.slo import Slo, search

    asked = []

    def probe(c):  # the SLO holds up to 11 clients
        asked.append(c)
        return c <= 11

    assert search(probe, ceiling=256) == (
        11,
        [(1, True), (2, True), (4, True), (8, True), (16, False), (12, False), (10, True), (11, True)],
    )
    assert search(lambda c: c <= 300, ceiling=64)[0] == 64, "stops at the ceiling"
    assert search(lambda c: False, ceiling=64) == (0, [(1, False)]), "not even one client: 0"
    slo = Slo(tpot_ms=50, ttft_ms=None, percentile=90)
    rec = {"status": "ok", "failed": 0, "tpot_ms": {"p90": 49.0}, "ttft_ms": {"p90": 9e9}}
    assert slo.met_by(rec) and not slo.met_by({**rec, "tpot_ms": {"p90": 51.0}}) and not slo.met_by({**rec, "failed": 1})
