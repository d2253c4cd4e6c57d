"""The simulator against the real vLLM server (estimator/sim/measured.py): the committed comparison's gate, and the
simulated requests being the ones the client sent."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.workload import Workload
from core.paths import RESULTS_DIR
from core.traces import load_trace
from estimator.sim.measured import load_comparison, median_abs_error, schedule

# The gate on the committed comparison (docs/methods.md, "The simulator against the real vLLM server"): the median
# |simulated / measured - 1| over every replayed configuration's p50, and over its p99, of TTFT, TPOT and E2E. Set from
# the value of the runs committed on 2026-12-04 (see BOUNDS_SET_FROM) with room for the step model's and the
# scheduler's drift, not for a new kind of error: a change that moves the median past it must say why.
# 2026-12-04, AMD EPYC (cpu-9858bf78), 9 configurations of 30 requests: p50 5.4%, p99 2.3%. Past the bounds by more
# than that drift: a wrong step model (prefill attention costed in proportion past the longest prompt timed, as before
# this comparison, gives a p99 median of 11.1%) or a scheduler that no longer queues as vLLM does.
BOUNDS_SET_FROM = {"p50": 0.054, "p99": 0.023}
BOUNDS = {"p50": 0.075, "p99": 0.05}


@pytest.mark.parametrize("arrivals", ["recorded", "gamma"])
def test_the_simulated_requests_are_the_ones_the_client_sent(arrivals):
    trace = load_trace("azure-conv")
    wl = Workload(trace=trace, trace_arrivals=arrivals, max_len=700)  # short enough that some of the first 60 are not sent
    _, sent, times = wl.trace_schedule(60, 2, 0.7, 1.0, 49152, 3)
    run = {"workload": wl.record(), "plan": {"trace": "azure-conv", "seed": 3}}
    rec = SimpleNamespace(num_prompts=60, request_rate_per_s=0.7, burstiness=1.0, unsent_over_budget=0)
    reqs = schedule(SimpleNamespace(run=run), rec, trace)
    assert 0 < len(reqs) == len(sent) < 60
    assert [(q.prompt, q.output) for q in reqs] == [(r.prompt_len, r.output_len) for r in sent]
    assert [q.arrival_s for q in reqs] == pytest.approx(times)
    assert max(q.prompt + q.output for q in reqs) <= 700
    # the client's time budget left the last two unsent: the simulation leaves them out too
    cut = schedule(SimpleNamespace(run=run), SimpleNamespace(**{**rec.__dict__, "unsent_over_budget": 2}), trace)
    assert [q.arrival_s for q in cut] == pytest.approx(times[:-2])


def test_a_replay_is_labelled_with_the_lengths_of_the_requests_it_sends():
    trace = load_trace("azure-conv")
    wl = Workload(trace=trace, max_len=700)
    _, sent, _ = wl.trace_schedule(60, 2, 0.7, 1.0, 49152, 3)
    mean_in = sum(r.prompt_len for r in sent) / len(sent)
    mean_out = sum(r.output_len for r in sent) / len(sent)
    assert wl.trace_mean_lengths(60) == (round(mean_in), round(mean_out))
    # not the whole trace's means (1,155 and 211 tokens), which a replay of its first requests does not send
    assert wl.trace_mean_lengths(60) != (round(float(trace.input_tokens.mean())), round(float(trace.output_tokens.mean())))


def test_recorded_arrivals_are_the_traces_scaled_to_the_rate():
    trace = load_trace("azure-conv")
    _, sent, times = Workload(trace=trace).trace_schedule(100, 2, 0.5, 1.0, 49152, 0)
    assert len(sent) == 100 and (len(times) - 1) / (times[-1] - times[0]) == pytest.approx(0.5)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] / gaps[1] == pytest.approx((trace.arrival_s[1] - trace.arrival_s[0]) / (trace.arrival_s[2] - trace.arrival_s[1]))


def test_committed_comparison_stays_within_its_bounds():
    t = load_comparison(RESULTS_DIR)
    assert not t.empty, "no replayed serve runs committed: scripts/measure_cpu_serve.sh"
    assert t["error"].notna().all()
    for stat, bound in BOUNDS.items():
        assert median_abs_error(t, stat) <= bound, f"{stat}: the simulator moved away from the measured server"
