"""Fleets sized by simulated latency percentiles: ``plan --traffic``, ``estimate --traffic`` and the backtest's percentile row.

For an option of the steady-state search (estimator/plan_search.py: GPU type, precision, layouts, mode), the largest
request rate one engine sustains with the p-th percentile of TTFT, TPOT (and end-to-end latency, where limited) within
the limits is found by simulating it under the traffic (estimator/percentile.py), starting from the option's own
steady-state rate. Aggregated: one engine of the layout serves whole requests. Disaggregated: the prefill pool's rate is
searched with one prefill engine in front of an ample decode pool (least loaded, twice the engines the rate needs at
steady state, plus one), held to TTFT; the decode pool's with one decode engine behind an ample prefill pool, held to
TPOT; end-to-end latency in both. Instances per pool = ceil(rate / (engine rate x engines per instance)) (with
data-parallel attention each GPU is its own engine). Where the fleet has at most ``FLEET_CHECK_MAX_ENGINES`` engines, it
is simulated whole at the traffic's rate behind the least-loaded router as the check, an instance added to the pool
whose limit it misses until it meets them (at most ``FLEET_CHECK_MAX_ADDED`` times); a larger fleet keeps the
per-instance count (a router spreading a rate over instances gives each fewer bursts than the one engine searched).

Only the ``CANDIDATES_PER_MODE`` steady-state options of each mode with the fewest GPUs are searched (a search is a few
seconds); the option with the fewest GPUs by percentile is chosen. The interval redraws the kernel assumptions as
``plan`` does but does not search again: each draw's steady-state capacity per pool is scaled by the chosen option's
percentile headroom (searched rate over steady-state rate, per pool), on the assumption that the headroom is set by the
traffic and the scheduler, not by the kernels' speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from core.hardware import Device
from core.models import get_model
from estimator.arch import Layout
from estimator.options import Option, Pools, gpus_at
from estimator.percentile import Limits, Probe, RateSearch, Traffic, largest_rate, probe
from estimator.plan_search import Choice, interval
from estimator.planning import Limit, Rejection, kv_transfer_s
from estimator.sim.fleet import Fleet, Pool
from estimator.sim.gpu import gpu_pool
from estimator.traffic import Request

CANDIDATES_PER_MODE = 2
FLEET_CHECK_MAX_ENGINES = 64
FLEET_CHECK_MAX_ADDED = 8
SPAN_LATENCIES = 10  # a probe spans at least this many end-to-end latencies: 10 x the requests in flight (Little's law)
MAX_REQUESTS = 300_000


def engines_per_instance(layout: Layout) -> int:
    """Engines one instance of ``layout`` runs: with data-parallel attention each GPU is its own engine."""
    return layout.num_gpus if layout.dp_attention else 1


@dataclass(frozen=True)
class PoolSearch:
    """One pool's search: its role (aggregated, prefill or decode), layout, the steady-state and the searched rates."""

    role: str
    layout: Layout
    steady_per_instance: float  # requests/s one instance carries at steady state (the option's pool)
    search: RateSearch  # of one engine

    @property
    def per_instance(self) -> float:
        """Requests/s one instance sustains within the percentile limits."""
        return self.search.rate_per_s * engines_per_instance(self.layout)

    @property
    def headroom(self) -> float:
        """The searched rate over the steady-state rate (below 1: the percentiles cost capacity)."""
        return self.per_instance / self.steady_per_instance


@dataclass(frozen=True)
class PercentileChoice:
    """An option sized by percentile: the steady-state choice, each pool's search, the pools and GPUs, and the check."""

    choice: Choice
    searches: tuple[PoolSearch, ...]
    pools: Pools
    gpus: int
    instances: tuple[int, ...]
    check: dict[str, Any] = field(default_factory=dict)


