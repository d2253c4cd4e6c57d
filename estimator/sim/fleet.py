"""Instances behind a router, aggregated or as disaggregated prefill and decode pools, run as one discrete-event loop.

Events are requests arriving (from the traffic, from a session's previous turn, or, disaggregated, from a prefill
instance once their KV has reached the decode pool) and instances' steps ending. A router sends each request to one
instance of its pool: ``round-robin`` in turn, ``least-loaded`` to the one with the fewest requests waiting or running
(the lowest index on a tie). An idle instance starts a step at once; a busy one takes the request at its next step
boundary, as vLLM's engine loop does.

Disaggregated (vLLM's prefill/decode split with a KV connector): a prefill instance runs the prompt to its first token
and hands the request over; its KV reaches the decode pool ``kv_transfer_s_per_token`` x prompt tokens later, where the
request is admitted with all but its last prompt token computed (as the connector reports them) and its first token
streams after that one-token step. Times in seconds from the first arrival.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from core.errors import UsageError
from estimator.sim.engine import EngineRules
from estimator.sim.instance import Instance, StepTime
from estimator.sim.request import WAITING, Req
from estimator.sim.stats import LogHistogram
from estimator.sim.step_end import commit

ROUTERS = ("round-robin", "least-loaded")
SAMPLES = 200  # points of the queue and KV series over the arrivals


@dataclass(frozen=True)
class Pool:
    """``instances`` engines of the same rules and step model behind one router."""

    rules: EngineRules
    step_time: StepTime
    instances: int = 1
    router: str = "round-robin"

    def __post_init__(self) -> None:
        if self.router not in ROUTERS:
            raise UsageError(f"router must be one of {', '.join(ROUTERS)}, got {self.router!r}")
        if not 1 <= self.instances <= 100_000:
            raise UsageError(f"instances must be 1 to 100,000, got {self.instances}")


@dataclass(frozen=True)
class Fleet:
    """One pool serving whole requests, or a prefill pool in front of a decode pool with the KV sent between them."""

    pool: Pool
    prefill: Pool | None = None
    kv_transfer_s_per_token: float = 0.0


@dataclass
class SimRun:
    """What a run produced: the finished requests, the pooled inter-token gaps, busy time and the sampled series."""

    requests: list[Req]
    itl: LogHistogram
    busy_s: float
    instances: int
    last_arrival_s: float
    series: dict[str, list[float]] = field(default_factory=dict)
    trace: dict[int, list[float]] | None = None
    pages_held_at_end: int = 0  # KV pages not back in the free queues once all finished: 0 unless the bookkeeping is wrong


class _Router:
    def __init__(self, pool: Pool, role: str, unit_tokens: int, itl: LogHistogram, trace: dict | None) -> None:
        self.pool, self.next = pool, 0
        self.instances = [Instance(pool.rules, pool.step_time, unit_tokens, role, itl, trace) for _ in range(pool.instances)]
        for i, inst in enumerate(self.instances):
            inst.index = i
        self.loads = [0] * pool.instances  # requests waiting or running on each instance

    def pick(self) -> Instance:
        if self.pool.router == "round-robin":
            i = self.next % len(self.instances)
            self.next += 1
        else:
            i = self.loads.index(min(self.loads))
        self.loads[i] += 1
        return self.instances[i]


class _Loop:
    def __init__(self, fleet: Fleet, unit_tokens: int, trace: bool) -> None:
        self.itl, self.trace = LogHistogram(), ({} if trace else None)
        self.front = _Router(fleet.prefill or fleet.pool, "prefill" if fleet.prefill else "both", unit_tokens, self.itl, self.trace)
        self.back = _Router(fleet.pool, "decode", unit_tokens, self.itl, self.trace) if fleet.prefill else None
        self.kv_s = fleet.kv_transfer_s_per_token
        self.events: list[tuple[float, int, int, object]] = []  # (time, order, kind, payload): 0 step end, 1 arrival, 2 KV ready,
        # 3 an idle instance schedules
        self.order, self.finished = 0, []
        self.series: dict[str, list[float]] = {"t_s": [], "waiting": [], "running": [], "kv_used_share": []}

    def push(self, t: float, kind: int, payload: object) -> None:
        self.order += 1
        heapq.heappush(self.events, (t, self.order, kind, payload))

    def add(self, router: _Router, q: Req, t: float) -> None:
        inst = router.pick()
        q.state = WAITING
        inst.waiting.append(q)
        if inst.pending is None:  # idle: it schedules once every request arriving at this instant is in (kind 3)
            if not inst.waking:
                inst.waking = True
                self.push(t, 3, inst)
            return
        end = inst.truncate(t)
        if end is not None:
            inst.version += 1
            self.push(end, 0, (inst, inst.version))

    def wake(self, inst: Instance, t: float) -> None:
        inst.waking = False
        end = inst.plan(t) if inst.pending is None else None
        if end is not None:
            inst.version += 1
            self.push(end, 0, (inst, inst.version))

    def step_end(self, inst: Instance, t: float) -> None:
        commit(inst)
        (self.back if self.back is not None and inst.role == "decode" else self.front).loads[inst.index] -= len(inst.done)
        for q in inst.done:
            if q.finish_s >= 0:
                self.finished.append(q)
                if q.follow is not None:  # the session's next turn, after the user read the reply and thought
                    q.follow.arrival_s = q.finish_s + q.think_s
                    self.push(q.follow.arrival_s, 1, q.follow)
            else:  # handed over by a prefill instance: its KV travels to the decode pool
                self.push(t + self.kv_s * q.prompt, 2, q)
        end = inst.plan(t)
        if end is not None:
            inst.version += 1
            self.push(end, 0, (inst, inst.version))

    def sample(self, t: float) -> None:
        insts = self.front.instances + (self.back.instances if self.back else [])
        s = self.series
        s["t_s"].append(t)
        s["waiting"].append(sum(len(i.waiting) for i in insts))
        s["running"].append(sum(len(i.running) for i in insts))
        s["kv_used_share"].append(sum(i.pool.held for i in insts) / sum(i.pool.total for i in insts))


def simulate(fleet: Fleet, requests: list[Req], unit_tokens: int = 0, trace: bool = False) -> SimRun:
    """Run ``requests`` (in arrival order; a session's later turns hang off its first) through ``fleet`` until all finish."""
    loop = _Loop(fleet, unit_tokens, trace)
    last = max((q.arrival_s for q in requests), default=0.0)
    every, tick, i = max(last, 1e-3) / SAMPLES, 0.0, 0
    while True:
        t_arr = requests[i].arrival_s if i < len(requests) else math.inf
        t_ev = loop.events[0][0] if loop.events else math.inf
        t = min(t_arr, t_ev)
        if t == math.inf:
            break
        while tick <= t and tick <= last:
            loop.sample(tick)
            tick += every
        if t_ev < t_arr:  # on a tie the arrival first: it is in the queue when the instance schedules at that instant
            _, _, kind, payload = heapq.heappop(loop.events)
            if kind == 0:
                inst, version = payload
                if version == inst.version:
                    loop.step_end(inst, t)
            elif kind == 3:
                loop.wake(payload, t)
            elif kind == 1:
                loop.add(loop.front, payload, t)
            else:
                payload.ext, payload.emitted, payload.first_s = payload.prompt - 1, 0, -1.0  # its first token streams from decode
                loop.add(loop.back, payload, t)
        else:
            loop.add(loop.front, requests[i], t)
            i += 1
    insts = loop.front.instances + (loop.back.instances if loop.back else [])
    return SimRun(loop.finished, loop.itl, sum(x.busy_s for x in insts), len(insts), last, loop.series, loop.trace,
                  sum(x.pool.total - x.pool.queued for x in insts))
