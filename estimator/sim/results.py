"""What a simulated run reports, by the definitions of vLLM's ``bench serve`` (core/bench_serve.py): TTFT, TPOT, ITL and
end-to-end latency (mean, p50, p90, p99), goodput, output and total throughput kept apart, the instances' busy share,
and the queue and KV use over time; and whether the rate was past capacity (``saturated``).

Duration is vLLM's: from the first request sent to the last token received. A run is saturated when the requests in the
system keep growing while requests arrive: the least-squares trend of their sampled count over the arrivals (after the
first 10%, which fill an empty system) grows by more than 5% of the requests that arrived meanwhile, more than twice the
count's own fluctuation around the trend, and more than 2. Below capacity the count is stationary (a bursty trace's
swings are fluctuation, not trend); past capacity it grows by the arrivals the instances cannot serve, (rate - capacity)
/ rate of them. A saturated run's percentiles grow with the run's length, so they are not reported as figures of the
rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench_serve import stats_ms, tpot_s
from estimator.sim.fleet import SimRun
from estimator.sim.request import Req

GROWTH_SHARE = 0.05  # of the arrivals over the window
NOISE_TIMES = 2.0  # the trend must stand this far above the count's own fluctuation around it
GROWTH_MIN = 2.0
WARMUP_SHARE = 0.1  # the first tenth of the arrivals fills an empty system: left out


def latencies_s(requests: list[Req]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request, in the given order: (TTFT, TPOT, end-to-end latency) in seconds, each from its arrival
    (core/bench_serve.tpot_s: NaN for a one-token reply)."""
    arrival = np.array([q.arrival_s for q in requests])
    ttft, e2el = np.array([q.first_s for q in requests]) - arrival, np.array([q.finish_s for q in requests]) - arrival
    return ttft, tpot_s(e2el, ttft, np.array([q.output for q in requests])), e2el


def saturation(run: SimRun) -> dict[str, Any]:
    """The trend of the requests in system over the arrivals (after the first 10%), against its own noise and the arrivals."""
    s, last = run.series, run.last_arrival_s
    t = np.asarray(s.get("t_s", []))
    n = np.asarray(s.get("waiting", [])) + np.asarray(s.get("running", []))
    window = t >= WARMUP_SHARE * last
    if last <= 0 or window.sum() < 10:
        return {"saturated": False, "in_system_growth": None, "in_system_noise": None, "arrivals_between": None}
    tw, nw = t[window], n[window]
    slope, icpt = np.polyfit(tw, nw, 1)
    growth, noise = float(slope * (tw[-1] - tw[0])), float(np.std(nw - (slope * tw + icpt)))
    arrivals = np.asarray([q.arrival_s for q in run.requests])
    between = int((arrivals >= tw[0]).sum() - (arrivals > tw[-1]).sum())
    return {"saturated": bool(growth > max(GROWTH_SHARE * between, NOISE_TIMES * noise, GROWTH_MIN)),
            "in_system_growth": round(growth, 2), "in_system_noise": round(noise, 2), "arrivals_between": between}  # fmt: skip


def summarize(run: SimRun, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict[str, Any]:
    """One run's figures, as ``fleetcal bench --mode serve`` records them for a real server, plus the simulator's own."""
    qs = run.requests
    ttft, tpot, e2el = latencies_s(qs)
    prompt, output = np.array([q.prompt for q in qs]), np.array([q.output for q in qs])
    duration = float(max(q.finish_s for q in qs) - min(q.arrival_s for q in qs)) if qs else 0.0
    sat = saturation(run)
    ok = np.ones(len(qs), dtype=bool)
    if slo_ttft_ms is not None:
        ok &= ttft * 1000 <= slo_ttft_ms
    if slo_tpot_ms is not None:
        ok &= np.nan_to_num(tpot, nan=np.inf) * 1000 <= slo_tpot_ms
    latency = {"ttft_ms": stats_ms(ttft), "tpot_ms": stats_ms(tpot[~np.isnan(tpot)]), "itl_ms": run.itl.stats_ms(),
               "e2el_ms": stats_ms(e2el)}  # fmt: skip
    if sat["saturated"]:
        latency = {k: {s: None for s in v} for k, v in latency.items()}
    per_s = (lambda x: round(float(x) / duration, 4)) if duration > 0 else (lambda x: None)
    return {
        "completed": len(qs),
        "duration_s": round(duration, 4),
        **sat,
        **latency,
        "request_throughput_per_s": per_s(len(qs)),
        "output_tokens_per_s": per_s(output.sum()),
        "total_tokens_per_s": per_s(output.sum() + prompt.sum()),
        "goodput_per_s": per_s(ok.sum()) if (slo_ttft_ms is not None or slo_tpot_ms is not None) else None,
        "mean_prompt_tokens": round(float(prompt.mean()), 2) if qs else None,
        "mean_output_tokens": round(float(output.mean()), 2) if qs else None,
        "prefix_cache_hit_share": round(float(sum(max(q.cached, 0) for q in qs) / prompt.sum()), 4) if qs else None,
        "preemptions": int(sum(q.preemptions for q in qs)),
        "gpu_busy_share": round(run.busy_s / (run.instances * duration), 4) if duration > 0 else None,
        "max_waiting": int(max(run.series.get("waiting") or [0])),
        "peak_kv_used_share": round(float(max(run.series.get("kv_used_share") or [0.0])), 4),
        "series": {k: [round(float(x), 4) for x in v] for k, v in run.series.items()},
    }
