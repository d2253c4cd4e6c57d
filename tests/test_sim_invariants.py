"""Invariants over many random small engines and traffics (sessions, shared prefixes, MTP, disaggregation, tight KV):
every request finishes with all its tokens streamed one chunk a step, in time order, the pooled inter-token gaps are
exactly those of the streamed chunks, and every KV page comes back."""

from __future__ import annotations

import numpy as np
import pytest

from estimator.sim.engine import EngineRules
from estimator.sim.fleet import Fleet, Pool, simulate
from estimator.sim.request import Req
from estimator.sim.steps import AffineSteps
from estimator.sim.traffic import Lengths, admissible, generated


def _traffic(rng: np.random.Generator, block: int) -> tuple[list[Req], int]:
    kind = rng.choice(["fixed", "uniform", "lognormal"])
    lengths = Lengths(str(kind), int(rng.integers(8, 200)), int(rng.integers(1, 40)), range_ratio=0.8, sigma=0.7)
    turns = int(rng.integers(1, 4))
    reqs = generated(int(rng.integers(20, 200)), float(rng.uniform(5, 200)), float(rng.choice([0.2, 1.0, 3.0])), lengths,
                     seed=int(rng.integers(1 << 30)), turns=turns, think_s=float(rng.uniform(0, 0.05)), unit_tokens=block)  # fmt: skip
    if turns == 1 and rng.random() < 0.5:  # prompts sharing prefixes from a few templates, as a trace's hash ids do
        for q in reqs:
            template = int(rng.integers(0, 3))
            q.ids = tuple(template * 1000 + u for u in range(q.prompt // block))
    return reqs, block if (turns > 1 or reqs[0].ids is not None) else 0


def _turns(q: Req | None) -> int:
    n = 0
    while q is not None:
        n, q = n + 1, q.follow
    return n


@pytest.mark.parametrize("seed", range(200))
def test_every_request_finishes_and_every_page_comes_back(seed):
    rng = np.random.default_rng(seed)
    block = int(rng.choice([4, 16]))
    mtp = int(rng.integers(0, 3)) if rng.random() < 0.3 else 0
    seqs = int(rng.integers(1, 12))
    rules = EngineRules(int(rng.integers(seqs * (1 + mtp), 400)), seqs, block, int(rng.integers(40, 400)), bool(rng.random() < 0.8), mtp,
                        float(rng.uniform(0, 1)) if mtp else 0.0)  # fmt: skip
    steps = AffineSteps(float(rng.uniform(1e-3, 2e-2)), float(rng.uniform(0, 1e-4)), float(rng.uniform(0, 1e-6)))
    pool = Pool(rules, steps, int(rng.integers(1, 4)), str(rng.choice(["round-robin", "least-loaded"])))
    fleet = Fleet(pool, Pool(rules, steps, int(rng.integers(1, 3))), 1e-4) if rng.random() < 0.25 else Fleet(pool)
    reqs, unit = _traffic(rng, block)
    kept, dropped = admissible(reqs, rules.kv_tokens)
    total = sum(_turns(q) for q in kept)
    run = simulate(fleet, kept, unit, trace=True)
    assert run.pages_held_at_end == 0
    assert len(run.requests) == total  # (a draw whose every request is longer than the KV room has none)
    gaps = [b - a for q in run.requests for a, b in zip(run.trace[q.rid], run.trace[q.rid][1:])]
    assert run.itl.n == len(gaps) and run.itl.total_s == pytest.approx(sum(gaps)), "the pooled ITL holds every gap once"
    for q in run.requests:
        times = run.trace[q.rid]
        assert q.emitted == q.output and q.arrival_s <= q.first_s <= q.finish_s
        assert times == sorted(times) and times[0] == q.first_s and times[-1] == q.finish_s
        per_step = 1 + mtp  # a chunk carries at most the sampled token and the accepted drafts
        assert len(times) >= -(-(q.output - 1) // per_step) + 1 if q.output > 1 else len(times) == 1
