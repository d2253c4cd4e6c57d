"""A step's time on this machine's CPU from the CPU step model (estimator/cpu_steps.py, what ``fleetcal predict --device
cpu`` uses): vLLM's operators read off the curves measured here, plus the engine's per-step and per-sequence overhead.

A step carries T = decoding sequences + chunk tokens through every layer's GEMMs and elementwise work, attends the
decoding sequences' KV (decode attention against their KV tokens) and the chunk (prefill attention of a prompt with as
many query-key pairs: c (p + c/2) for c tokens after p computed ones, i.e. a prompt of sqrt(2 c x) tokens at mean
attended length x), and samples one token per decoding sequence and one for the chunk. With no chunk this is
cpu_steps.decode_ops, with no decoding sequence and one whole prompt prefill_ops (tests/test_sim_steps.py checks both).
The GEMM, elementwise and sampling parts are tabulated at every token count up to the budget at construction.
"""

from __future__ import annotations

import math

from estimator.cpu_steps import OperatorCurves, Overhead


class CpuSteps:
    """The CPU step model of one engine whose steps carry at most ``max_tokens`` tokens."""

    def __init__(self, curves: OperatorCurves, overhead: Overhead, max_tokens: int) -> None:
        self.c, self.o, self.layers = curves, overhead, curves.shapes.num_layers
        layers = [k for k in curves.gemm if k != "lm_head"]
        self.lin = [0.0] + [self.layers * (sum(curves.gemm[k](t) for k in layers) + curves.elementwise(t))
                            for t in range(1, max_tokens + 1)]  # fmt: skip
        self.head: dict[int, float] = {}

    def _head(self, rows: int) -> float:
        """LM head and sampling over ``rows`` sampled tokens (tabulated as asked)."""
        if rows not in self.head:
            self.head[rows] = self.c.gemm["lm_head"](rows) + self.c.sampling(rows)
        return self.head[rows]

    def __call__(self, decode_seqs: int, decode_kv_tokens: float, chunk_tokens: int, chunk_context: float) -> float:
        tokens = decode_seqs + chunk_tokens
        lin = self.lin[tokens] if tokens < len(self.lin) else self.lin[-1] * tokens / (len(self.lin) - 1)
        t = lin + self._head(decode_seqs + (1 if chunk_tokens else 0))
        if decode_seqs:
            t += self.layers * self.c.attention_decode(decode_kv_tokens)
        if chunk_tokens:
            t += self.layers * self.c.attention_prefill(math.sqrt(2 * chunk_tokens * chunk_context))
        return t + self.o.per_step + self.o.per_sequence * (decode_seqs + (1 if chunk_tokens else 0))