class Engines:
    """The engines of one option's layouts (step tables built once) and the fleets the searches and the check run."""

    def __init__(self, c: Choice, gpu: Device, r: Request, traffic: Traffic) -> None:
        self.c, self.gpu, self.r, self.traffic = c, gpu, r, traffic
        self.max_context = get_model(r.model).max_context or math.inf
        self.built: dict[tuple[Layout, str], Pool] = {}

    def pool(self, layout: Layout, role: str, instances: int = 1) -> Pool:
        key = (layout, role)
        if key not in self.built:
            a, k = self.c.arch, self.c.kernels
            self.built[key] = gpu_pool(a, self.gpu, layout, k, max_context=self.max_context, kv_dtype=self.r.kv_dtype,
                                       mtp_tokens=0 if role == "prefill" else self.r.mtp_tokens,
                                       budget=layout.step_tokens * layout.tp if layout.step_tokens else None)  # fmt: skip
        return replace(self.built[key], instances=instances, router="least-loaded")

    def fleet(self, counts: tuple[int, ...]) -> Fleet:
        """The option's fleet at ``counts`` engines per pool (aggregated: one pool; else prefill, decode)."""
        lays = self.c.layouts
        if len(lays) == 1:
            return Fleet(self.pool(lays[0], "both", counts[0]))
        per_token = kv_transfer_s(self.c.arch, lays[0], self.c.kernels, Request(self.r.model, 1, 1, kv_dtype=self.r.kv_dtype))
        return Fleet(self.pool(lays[1], "decode", counts[1]), self.pool(lays[0], "prefill", counts[0]), per_token)

    def max_len(self, fleet: Fleet) -> int:
        pools = [fleet.pool] + ([fleet.prefill] if fleet.prefill else [])
        return int(min([self.max_context] + [p.rules.kv_tokens for p in pools]))

    def requests_at(self, rate: float) -> int:
        """Requests of a probe at ``rate``: the traffic's count for its percentile, and at least ``SPAN_LATENCIES``
        end-to-end latencies of the steady state (its TTFT + TPOT x (output - 1)) long, so the engines fill and settle."""
        p = self.c.option.point
        e2e_s = (p.ttft_ms + p.tpot_ms * max(self.r.output_len - 1, 0)) / 1000
        return int(min(max(self.traffic.requests_per_probe, math.ceil(SPAN_LATENCIES * rate * e2e_s)), MAX_REQUESTS))

    def probe_at(self, counts: Callable[[float], tuple[int, ...]], limits: Limits) -> Callable[[float], Probe]:
        def at(rate: float) -> Probe:
            fleet = self.fleet(counts(rate))
            reqs, unit = self.traffic.requests(rate, self.r, self.max_len(fleet), self.requests_at(rate), fleet.pool.rules.block_size)
            return probe(fleet, reqs, unit, rate, limits)

        return at


def _limits(r: Request, t: Traffic) -> Limits:
    return Limits(t.percentile, r.ttft_ms, r.tpot_ms, t.e2e_ms)


def _ample(rate: float, steady_per_engine: float) -> int:
    """Engines of the pool not under search: twice what the rate needs at steady state, plus one."""
    return math.ceil(2 * rate / steady_per_engine) + 1


def pool_searches(e: Engines) -> tuple[PoolSearch, ...]:
    """Each pool's largest rate per engine within the percentile limits (module docstring)."""
    c, limits = e.c, _limits(e.r, e.traffic)
    steady = [cap for cap, _ in c.option.pools]
    per_engine = [cap / engines_per_instance(lay) for cap, lay in zip(steady, c.layouts)]
    if len(c.layouts) == 1:
        s = largest_rate(e.probe_at(lambda x: (1,), limits), per_engine[0])
        return (PoolSearch("aggregated", c.layouts[0], steady[0], s),)
    pre = largest_rate(e.probe_at(lambda x: (1, _ample(x, per_engine[1])), limits.only("ttft_ms", "e2e_ms")), per_engine[0])
    dec = largest_rate(e.probe_at(lambda x: (_ample(x, per_engine[0]), 1), limits.only("tpot_ms", "e2e_ms")), per_engine[1])
    return PoolSearch("prefill", c.layouts[0], steady[0], pre), PoolSearch("decode", c.layouts[1], steady[1], dec)


def _instances(searches: tuple[PoolSearch, ...], rate: float, whole_instances: bool) -> tuple[int, ...]:
    return tuple(max(math.ceil(rate / s.per_instance - 1e-9), 1) if whole_instances else 0 for s in searches)


