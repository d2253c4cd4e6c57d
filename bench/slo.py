"""SLO search: the highest concurrency whose latency percentiles meet a TTFT and/or TPOT bound.

Doubling from one client until a probe misses the SLO (or the ceiling is reached), then bisection
between the last concurrency that met it and the first that did not. Every probe is a serve
record; the search assumes latency grows with concurrency, and a noisy probe can end it early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slo:
    """Latency bounds (ms; None: not bounded) at one percentile (50, 90 or 99)."""

    tpot_ms: float | None
    ttft_ms: float | None
    percentile: int = 90

    def met_by(self, rec: dict[str, Any]) -> bool:
        """Whether one serve record meets the SLO: every request completed and each bounded percentile within its bound."""
        if rec.get("status") != "ok" or rec.get("failed"):
            return False
        key = f"p{self.percentile}"
        for bound, stats in ((self.tpot_ms, rec.get("tpot_ms")), (self.ttft_ms, rec.get("ttft_ms"))):
            if bound is not None and (not stats or stats.get(key) is None or stats[key] > bound):
                return False
        return True

    def as_record(self) -> dict[str, Any]:
        return {"tpot_ms": self.tpot_ms, "ttft_ms": self.ttft_ms, "percentile": self.percentile}


def search(probe: Callable[[int], bool], ceiling: int) -> tuple[int, list[tuple[int, bool]]]:
    """(highest concurrency meeting the SLO, 0 when one client does not; the probes in order as (concurrency, met))."""
    probes: list[tuple[int, bool]] = []

    def run(c: int) -> bool:
        met = probe(c)
        probes.append((c, met))
        return met

    c, best = 1, 0
    while run(c):
        best = c
        if c >= ceiling:
            return best, probes
        c = min(2 * c, ceiling)
    lo, hi = best, c  # lo met the SLO (or is 0), hi did not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(mid):
            lo = mid
        else:
            hi = mid
    return lo, probes
