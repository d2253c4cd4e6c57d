"""The conventions of vLLM's ``bench serve``, shared by the client that measures a real server (bench/load.py,
bench/metrics.py) and the simulator that predicts one (estimator/sim/): open-loop arrivals and latency statistics.

- Arrivals: gamma-distributed gaps of mean 1 / rate and shape ``burstiness`` (1: a Poisson process), vLLM's
  ``--burstiness``; the first request at once.
- TPOT: per request, (E2E latency - TTFT) / (output tokens - 1); requests with one output token have none.
- Statistics: mean, p50, p90, p99 in milliseconds, numpy's linear percentile, as vLLM reports them.

Part of ``core`` (imports nothing above it).
"""

from __future__ import annotations

import math

import numpy as np


def arrival_offsets(n: int, rate: float | None, burstiness: float, seed: int) -> list[float]:
    """Send times (s from the start) of ``n`` requests: gamma inter-arrivals of mean 1/``rate`` and shape ``burstiness``
    (vLLM's bench serve: shape 1 is a Poisson process); all at 0 for no rate or an infinite one. Seeded, isolated RNG."""
    if rate is None or not math.isfinite(rate):
        return [0.0] * n
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0  # the first request goes at once
    return [float(x) for x in np.cumsum(gaps)]


def tpot_s(e2el_s: np.ndarray | float, ttft_s: np.ndarray | float, output_tokens: np.ndarray | int) -> np.ndarray:
    """Time per output token after the first, per request: (E2E - TTFT) / (output tokens - 1); NaN for one-token requests."""
    out = np.asarray(output_tokens, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(out > 1, (np.asarray(e2el_s) - np.asarray(ttft_s)) / (out - 1), np.nan)


def stats_ms(values_s: list[float] | np.ndarray) -> dict[str, float | None]:
    """Mean, p50, p90, p99 in milliseconds (numpy's linear percentile, as vLLM uses)."""
    if len(values_s) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    arr = np.asarray(values_s, dtype=float) * 1000.0
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"mean": round(float(arr.mean()), 4), "p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4)}
