"""The requests a simulation serves: generated (arrivals, lengths, multi-turn sessions) or replayed from a trace.

Arrivals are vLLM's ``bench serve`` convention (core/bench_serve.arrival_offsets: gamma gaps of mean 1 / rate and shape
``burstiness``; 1 is a Poisson process). Lengths are fixed; uniform in [L(1 - r), L(1 + r)] (vLLM's
``--random-range-ratio``); lognormal with mean L and log-space deviation sigma; or (input, output) pairs drawn together
from a trace (its empirical distribution). A session of n turns sends its next turn a think time (exponential, of the
mean given) after the previous reply's last token, its prompt carrying the history (previous prompt and reply) as a
prefix, which the prefix cache can hold. A trace is replayed as recorded, its times scaled to a target rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.bench_serve import arrival_offsets
from core.errors import UsageError
from core.traces import Trace, scaled_arrivals
from estimator.sim.request import Req

LENGTH_KINDS = ("fixed", "uniform", "lognormal", "trace")
SESSION_ID_STRIDE = 1 << 32  # hash ids of one session's history: session x stride + unit


@dataclass(frozen=True)
class Lengths:
    """How prompt and reply lengths are drawn (tokens)."""

    kind: str = "fixed"
    input_len: int = 1024
    output_len: int = 128
    range_ratio: float = 0.0
    sigma: float = 0.5
    trace: Trace | None = None

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS:
            raise UsageError(f"length distribution must be one of {', '.join(LENGTH_KINDS)}, got {self.kind!r}")
        if self.kind == "trace" and self.trace is None:
            raise UsageError("lengths drawn from a trace need a trace (--traffic FILE or a bundled name)")
        if self.input_len < 1 or self.output_len < 1 or not 0 <= self.range_ratio < 1 or not 0 <= self.sigma <= 3:
            raise UsageError("lengths: --input-len and --output-len must be >= 1, --range-ratio in [0, 1), --sigma in [0, 3]")

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (prompt, reply) lengths."""
        if self.kind == "trace":
            assert self.trace is not None
            pick = rng.integers(0, len(self.trace.input_tokens), n)
            return self.trace.input_tokens[pick], self.trace.output_tokens[pick]
        if self.kind == "fixed":
            return np.full(n, self.input_len), np.full(n, self.output_len)
        if self.kind == "uniform":
            r = self.range_ratio
            return (rng.integers(max(int(self.input_len * (1 - r)), 1), int(self.input_len * (1 + r)) + 1, n),
                    rng.integers(max(int(self.output_len * (1 - r)), 1), int(self.output_len * (1 + r)) + 1, n))  # fmt: skip
        mu = -(self.sigma**2) / 2  # lognormal of mean 1: exp(mu + sigma^2 / 2) = 1
        return (np.maximum(np.rint(self.input_len * rng.lognormal(mu, self.sigma, n)), 1).astype(np.int64),
                np.maximum(np.rint(self.output_len * rng.lognormal(mu, self.sigma, n)), 1).astype(np.int64))  # fmt: skip


def generated(n: int, rate: float, burstiness: float, lengths: Lengths, seed: int = 0, turns: int = 1, think_s: float = 0.0,
              unit_tokens: int = 16) -> list[Req]:  # fmt: skip
    """``n`` requests: sessions of ``turns`` turns starting at gamma arrivals of ``rate`` per second (a session's later
    turns follow its replies); with more than one turn, prompts carry hash ids of ``unit_tokens`` tokens for their history."""
    if n < 1 or not rate > 0 or not burstiness > 0 or turns < 1 or think_s < 0:
        raise UsageError("traffic: requests >= 1, rate > 0, burstiness > 0, turns >= 1 and think time >= 0 are needed")
    rng = np.random.default_rng(seed)
    sessions = -(-n // turns)
    starts = arrival_offsets(sessions, rate, burstiness, seed)
    new_in, outs = lengths.draw(sessions * turns, rng)
    thinks = rng.exponential(think_s, sessions * turns) if think_s > 0 else np.zeros(sessions * turns)
    firsts: list[Req] = []
    rid = 0
    for s in range(sessions):
        history, prev = 0, None
        for j in range(min(turns, n - s * turns)):
            i = s * turns + j
            prompt = history + int(new_in[i])
            ids = range(s * SESSION_ID_STRIDE, s * SESSION_ID_STRIDE + (prompt + int(outs[i])) // unit_tokens) if turns > 1 else None
            q = Req(rid, starts[s] if prev is None else -1.0, prompt, int(outs[i]), ids, think_s=float(thinks[i]))
            rid += 1
            if prev is None:
                firsts.append(q)
            else:
                prev.follow = q
            history, prev = prompt + int(outs[i]), q
    return firsts


def replay(trace: Trace, rate: float | None = None, n: int | None = None) -> list[Req]:
    """The first ``n`` requests of ``trace`` (all by default) at their recorded times, scaled so that their own mean rate
    becomes ``rate`` requests/s (as recorded when None; core/traces.scaled_arrivals), with the trace's own hash ids."""
    if rate is not None and not rate > 0:
        raise UsageError(f"a trace is replayed at a positive rate, got {rate}")
    arrivals = scaled_arrivals(trace, rate, len(trace.arrival_s) if n is None else n)
    ids = trace.hash_ids
    return [Req(i, float(t), int(trace.input_tokens[i]), int(trace.output_tokens[i]), ids[i] if ids is not None else None)
            for i, t in enumerate(arrivals)]  # fmt: skip


def admissible(firsts: list[Req], max_len: int) -> tuple[list[Req], int]:
    """The requests whose prompt and reply fit ``max_len`` tokens (the model's context, and the KV one instance holds), and
    how many were left out: the engine refuses a longer request (vLLM answers HTTP 400), and a session ends at its first."""
    kept, dropped = [], 0
    for q in firsts:
        prev, turn, fits = None, q, True
        while turn is not None:
            if fits and turn.prompt + turn.output > max_len:
                fits = False
                if prev is not None:
                    prev.follow = None
            if not fits:
                dropped += 1
            elif prev is None:
                kept.append(turn)
            prev, turn = turn, turn.follow
    return kept, dropped
