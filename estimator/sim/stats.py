"""Inter-token latencies pooled over every token of every request, kept as a histogram on a log scale.

ITL pools one value per streamed chunk (vLLM's definition, core/bench_serve.py): a run of 100,000 requests of a few hundred
tokens has tens of millions, which the simulator produces in bulk (a step of B sequences gives B equal gaps). They are
counted in bins of relative width 1e-4, so a percentile read off a bin's centre is within 0.005% of numpy's linear
percentile of the pooled values; the mean is summed exactly.
"""

from __future__ import annotations

import math

import numpy as np

LOW_S, HIGH_S, REL = 1e-7, 1e4, 1e-4
WIDTH = math.log1p(REL)
BINS = int(math.log(HIGH_S / LOW_S) / WIDTH) + 1


class LogHistogram:
    """Weighted values in seconds between ``LOW_S`` and ``HIGH_S`` (clipped), binned on a log scale. Additions are queued
    as runs (t0, dt, k, weight) and binned in bulk: a step's bookkeeping stays a few list appends."""

    FLUSH = 1 << 16  # runs queued before they are binned, or values: what a flush expands stays a few tens of MB

    def __init__(self) -> None:
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.n = 0
        self.total_s = 0.0
        self.runs: tuple[list[float], list[float], list[int], list[int]] = ([], [], [], [])
        self.queued = 0

    def add(self, v: float, weight: int = 1) -> None:
        self.add_linear(v, 0.0, 1, weight)

    def add_linear(self, t0: float, dt: float, k: int, weight: int) -> None:
        """``k`` values t0, t0 + dt, ..., each ``weight`` times (a stretch of ``k`` steps of ``weight`` sequences)."""
        t0s, dts, ks, ws = self.runs
        t0s.append(t0)
        dts.append(dt)
        ks.append(k)
        ws.append(weight)
        self.n += k * weight
        self.total_s += weight * (k * t0 + dt * k * (k - 1) / 2)
        self.queued += k
        if len(ks) >= self.FLUSH or self.queued >= 16 * self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        t0s, dts, ks, ws = (np.asarray(x) for x in self.runs)
        if ks.size:
            run = np.repeat(np.arange(ks.size), ks)
            j = np.arange(run.size) - np.repeat(np.cumsum(ks) - ks, ks)
            vals = np.maximum(t0s[run] + dts[run] * j, LOW_S)
            idx = np.minimum((np.log(vals / LOW_S) / WIDTH).astype(np.int64), BINS - 1)
            self.counts += np.rint(np.bincount(idx, weights=ws[run], minlength=BINS)).astype(np.int64)
        self.runs, self.queued = ([], [], [], []), 0
    def _value(self, cum: np.ndarray, i: int) -> float:
        """The ``i``-th smallest value (0-based), as its bin's centre."""
        b = int(np.searchsorted(cum, i, side="right"))
        return LOW_S * math.exp((b + 0.5) * WIDTH)

    def stats_ms(self) -> dict[str, float | None]:
        """Mean, p50, p90, p99 in milliseconds: numpy's linear percentile over the pooled values, as core.bench_serve.stats_ms."""
        if self.n == 0:
            return {"mean": None, "p50": None, "p90": None, "p99": None}
        self._flush()
        cum = np.cumsum(self.counts)
        out = {"mean": round(self.total_s / self.n * 1000, 4)}
        for q in (50, 90, 99):
            h = (self.n - 1) * q / 100
            lo, hi = math.floor(h), math.ceil(h)
            v_lo = self._value(cum, lo)
            v = v_lo + (h - lo) * (self._value(cum, hi) - v_lo)
            out[f"p{q}"] = round(v * 1000, 4)
        return out
