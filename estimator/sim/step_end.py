"""The end of a step (or of a decode-only stretch) in flight: tokens gained, prompts done, first tokens, finishes."""

from __future__ import annotations

import heapq

from estimator.sim.instance import Instance, Pending
from estimator.sim.request import DECODE, DONE, Req


def commit(inst: Instance) -> float:
    """Apply the step in flight at its end and return that time; what finished (or, in a prefill pool, was handed over to
    decode) is in ``inst.done``."""
    p = inst.pending
    assert p is not None
    end = p.start + p.duration()
    inst.busy_s += end - p.start
    b, k = p.batch, p.k
    if inst.trace is not None and b:
        _trace_decoders(inst, p)
    if k > 1:  # the stretch's later steps take their pages now (counted from the positions they were scheduled at)
        inst.pool.take(inst._crossings(p.g, p.g + k - 1))
        inst.galloc, grow = p.g + k - 1, k
    else:
        grow = inst.delta(inst.steps)
    inst.steps += k
    inst.G += grow
    inst.kv_sum += b * grow
    if b:
        inst.itl.add_linear(p.t0, p.dt, k, b)
    inst.done = []
    for q, n in p.chunks:
        _chunk_done(inst, q, n, end, grow)
    _finishes(inst, end)
    inst.pending = None
    return end


def _chunk_done(inst: Instance, q: Req, n: int, end: float, grow: int) -> None:
    q.computed += n
    if q.computed < q.tokens:
        return
    inst.prefilling.remove(q)
    q.emitted += 1  # the prompt (and, after a preemption, the output so far) is in: a token is sampled
    if q.emitted == 1:
        q.first_s = end
    elif q.last_s >= 0:  # the first token after recomputing a preempted request: its gap since the last one
        inst.itl.add(end - q.last_s, 1)
        q.last_s = -1.0
    if inst.trace is not None and (inst.role != "prefill" or q.emitted >= q.output):  # a prefill pool's token is streamed only
        inst.trace.setdefault(q.rid, []).append(end)  # when it is the last: otherwise the decode pool streams the first
    if q.emitted >= q.output or inst.role == "prefill":
        del inst.running[q.rid]
        inst._release(q, q.private, q.computed)
        q.state = DONE
        q.finish_s = end if q.emitted >= q.output else -1.0
        inst.done.append(q)
    else:
        inst._join(q, grow)


def _finishes(inst: Instance, end: float) -> None:
    while inst.heap and inst.heap[0][0] <= inst.G:
        _, _, epoch, q = heapq.heappop(inst.heap)
        if epoch != q.epoch or q.state != DECODE:
            continue  # preempted since it was pushed
        inst._register(q, q.c0 + inst.G - q.g0)  # whole units of its reply are cached too (a session's next turn starts with them)
        inst._leave(q)
        del inst.running[q.rid]
        q.state, q.finish_s = DONE, end
        inst.done.append(q)


def _trace_decoders(inst: Instance, p: Pending) -> None:
    """Every decoding sequence's chunk times in this step or stretch (tests and small runs only: it visits each one)."""
    ends = [p.start + p.duration(j) for j in range(1, p.k + 1)]
    for q in inst.running.values():
        if q.state == DECODE:
            inst.trace.setdefault(q.rid, []).extend(ends)
