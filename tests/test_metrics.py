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
