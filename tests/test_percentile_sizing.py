"""Fleets sized by simulated percentiles (estimator/percentile_sizing.py, percentile_fleet.py): one path for plan,
estimate and the backtest; monotone in the percentile and the limits; the fleet check and the interval."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from core.deployments import load_deployments
from core.hardware import get_gpu
from core.paths import RESULTS_DIR
from estimator.backtest import backtest
from estimator.operators import load_ops
from estimator.percentile import Traffic
from estimator.percentile_fleet import size_fleet_by_percentile
from estimator.percentile_sizing import candidates, engines_per_instance, percentile_interval, size_by_percentile, size_choice
from estimator.plan_search import options
from estimator.planning import Rejection
from estimator.traffic import Request
from fleetcal.cli import main

OPS = load_ops(RESULTS_DIR, warn=False)
H100 = get_gpu("H100")
# Llama-3.1-8B, 500 + 100 tokens: a few H100 at 60 requests/s, each probe well under a second
R8 = Request("llama-3.1-8b", 500, 100, 60.0, 1.0, 500.0, 20.0)


def _gpus(r: Request, percentile: float) -> int:
    """GPUs by percentile of the steady state's best option for ``R8`` (the same option throughout) at 2,000 requests/s, in
    whole GPUs (without a fleet check, the rate only divides: a count of tens shows a few per cent of headroom)."""
    choice = options(R8.model, H100, R8, OPS)[0][0]
    pc = size_choice(choice, H100, replace(r, requests_per_s=2000.0), Traffic("poisson", percentile), whole_instances=False)
    assert not isinstance(pc, Rejection)
    return pc.gpus


def test_a_looser_percentile_or_limit_never_needs_more_gpus():
    p50, p90, p99 = (_gpus(R8, p) for p in (50, 90, 99))  # 28, 30 and 32 H100 on 2026-12-05
    assert p50 <= p90 <= p99
    assert _gpus(replace(R8, tpot_ms=40.0), 90) <= p90  # a TPOT limit twice as loose (23)


def test_plan_and_estimate_size_the_same_traffic_by_percentile(capsys):
    # the one-sizer agreement of tests/test_planning.py, by percentile: 60 requests/s of 500 + 100 tokens, TPOT 20 ms, TTFT
    # 500 ms, p90 under Poisson arrivals; estimate's volume is 5.184e6 one-question visits a day of 100-token replies
    traffic = ["--traffic", "poisson", "--slo-percentile", "90"]
    assert main(["estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--scenario", "roofline", "--daily-visits", "5.184e6",
                 "--questions-per-visit", "1", "--tokens-per-reply", "100", "--input-len", "500", "--output-len", "100",
                 "--cached-fraction", "0", "--peak-to-average", "1", "--tokens-per-s-per-user", "50", "--ttft-ms", "500", *traffic,
                 "--json"]) == 0  # fmt: skip
    est = json.loads(capsys.readouterr().out)
    assert est["request"]["requests_per_s"] == pytest.approx(60)
    assert main(["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "500", "--output-len", "100", "--requests-per-s", "60",
                 "--ttft-ms", "500", "--tpot-ms", "20", "--samples", "20", *traffic, "--json"]) == 0  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    (roof,) = est["rows"]
    assert roof["gpus"] == row["gpus"] and f"{row['gpus']} GPUs against {row['steady_gpus']} at steady state" in roof["how"]
    # what plan's row says of the fleet: both answers, the headroom between them, the fleet check met, an interval around it
    assert row["headroom_pct"] == pytest.approx((row["gpus"] / row["steady_gpus"] - 1) * 100, abs=0.05)
    assert row["fleet_check"]["checked"] and row["fleet_check"]["met"]
    assert row["fleet_check"]["ttft_ms"] <= 500 and row["fleet_check"]["tpot_ms"] <= 20
    assert row["gpus_p5"] <= row["gpus_p95"]


def test_the_instances_follow_from_each_pools_searched_rate():
    choices, _ = options(R8.model, H100, R8, OPS)
    pc, _ = size_by_percentile(choices, H100, R8, Traffic("poisson", 90))
    assert pc is not None and pc.check["checked"]
    for s, n in zip(pc.searches, pc.instances):
        need = math.ceil(R8.peak_requests_per_s / s.per_instance - 1e-9)
        assert n == need + pc.check["added_instances"][pc.searches.index(s)]
        assert s.per_instance == pytest.approx(s.search.rate_per_s * engines_per_instance(s.layout))
    assert pc.gpus == sum(n * s.layout.num_gpus for s, n in zip(pc.searches, pc.instances))
    lo, hi, none = percentile_interval(pc, R8, 30, 0)
    assert lo <= hi and none == 0.0


def test_only_each_modes_best_options_are_searched():
    choices, _ = options(R8.model, H100, R8, OPS)
    picked = candidates(choices, 2)
    for mode in {c.option.mode for c in choices}:
        ours = [c for c in choices if c.option.mode == mode]
        assert [c for c in picked if c.option.mode == mode] == ours[:2]


@pytest.mark.slow
def test_backtest_sizes_deepseek_by_percentile_through_the_same_path():
    # DeepSeek's day-6 fleet: its published layouts (EP32 prefill, EP144 decode), its daily mean in whole GPUs, TPOT
    # 50 ms (20 tok/s per user, published) held at p90, no TTFT limit (none published)
    traffic = Traffic("poisson", 90)
    df = backtest(None, OPS, traffic)
    row = df[df["method"] == "roofline p90 (simulated)"].iloc[0]
    d = load_deployments()[0]
    pc, steady = size_fleet_by_percentile(d.model, get_gpu(d.gpu), replace(Request.of_deployment(d), peak_to_average=1.0), OPS,
                                          traffic, whole_instances=False)  # fmt: skip
    assert row["predicted_gpus"] == pc.gpus
    roof = df[df["method"] == "roofline"].iloc[0]
    assert steady.option.gpus == roof["predicted_gpus"] and "of the gap between roofline" in row["how"]
