"""One serving engine stepped as vLLM 0.32's V1 scheduler steps it (vllm/v1/core/sched/scheduler.py, ``Scheduler.schedule``).

Each step, first the RUNNING requests in the order they were admitted: every decoding one takes 1 + drafted tokens of
the token budget and the KV pages its new tokens need, a request still in its prompt takes the rest of its prompt up to
the budget left (chunked prefill); when pages run out for one of them, the last admitted running request is preempted
(its pages freed, its computed tokens forgotten, put back at the head of the waiting queue: it will recompute its prompt
and output) until the pages fit or the request itself was the one preempted (``self.running.pop()``, ``_preempt_request``).
Then, only if nothing was preempted, WAITING requests in arrival order while the budget lasts and fewer than
``max_num_seqs`` run: each takes its prefix-cache hit (whole units, never the last prompt token: ``get_computed_blocks``)
and a chunk of the rest up to the budget, if the pages for it are there; the first that does not fit stops admission.
The step's time is the step model's for its decoding sequences, their KV and its chunk tokens; at its end every decoding
sequence has gained 1 + accepted drafts, and a request whose prompt is done samples its first token.

Decoding sequences all move together, so they are kept as counts, not visited one by one: the KV pages they need next
step are counted by their position within a page (``cnt``), their finishes sit in a heap of the step count they finish
at. While nothing but decoding can happen (no prompt to run, no request admissible, no page shortage), the steps up to
the next finish run as one stretch whose step times are linear in KV (the serving model's decode step is: attention reads
and computes in proportion to it); an arrival cuts the stretch at the next step boundary (``truncate``).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from estimator.sim.engine import EngineRules
from estimator.sim.kv import KVPool
from estimator.sim.request import DECODE, PREFILL, WAITING, Req
from estimator.sim.stats import LogHistogram

StepTime = Callable[[int, float, int, float], float]  # (decode sequences, their KV tokens, chunk tokens, chunk context) -> s
STRETCH_CAP = 1 << 16  # steps of one decode-only stretch, at most


@dataclass
class Pending:
    """The step (or stretch of ``k`` decode-only steps) in flight: its start, first step time, per-step growth, batch, chunks."""

    start: float
    k: int
    t0: float
    dt: float
    batch: int
    chunks: list[tuple[Req, int]]
    g: int  # the decode step count when it was scheduled

    def duration(self, k: int | None = None) -> float:
        k = self.k if k is None else k
        return k * self.t0 + self.dt * k * (k - 1) / 2


class Instance:
    """One engine: its queue, its running requests, its KV pages, and the step in flight."""

    def __init__(self, rules: EngineRules, step_time: StepTime, unit_tokens: int = 0, role: str = "both",
                 itl: LogHistogram | None = None, trace: dict[int, list[float]] | None = None) -> None:  # fmt: skip
        self.r, self.f, self.role, self.itl, self.trace = rules, step_time, role, itl or LogHistogram(), trace
        caching = rules.prefix_caching and unit_tokens and unit_tokens % rules.block_size == 0
        self.unit = unit_tokens if caching else 0
        self.pool = KVPool(rules.usable_blocks, unit_tokens // rules.block_size if caching else 0)
        self.waiting: deque[Req] = deque()
        self.running: dict[int, Req] = {}  # admission order: the last one is preempted first
        self.prefilling: list[Req] = []
        self.cnt = [0] * rules.block_size  # decoding sequences by (page frontier - step count) mod page size
        self.n_dec = self.kv_sum = self.G = self.galloc = self.steps = 0
        self.heap: list[tuple[int, int, int, Req]] = []  # (decode step count it finishes at, rid, epoch, request)
        self.pending: Pending | None = None
        self.version, self.busy_s, self.index, self.waking = 0, 0.0, 0, False
        self.done: list[Req] = []  # requests finished (or handed over, for a prefill pool) at the last commit

    # -- decoding sequences as counts ---------------------------------------------------------------------------------

    def _crossings(self, s0: int, s1: int) -> int:
        """New pages the decoding sequences need for the steps counted s0 .. s1-1: Σ_s cnt[-s mod page]."""
        bs, n = self.r.block_size, s1 - s0
        full, rem = divmod(n, bs)
        return full * self.n_dec + sum(self.cnt[(-s) % bs] for s in range(s0, s0 + rem))

    def _pages(self, q: Req, ga: int) -> int:
        """Pages a decoding request holds once allocated at decode step count ``ga``."""
        return -(-(q.f0 + ga - q.g0) // self.r.block_size)

    def _join(self, q: Req, delta: int) -> None:
        q.state, q.c0, q.e0, q.g0 = DECODE, q.computed, q.emitted, self.G
        q.f0 = q.c0 + delta  # its pages so far cover c0 tokens: the next step's need is counted from c0 + delta
        q.phase = (q.f0 - q.g0) % self.r.block_size
        self.cnt[q.phase] += 1
        self.n_dec += 1
        self.kv_sum += q.c0
        heapq.heappush(self.heap, (q.g0 + q.output - q.e0, q.rid, q.epoch, q))

    def _leave(self, q: Req) -> None:
        """A decoding request stops decoding (finished or preempted): its pages go back, its counts go."""
        self.cnt[q.phase] -= 1
        self.n_dec -= 1
        self.kv_sum -= q.c0 + self.G - q.g0
        q.emitted = min(q.e0 + self.G - q.g0, q.output)
        self._release(q, self._pages(q, self.galloc) - len(q.units) * self.pool.unit_blocks, q.c0 + self.G - q.g0)

    def _release(self, q: Req, private: int, computed: int) -> None:
        """``q``'s pages back to the pool: of its private ones, those filled with computed tokens are whole (hashed) blocks."""
        self.pool.release(q.units, private, computed // self.r.block_size - len(q.units) * self.pool.unit_blocks)

    def _register(self, q: Req, computed: int) -> None:
        """Whole units of ``q`` up to ``computed`` tokens become cached under their ids (as copies of their own). As
        vLLM's ``allocate_slots`` caches the full blocks a step will compute when it schedules them, a request admitted
        later in the same step can hit them."""
        if not self.unit or q.ids is None:
            return
        full = min(computed // self.unit, len(q.ids))
        for u in range(q.registered, full):
            q.units.append(self.pool.register(q.ids[u]))
            q.private -= self.pool.unit_blocks
        q.registered = max(q.registered, full)

    # -- scheduling ---------------------------------------------------------------------------------------------------

    def _preempt_tail(self, t: float) -> Req:
        _, q = self.running.popitem()
        if q.state == DECODE:
            q.last_s = t  # its last token came at the end of the step before (a request recomputing keeps its own)
            self._register(q, q.c0 + self.G - q.g0)  # its reply's whole blocks are cached (vLLM hashes them as they fill)
            self._leave(q)
        else:
            self.prefilling.remove(q)
            self._release(q, q.private, q.computed)
        q.state, q.computed, q.private, q.units, q.registered, q.ext = WAITING, 0, 0, [], 0, 0
        q.epoch += 1
        q.preemptions += 1
        self.waiting.appendleft(q)
        return q

    def _allocate_decoders(self, t: float) -> bool:
        """This step's pages for the decoding sequences; True if requests had to be preempted for them."""
        need = self._crossings(self.galloc, self.G)
        if need <= self.pool.available:
            self.pool.take(need)
            return False
        for q in list(self.running.values()):  # vLLM's order: each in turn, preempting from the tail when short
            if q.state != DECODE or q.rid not in self.running:
                break
            need = self._pages(q, self.G) - self._pages(q, self.galloc)
            while need > self.pool.available and self._preempt_tail(t) is not q:
                pass
            if q.state != DECODE:
                break
            self.pool.take(need)
        return True

    def _continue_prefills(self, t: float, budget: int, chunks: list) -> tuple[int, bool]:
        bs, ub = self.r.block_size, self.pool.unit_blocks
        for q in list(self.prefilling):
            if budget <= 0:
                break
            c = min(q.tokens - q.computed, budget)
            need = -(-(q.computed + c) // bs) - q.private - len(q.units) * ub
            while need > self.pool.available and self._preempt_tail(t) is not q:
                pass
            if q.state != PREFILL:
                return budget, True
            self.pool.take(need)
            q.private += need
            self._register(q, q.computed + c)
            chunks.append((q, c))
            budget -= c
        return budget, False

    def _admit(self, budget: int, chunks: list) -> None:
        bs, ub, pool = self.r.block_size, self.pool.unit_blocks, self.pool
        while self.waiting and budget > 0 and len(self.running) < self.r.max_num_seqs:
            q = self.waiting[0]
            hits = idle = 0
            if q.ext:  # its prompt was computed by a prefill instance and sent here (all but the last token)
                computed = q.ext
            else:
                if self.unit and q.ids is not None:
                    hits, idle = pool.hit_units(q.ids, (q.tokens - 1) // self.unit)
                computed = hits * self.unit
            c = min(q.tokens - computed, budget)
            need = -(-(computed + c) // bs) - hits * ub
            # vLLM 0.32 admits a request only if its whole input fits (scheduler_reserve_full_isl, on by default)
            if -(-q.tokens // bs) - hits * ub + idle * ub > pool.available:
                break
            self.waiting.popleft()
            held = pool.hold(q.ids[:hits]) if hits else []
            pool.take(need)
            q.state, q.computed, q.private, q.units, q.registered = PREFILL, computed, need, held, hits
            q.cached = computed if q.cached < 0 else q.cached
            self.running[q.rid] = q
            self.prefilling.append(q)
            self._register(q, computed + c)
            chunks.append((q, c))
            budget -= c

    def delta(self, step: int) -> int:
        """Tokens every decoding sequence gains in step number ``step``: 1 + the drafts accepted, spread evenly over steps."""
        m = self.r.mtp_tokens * self.r.mtp_acceptance
        return 1 + math.floor((step + 1) * m + 1e-9) - math.floor(step * m + 1e-9) if m else 1

    def plan(self, t: float) -> float | None:
        """Schedule the next step (or decode-only stretch) starting at ``t``; its end, or None when there is nothing to run."""
        preempted = self._allocate_decoders(t)
        self.galloc = self.G
        budget = self.r.max_num_batched_tokens - self.n_dec * (1 + self.r.mtp_tokens)
        chunks: list[tuple[Req, int]] = []
        if not preempted:
            budget, preempted = self._continue_prefills(t, budget, chunks)
        if not preempted:
            self._admit(budget, chunks)
        b = self.n_dec
        if not b and not chunks:
            self.pending = None
            return None
        kv = self.kv_sum + b
        if chunks:
            c = sum(n for _, n in chunks)
            x = sum(n * (q.computed + n / 2) for q, n in chunks) / c
            self.pending = Pending(t, 1, self.f(b, kv, c, x), 0.0, b, chunks, self.G)
        else:
            k = 1 if preempted or self.r.mtp_tokens else self._stretch()
            t0 = self.f(b, kv, 0, 0.0)
            dt = (self.f(b, kv + (k - 1) * b, 0, 0.0) - t0) / (k - 1) if k > 1 else 0.0
            self.pending = Pending(t, k, t0, dt, b, chunks, self.G)
        return t + self.pending.duration()

    def _stretch(self) -> int:
        """Decode-only steps that can run back to back from here: up to the next finish and while the pages last."""
        while self.heap and (self.heap[0][2] != self.heap[0][3].epoch or self.heap[0][3].state != DECODE):
            heapq.heappop(self.heap)  # a request preempted since it was pushed
        k = min(self.heap[0][0] - self.G, STRETCH_CAP) if self.heap else 1
        if k <= 1:
            return 1
        avail, per_period, bs = self.pool.available, self.n_dec, self.r.block_size
        m = (avail // per_period) * bs if per_period else k  # whole periods of page crossings that fit
        while m < k - 1 and self._crossings(self.G, self.G + m + 1) <= avail:
            m += 1
        return max(1, min(k, m + 1))

    def truncate(self, t: float) -> float | None:
        """Cut the stretch in flight at the first step boundary at or after ``t`` (a request has arrived); its new end."""
        p = self.pending
        if p is None or p.k == 1:
            return None
        x = t - p.start
        b = p.t0 - p.dt / 2  # duration(j) = dt/2 j^2 + b j: the root of duration(j) = x, then the integer around it
        j = math.ceil(x / p.t0) if abs(p.dt) < 1e-15 else math.ceil((-b + math.sqrt(max(b * b + 2 * p.dt * x, 0.0))) / p.dt)
        j = max(1, min(p.k, j))
        while j > 1 and p.duration(j - 1) >= x:
            j -= 1
        while j < p.k and p.duration(j) < x:
            j += 1
        if j == p.k:
            return None
        p.k = j
        return p.start + p.duration()
