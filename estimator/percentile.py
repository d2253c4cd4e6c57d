"""Latency percentiles of simulated serving, and the largest request rate that keeps them within limits.

A probe simulates one fleet (estimator/sim/) at one rate with a seeded traffic and reads the p-th percentile of TTFT,
TPOT and end-to-end latency over its requests, leaving out the first ``WARMUP_SHARE`` of the arrivals (they meet an
empty engine); a saturated run (sim/results.saturation: the queue grows for as long as requests arrive) meets nothing,
since its percentiles grow with the run's length. The search (``largest_rate``) starts from a guess (the steady-state
rate of the same option), walks up or down by growing steps (``WALK``: 10%, 20%, 50%, then doubling) until it brackets
the change from met to missed, then bisects on the rate's logarithm until the bracket is within ``RATE_TOLERANCE``; a
miss at the guess is first checked at a thousandth of it, where requests next to never queue: a miss there means no
rate meets the limits (a trace's long prompts alone can miss a TTFT limit).
Every probe uses the same seed: arrivals are the same gaps scaled by the rate (core/bench_serve.arrival_offsets; a trace
is time-scaled), lengths the same draws, so the probes differ only by the rate (common random numbers) and the
percentiles grow with it.

How long a probe runs: ``requests_per_probe`` = max(5,000, 100 / (1 - p/100)) requests, so that at least 100 requests
lie beyond the percentile (p99: 10,000; p99.9: 100,000). Measured on Llama-3.1-70B over four H100 (TP4, Azure
conversation lengths, near its capacity): across six seeds the p90 TTFT varied by 20% (standard deviation over the
mean) at 2,000 requests, 7% at 5,000 and 5% at 10,000, the p99 TTFT by 13%, 6% and 8%, the p99 TPOT by 24%, 10% and
5%; at a lighter load (fixed 1,000 + 1,000 tokens) under 5% from 1,000 requests. So a found rate carries a few per cent
of sampling noise beside the bisection's 2%.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.errors import UsageError
from core.traces import Trace
from estimator.sim.fleet import Fleet, simulate
from estimator.sim.request import Req
from estimator.sim.results import latencies_s, saturation
from estimator.sim.traffic import Lengths, admissible, generated, replay
from estimator.traffic import Request

TRAFFIC_KINDS = ("poisson", "gamma")  # generated arrivals; anything else names a trace
PERCENTILE_RANGE = (50.0, 99.9)
WARMUP_SHARE = 0.1
MIN_REQUESTS, TAIL_REQUESTS = 5_000, 100
WALK = (1.1, 1.2, 1.5) + (2.0,) * 9  # the walk's steps away from the guess: the answer is often near it; ~500x at most
RATE_TOLERANCE = 1.02
IDLE = 1000.0  # a thousandth of the guess: requests next to never meet one another


@dataclass(frozen=True)
class Traffic:
    """What the simulation is fed and which percentile is held to the limits: generated arrivals (``poisson``, or
    ``gamma`` of shape ``burstiness``) at the request's fixed lengths, or a ``trace`` replayed with its own lengths (and
    prefix hashes), its times scaled to each rate."""

    kind: str
    percentile: float = 90.0
    burstiness: float = 1.0
    trace: Trace | None = None
    e2e_ms: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = PERCENTILE_RANGE
        if not (math.isfinite(self.percentile) and lo <= self.percentile <= hi):
            raise UsageError(f"--slo-percentile must be from {lo:g} to {hi:g}, got {self.percentile:g}")
        if self.kind not in (*TRAFFIC_KINDS, "trace"):
            raise UsageError(f"--traffic must be {', '.join(TRAFFIC_KINDS)} or a trace, got {self.kind!r}")
        if self.kind == "trace" and self.trace is None:
            raise UsageError("--traffic: a trace to replay is needed")
        if not (math.isfinite(self.burstiness) and 0 < self.burstiness <= 100):
            raise UsageError(f"--burstiness must be above 0 and at most 100, got {self.burstiness:g}")
        if self.kind == "poisson" and self.burstiness != 1.0:
            raise UsageError("--burstiness shapes --traffic gamma; poisson is burstiness 1")
        if self.e2e_ms is not None and not (math.isfinite(self.e2e_ms) and 0 < self.e2e_ms <= 3.6e6):
            raise UsageError(f"--e2e-ms must be above 0 and at most 3,600,000, got {self.e2e_ms:g}")

    @property
    def requests_per_probe(self) -> int:
        """max(MIN_REQUESTS, TAIL_REQUESTS / (1 - p/100)) requests, a trace's length at most (module docstring)."""
        n = max(MIN_REQUESTS, math.ceil(round(TAIL_REQUESTS / (1 - self.percentile / 100), 6)))
        return min(n, len(self.trace.arrival_s)) if self.trace is not None else n

    def describe(self) -> str:
        what = (f"trace {self.trace.name} time-scaled" if self.trace is not None else
                "Poisson arrivals" if self.kind == "poisson" else f"gamma arrivals of burstiness {self.burstiness:g}")  # fmt: skip
        return f"p{self.percentile:g} of {self.requests_per_probe:,} simulated requests per probe, {what}, seed {self.seed}"

    def requests(self, rate_per_s: float, r: Request, max_len: int, n: int, block_tokens: int) -> tuple[list[Req], int]:
        """(``n`` requests at ``rate_per_s`` that one engine can hold, the hash unit of their prompts): a trace's first ones
        time-scaled, with its own prefix hashes; or generated at the request's lengths (rounded), the first
        ``cached_fraction`` of every prompt (in whole pages of ``block_tokens``) one prefix all share, hashed as one unit,
        so the prefix cache serves it as the steady state assumes (one unit: the simulator caches and evicts it whole, and
        keeps one copy per request that computed it, not one per page). Requests longer than ``max_len`` are left out, as
        the engine refuses them."""
        if self.trace is not None:
            reqs = replay(self.trace, rate_per_s, min(n, len(self.trace.arrival_s)))
            return admissible(reqs, max_len)[0], self.trace.hash_unit_tokens
        lengths = Lengths("fixed", max(round(r.input_len), 1), max(round(r.output_len), 1))
        reqs = generated(n, rate_per_s, self.burstiness, lengths, self.seed)
        shared = int(r.cached_fraction * lengths.input_len) // block_tokens * block_tokens
        if shared:
            for q in reqs:
                q.ids = (0,)
        return admissible(reqs, max_len)[0], shared