def fleet_check(e: Engines, searches: tuple[PoolSearch, ...], instances: tuple[int, ...], rate: float) -> tuple[tuple[int, ...], dict]:
    """The whole fleet simulated at ``rate`` (module docstring): the instances it needed and what it measured."""
    epi = [engines_per_instance(s.layout) for s in searches]
    engines = sum(n * k for n, k in zip(instances, epi))
    if engines > FLEET_CHECK_MAX_ENGINES:
        return instances, {"checked": False, "why": f"{engines:,} engines, past the {FLEET_CHECK_MAX_ENGINES} simulated whole"}
    n = e.requests_at(rate)
    counts, added = list(instances), [0] * len(instances)
    for _ in range(FLEET_CHECK_MAX_ADDED + 1):
        p = e.probe_at(lambda x: tuple(c * k for c, k in zip(counts, epi)), _limits(e.r, e.traffic))(rate)
        if p.met or sum(added) >= FLEET_CHECK_MAX_ADDED:
            break
        grow = range(len(counts)) if p.saturated or len(counts) == 1 else [
            i for i, lim in ((0, e.r.ttft_ms), (1, e.r.tpot_ms)) if lim is not None and getattr(p, ("ttft_ms", "tpot_ms")[i]) > lim
        ] or range(len(counts))  # fmt: skip
        for i in grow:
            counts[i] += 1
            added[i] += 1
    fig = {k: None if v is None else round(v, 2) for k, v in (("ttft_ms", p.ttft_ms), ("tpot_ms", p.tpot_ms), ("e2e_ms", p.e2e_ms))}
    return tuple(counts), {"checked": True, "met": p.met, "requests": n, "engines": sum(c * k for c, k in zip(counts, epi)),
                           "added_instances": added, **fig}  # fmt: skip


def size_choice(c: Choice, gpu: Device, r: Request, traffic: Traffic, whole_instances: bool = True) -> PercentileChoice | Rejection:
    """``c`` sized by percentile at the request's peak (whole instances, checked as a fleet) or its daily mean (whole GPUs)."""
    e = Engines(c, gpu, r, traffic)
    searches = pool_searches(e)
    missed = next((s for s in searches if s.search.rate_per_s <= 0), None)
    if missed is not None:
        low = min(p.rate_per_s for p in missed.search.probes)
        return Rejection(Limit.TTFT if missed.role == "prefill" else Limit.TPOT,
                         f"{missed.role} on {missed.layout.num_gpus} GPU(s): the p{traffic.percentile:g} limits are missed at every "
                         f"rate down to {low:.3g} requests/s per engine")  # fmt: skip
    rate = r.peak_requests_per_s
    pools = tuple((s.per_instance, s.layout.num_gpus) for s in searches)
    if not whole_instances:
        daily = {"checked": False, "why": "a daily mean in whole GPUs"}
        return PercentileChoice(c, searches, pools, gpus_at(pools, rate, False), (), daily)
    counts, check = fleet_check(e, searches, _instances(searches, rate, True), rate)
    return PercentileChoice(c, searches, pools, sum(n * s.layout.num_gpus for n, s in zip(counts, searches)), counts, check)


def candidates(choices: list[Choice], per_mode: int = CANDIDATES_PER_MODE) -> list[Choice]:
    """The steady state's ``per_mode`` options of each mode with the fewest GPUs, in the steady state's order."""
    seen: dict[str, int] = {}
    out = []
    for c in choices:
        seen[c.option.mode] = seen.get(c.option.mode, 0) + 1
        if seen[c.option.mode] <= per_mode:
            out.append(c)
    return out


def size_by_percentile(choices: list[Choice], gpu: Device, r: Request, traffic: Traffic,
                       whole_instances: bool = True) -> tuple[PercentileChoice | None, list[Rejection]]:  # fmt: skip
    """The candidate with the fewest GPUs by percentile (ties: the steady state's order), and why the others failed."""
    best, reasons = None, []
    for c in candidates(choices):
        pc = size_choice(c, gpu, r, traffic, whole_instances)
        if isinstance(pc, Rejection):
            reasons.append(pc)
        elif best is None or pc.gpus < best.gpus:
            best = pc
    return best, reasons


def percentile_interval(pc: PercentileChoice, r: Request, samples: int, seed: int,
                        whole_instances: bool = True) -> tuple[float, float, float]:  # fmt: skip
    """(5th, 95th percentile, share of draws with no feasible option) of the GPUs by percentile over ``samples`` draws of
    the kernel assumptions (the seed's draws, as plan's interval): each draw's steady-state pools scaled by the headroom."""

    def gpus_of(o: Option) -> float:
        pools = tuple((cap * s.headroom, n) for (cap, n), s in zip(o.pools, pc.searches))
        return float(gpus_at(pools, r.peak_requests_per_s, whole_instances))

    return interval(pc.choice, samples, seed, gpus_of)
