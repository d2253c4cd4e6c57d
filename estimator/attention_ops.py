"""Attention by layer kind: the projections and the attention of every layer that attends, each over the tokens its
kind keeps (core/shapes.py names the kinds).

- global and MLA layers attend the whole context;
- sliding-window layers (Mistral, Gemma 3, gpt-oss, Qwen's windowed layers) attend and keep at most their last
  ``window`` tokens: a decode step reads min(context, window) tokens of KV and scores as many; a prefill token at
  position p attends min(p, window), so a prompt's mean is the integral of min(p, window) over its positions;
- chunked local layers (Llama 4) attend within the current ``window``-token chunk: a token at position p attends
  p mod window (plus itself). A decode step at a context within the first chunk attends the context; past it, the
  batch's sequences sit anywhere in their current chunk, half a chunk on average;
- linear-attention and Mamba-2 layers do not attend (mixer_ops.py).

Attention sinks (gpt-oss: one learned logit per head, added to each softmax's denominator) are not an operator of their
own: per query token and head they add one exponential and one addition to a softmax over the attended tokens, against
4 x head_dim x attended FLOPs of scores and values (4 x 64 x 128 = 32,768 for gpt-oss's 64-wide heads over its 128-token
window: under 0.01%), and their weights are one value per head and layer (64 x 2 bytes) read beside the attended tokens'
KV (2 x 8 heads x 64 x 128 tokens x 2 bytes per sequence). They are left out, as negligible, and said so here.

Decode attention's efficiency: MLA runs FlashMLA's figures (attention_decode); grouped-query attention the engine's
measured share of the bandwidth at its heads ratio where the measured operator database holds the engine's kernel, else
its own published figure, FlashInfer's decode kernels (attention_decode_gqa in kernels.toml), never FlashMLA's
(kernels.Kernels.attention decides).
"""

from __future__ import annotations

from core.dtypes import BYTES_PER_DTYPE
from core.opcounts import mla_prefill_attention_flops
from core.shapes import Shapes
from estimator.batch import Batch, Op, OpCost
from estimator.kv_cache import cache_specs


def attention_layers(s: Shapes) -> dict[tuple[str, int], int]:
    """Layers that attend, by (kind, window): e.g. Gemma 3 27B {("sliding", 1024): 52, ("global", 0): 10}; the cache
    specs (kv_cache.cache_specs) less the fixed-state layers."""
    return {spec: n for spec, n in cache_specs(s).items() if spec[0] != "state"}


def decode_attended(kind: str, window: int, context: float) -> float:
    """Tokens one decode query of a layer of ``kind`` attends (and whose KV it reads) at ``context`` (module docstring)."""
    if not window or kind not in ("sliding", "chunked"):
        return context
    if kind == "sliding" or context <= window:
        return min(context, window)
    return window / 2


def _area(kind: str, window: int, x: float) -> float:
    """The integral over positions 0..x of the tokens a query at each position attends: x^2 / 2 for global attention;
    for a window w, x^2 / 2 up to w then w per position; for chunks of w, w^2 / 2 per whole chunk plus (x mod w)^2 / 2."""
    if not window or kind not in ("sliding", "chunked"):
        return x * x / 2
    if kind == "sliding":
        return x * x / 2 if x <= window else window * window / 2 + window * (x - window)
    whole, rest = divmod(x, window)
    return whole * window * window / 2 + rest * rest / 2


def prefill_attended(kind: str, window: int, start: float, end: float) -> float:
    """Mean tokens attended by the prompt positions start..end (the uncached part of a prompt): the prefill attention
    FLOPs of a prompt are the sum over its positions of what each attends (for a window, of min(position, window))."""
    if end <= start:
        return decode_attended(kind, window, end)
    return (_area(kind, window, end) - _area(kind, window, start)) / (end - start)


def _projections(x: Batch, layers: int) -> list[OpCost]:
    lin = x.s.linears
    costs = [x.gemm(Op.ATTENTION_PROJECTIONS, *lin[n], layers, split=1 if n in ("q_a_proj", "kv_a_proj") else None)
             for n in ("q_a_proj", "q_b_proj", "kv_a_proj", "qkv_proj") if n in lin]  # fmt: skip
    return [*costs, x.gemm(Op.ATTENTION_PROJECTIONS, *lin["o_proj"], layers, row_parallel=True)]


def _mla(x: Batch, layers: int) -> list[OpCost]:
    """MLA attention: absorbed in decode (queries into the latent, the latent out to values, BF16 bmm), not absorbed in
    prefill (the latents of the whole context up-projected, then 192/128-wide heads attend)."""
    s, tp, m = x.s, x.layout.tp, x.m
    h_, kv_bytes = s.heads / tp, BYTES_PER_DTYPE[x.kv_dtype]
    r, rope, nope, v = s.mla["kv_lora_rank"], s.mla["rope"], s.mla["nope"], s.mla["v"]
    if x.phase == "decode":
        costs = [OpCost(Op.ATTENTION_PROJECTIONS, 2 * m * h_ * kk * nn, h_ * kk * nn * 2 + m * h_ * (kk + nn) * 2, "bf16",
                        x.k.figure("grouped_gemm"), layers) for kk, nn in ((nope, r), (r, v))]  # fmt: skip
        kv_b = x.seqs * tp * x.context * (r + rope) * kv_bytes
        flops = m * s.decode_attention_flops(x.context) / tp
        costs.append(OpCost(Op.ATTENTION, flops, kv_b, "bf16", x.k.figure("attention_decode"), layers))
        return costs
    return [
        x.gemm(Op.ATTENTION_PROJECTIONS, r, s.heads * (nope + v), layers, mm=m / max(x.uncached_share, 1e-9)),
        OpCost(Op.ATTENTION, m * mla_prefill_attention_flops(s, x.context) / tp, m * h_ * (2 * (nope + rope) + 2 * v) * 2, "bf16",
               x.k.figure("attention_prefill"), layers),
    ]  # fmt: skip


def _attended(x: Batch, kind: str, window: int) -> float:
    if kind == "global" or not window:
        return x.context  # decode: the context; prefill: the uncached positions' mean, cached + uncached / 2
    if x.phase == "decode":
        return decode_attended(kind, window, x.context)
    return prefill_attended(kind, window, x.prompt_len * (1 - x.uncached_share), x.prompt_len)


def attention_costs(x: Batch) -> list[OpCost]:
    """The attention projections and attention of every layer that attends, each group of layers over the tokens its
    kind attends (module docstring)."""
    s, tp, m, groups = x.s, x.layout.tp, x.m, attention_layers(x.s)
    layers = sum(groups.values())
    if not layers:
        return []
    costs = _projections(x, layers)
    if s.mla:
        return costs + _mla(x, layers)
    h_, kvh, kv_bytes = s.heads / tp, max(s.kv_heads / tp, 1), BYTES_PER_DTYPE[x.kv_dtype]
    for (kind, window), n in groups.items():
        ctx = _attended(x, kind, window)
        flops = m * s.decode_attention_flops(ctx) / tp  # prefill too: each query token attending its mean context
        eff = x.k.attention(x.gpu, x.phase, m, ctx, s.heads // tp, int(kvh), s.head_dim, x.kv_dtype)  # kernels.Kernels.attention
        if x.phase == "decode":
            costs.append(OpCost(Op.ATTENTION, flops, x.seqs * tp * ctx * 2 * kvh * s.head_dim * kv_bytes, "bf16", eff, n))
        else:
            costs.append(OpCost(Op.ATTENTION, flops, m * (2 * h_ + 2 * kvh) * s.head_dim * 2, "bf16", eff, n))
    return costs
