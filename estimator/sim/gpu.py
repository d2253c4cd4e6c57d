"""A step's time on a GPU from the per-operator serving model (estimator/serving.step, what ``fleetcal predict --gpu``
uses), tabulated: one call of the model costs about 86 us, a simulated run makes millions of steps.

A step of b decoding sequences and c prompt tokens is priced as ``fleetcal plan`` prices aggregated serving
(estimator/planning.py): the decode step at b sequences per instance (b / TP per GPU) and their mean KV, plus the chunk's
tokens at the rate of a prefill step of the whole token budget at the chunk's context (the weights are read once, by the
decode step); a step with no decoding sequence is a prefill step of its c tokens. A chunk of c tokens after p computed
ones enters the prefill step as a prompt of p + c tokens with p of them cached (its tokens attend p + c/2 on average);
several prompts' chunks with a mean attended length x under c/2 as prompts of 2x tokens.

The table: decode steps on a grid of batch (every batch to 16, then 8% apart, and every power of two) and mean KV (doubling), prefill steps
on a grid of chunk tokens (25% apart) and context (doubling), read by linear interpolation between grid points
(tests/test_sim_steps.py compares it with the model on sampled points).
"""

from __future__ import annotations

import bisect
import math

from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels
from estimator.serving import step
from estimator.sim.engine import gpu_engine_rules
from estimator.sim.fleet import Pool


def _grid(lo: float, hi: float, factor: float, dense_to: int = 0) -> list[float]:
    pts = [float(i) for i in range(max(int(lo), 1), dense_to + 1)]
    x = max(lo, float(dense_to)) if dense_to else lo
    while x < hi:
        pts.append(x)
        x = max(x * factor, x + 1)
    return sorted(set(pts + [float(hi)]))


def _interp(xs: list[float], x: float) -> tuple[int, float]:
    """(index of the grid point at or below ``x``, share of the way to the next), clamped to the grid."""
    if x <= xs[0]:
        return 0, 0.0
    if x >= xs[-1]:
        return len(xs) - 2, 1.0
    i = bisect.bisect_right(xs, x) - 1
    return i, (x - xs[i]) / (xs[i + 1] - xs[i])


def _bilinear(xs: list[float], ys: list[float], table: list[list[float]], x: float, y: float) -> float:
    i, fx = _interp(xs, x)
    j, fy = _interp(ys, y)
    a, b = table[i], table[i + 1]
    return (1 - fx) * ((1 - fy) * a[j] + fy * a[j + 1]) + fx * ((1 - fy) * b[j] + fy * b[j + 1])


class GpuSteps:
    """The serving model's step time of one instance (``layout`` on ``gpu``), exact (``exact``) and tabulated (call)."""

    def __init__(self, a: Arch, gpu: Device, layout: Layout, k: Kernels, *, budget: int, max_seqs: int, max_context: int,
                 mtp_tokens: int = 0, kv_dtype: str = "bf16") -> None:  # fmt: skip
        self.a, self.gpu, self.layout, self.k = a, gpu, layout, k
        self.budget, self.mtp, self.kv_dtype, self.tp = budget, mtp_tokens, kv_dtype, layout.tp
        pow2 = [float(2**i) for i in range(4, 20) if 2**i < max_seqs]  # measured GEMM curves bend at their points, powers of two
        # the step jumps past each captured CUDA-graph size and where the measured GEMMs change tiles (Kernels.row_edges): both
        # sides of every edge are grid points, so the table interpolates only between jumps
        edges = list(k.row_edges(gpu.name))  # the chunk's tokens are a prefill step's GEMM rows: the same edges
        self.bs = sorted(set(_grid(1, max_seqs, 1.08, 16) + pow2 + [e for e in edges if e <= max_seqs]))
        self.ctxs = _grid(1, max_context, 2.0)
        self.cs, self.xs = sorted(set(_grid(1, budget, 1.25, 8) + [e for e in edges if e <= budget])), _grid(0.5, max_context, 2.0)
        self.decode = [[self.decode_exact(b, x) for x in self.ctxs] for b in self.bs]
        self.prefill = [[self.prefill_exact(c, x) for x in self.xs] for c in self.cs]
        self.per_chunk_token = [self.prefill_exact(budget, x) / budget for x in self.xs]

    def decode_exact(self, b: float, context: float) -> float:
        return step(self.a, self.gpu, self.layout, self.k, "decode", batch_per_gpu=b / self.tp, context=context, mtp_tokens=self.mtp,
                    kv_dtype=self.kv_dtype).seconds  # fmt: skip

    def prefill_exact(self, c: float, x: float) -> float:
        p = x - c / 2
        prompt, cached = (p + c, p / (p + c)) if p > 0 else (max(2 * x, 1.0), 0.0)
        return step(self.a, self.gpu, self.layout, self.k, "prefill", tokens_per_gpu=c / self.tp, prompt_len=prompt,
                    cached_fraction=cached, kv_dtype=self.kv_dtype).seconds  # fmt: skip

    def exact(self, decode_seqs: int, decode_kv_tokens: float, chunk_tokens: int, chunk_context: float) -> float:
        """The step from the serving model itself (slow: two model calls)."""
        if not decode_seqs:
            return self.prefill_exact(chunk_tokens, chunk_context)
        t = self.decode_exact(decode_seqs, decode_kv_tokens / decode_seqs)
        return t + (chunk_tokens * self.prefill_exact(self.budget, chunk_context) / self.budget if chunk_tokens else 0.0)

    def __call__(self, decode_seqs: int, decode_kv_tokens: float, chunk_tokens: int, chunk_context: float) -> float:
        if not decode_seqs:
            return _bilinear(self.cs, self.xs, self.prefill, chunk_tokens, chunk_context)
        t = _bilinear(self.bs, self.ctxs, self.decode, decode_seqs, decode_kv_tokens / decode_seqs)
        if chunk_tokens:
            i, f = _interp(self.xs, chunk_context)
            t += chunk_tokens * ((1 - f) * self.per_chunk_token[i] + f * self.per_chunk_token[i + 1])
        return t


def gpu_pool(a: Arch, gpu: Device, layout: Layout, k: Kernels, *, max_context: float = math.inf, kv_dtype: str = "bf16",
             mtp_tokens: int = 0, prefix_caching: bool = True, budget: int | None = None, max_seqs: int | None = None,
             block_size: int | None = None, instances: int = 1, router: str = "round-robin") -> Pool:  # fmt: skip
    """``instances`` engines of ``layout`` on ``gpu`` under vLLM's rules (sim/engine.gpu_engine_rules, each rule given here
    overriding its default) with the serving model's step table up to the KV an engine holds or ``max_context``."""
    rules = gpu_engine_rules(a, gpu, layout, k, kv_dtype=kv_dtype, mtp_tokens=mtp_tokens, prefix_caching=prefix_caching,
                             budget=budget, max_seqs=max_seqs, block_size=block_size)  # fmt: skip
    steps = GpuSteps(a, gpu, layout, k, budget=rules.max_num_batched_tokens, max_seqs=rules.max_num_seqs,
                     max_context=int(min(max_context, rules.kv_tokens)), mtp_tokens=mtp_tokens, kv_dtype=kv_dtype)  # fmt: skip
    return Pool(rules, steps, instances, router)