@dataclass(frozen=True)
class Limits:
    """The latency limits a percentile is held to (None: none) and which of them a probe checks."""

    percentile: float
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def only(self, *names: str) -> Limits:
        """These limits with the others dropped (a prefill pool answers for TTFT, a decode pool for TPOT)."""
        keep = {n: getattr(self, n) if n in names else None for n in ("ttft_ms", "tpot_ms", "e2e_ms")}
        return Limits(self.percentile, **keep)


@dataclass(frozen=True)
class Probe:
    """One simulated rate: the percentiles after the warm-up (ms; None when saturated) and whether they meet the limits."""

    rate_per_s: float
    met: bool
    saturated: bool
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None


def percentiles_ms(requests: list[Req], percentile: float, warmup_share: float = WARMUP_SHARE) -> dict[str, float]:
    """The ``percentile`` of TTFT, TPOT and E2E (ms; numpy's linear percentile, as core/bench_serve) over the requests
    that arrived after the first ``warmup_share`` of them."""
    qs = sorted(requests, key=lambda q: (q.arrival_s, q.rid))[int(len(requests) * warmup_share):]
    ttft, tpot, e2e = latencies_s(qs)
    tpot = tpot[~np.isnan(tpot)]

    def pct(x: np.ndarray) -> float:
        return float(np.percentile(x, percentile) * 1000) if x.size else 0.0

    return {"ttft_ms": pct(ttft), "tpot_ms": pct(tpot), "e2e_ms": pct(e2e)}


def probe(fleet: Fleet, requests: list[Req], unit: int, rate_per_s: float, limits: Limits) -> Probe:
    """Simulate ``requests`` on ``fleet`` and hold their percentiles to ``limits``."""
    run = simulate(fleet, requests, unit)
    if not run.requests or saturation(run)["saturated"]:
        return Probe(rate_per_s, False, True)
    fig = percentiles_ms(run.requests, limits.percentile)
    met = all(getattr(limits, k) is None or fig[k] <= getattr(limits, k) for k in fig)
    return Probe(rate_per_s, met, False, **fig)


@dataclass(frozen=True)
class RateSearch:
    """The largest rate found within the limits (0: none, not even the smallest probed) and every probe, in order."""

    rate_per_s: float
    probes: tuple[Probe, ...]

    @property
    def bracketed(self) -> bool:
        """Whether a probe above the rate found missed (else the walk up ended without a miss)."""
        return any(not p.met and p.rate_per_s > self.rate_per_s for p in self.probes)


def largest_rate(at: Callable[[float], Probe], guess_per_s: float) -> RateSearch:
    """The largest rate whose probe meets the limits, from ``guess_per_s`` (module docstring: walk, then bisect)."""
    if not (math.isfinite(guess_per_s) and guess_per_s > 0):
        raise ValueError(f"the search starts from a positive rate, got {guess_per_s}")
    probes = [at(guess_per_s)]
    lo, hi = (guess_per_s, math.inf) if probes[0].met else (0.0, guess_per_s)
    if not probes[0].met:  # missed at the guess: first whether anything meets the limits, at a rate with next to no queueing
        probes.append(at(guess_per_s / IDLE))
        if not probes[-1].met:
            return RateSearch(0.0, tuple(probes))
        probes.append(probes.pop(0))  # the walk down goes on from the guess
    for step in WALK:
        if math.isfinite(hi) and lo > 0:
            break
        x = lo * step if probes[-1].met else hi / step
        probes.append(at(x))
        lo, hi = (x, hi) if probes[-1].met else (lo, x)
    if lo == 0.0 or not math.isfinite(hi):
        return RateSearch(lo, tuple(probes))
    while hi / lo > RATE_TOLERANCE:
        mid = math.sqrt(lo * hi)
        probes.append(at(mid))
        lo, hi = (mid, hi) if probes[-1].met else (lo, mid)
    return RateSearch(lo, tuple(probes))
