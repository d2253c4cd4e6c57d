"""FLOP, byte and parameter counts of one layer's operators, from a model's shapes (core/shapes.py).

Small pure formulas, each with its source in the docstring; the serving model (estimator/serving.py)
and the backtest sum them per step.
"""

from __future__ import annotations

import math

from core.shapes import Shapes


def _z(n: int) -> float:
    """About the expected maximum of ``n`` standard normal draws (√(2 ln n)); 0 for one."""
    return math.sqrt(2 * math.log(n)) if n > 1 else 0.0


def imbalance(mean_units: float, cv: float, ranks: int) -> float:
    """Slowest of ``ranks`` GPUs over the mean, when each GPU's load sums ``mean_units`` random units of coefficient of variation ``cv``."""
    if mean_units <= 0 or ranks <= 1:
        return 1.0
    return 1.0 + _z(ranks) * cv / math.sqrt(mean_units)


def mla_prefill_attention_flops(s: Shapes, context: float) -> float:
    """FLOPs of one query token attending ``context`` tokens in one layer, MLA not absorbed (prefill):
    scores over 128 heads of (nope + rope) = 192 and values of 128: 2 · H · context · (192 + 128)."""
    return 2 * s.heads * context * (s.mla["nope"] + s.mla["rope"] + s.mla["v"])


def expert_gemm_flops(s: Shapes, pairs: float) -> float:
    """FLOPs of the routed experts for ``pairs`` (token, expert) assignments in one layer: 2 · pairs · Σ K·N."""
    return sum(2 * pairs * kk * nn for kk, nn in s.expert_k_n)


def ep_bytes_per_token(s: Shapes, copies: float) -> tuple[float, float]:
    """(dispatch, combine) bytes one token sends per MoE layer to ``copies`` destinations: FP8 out, BF16 back."""
    return copies * s.hidden * 1.0, copies * s.hidden * 2.0


def _params(s: Shapes, names: tuple[str, ...]) -> int:
    return sum(k * n for name, (k, n) in s.linears.items() if name in names)


def attention_params(s: Shapes) -> int:
    """Parameters of one layer's attention projections (MLA: with kv_b_proj, the absorbed up-projections)."""
    attn = _params(s, ("q_a_proj", "q_b_proj", "kv_a_proj", "o_proj", "qkv_proj"))
    return attn + (s.mla["kv_lora_rank"] * s.heads * (s.mla["nope"] + s.mla["v"]) if s.mla else 0)


def moe_shared_params(s: Shapes) -> int:
    """Parameters of one MoE layer's FFN outside its routed experts: the shared experts and the router."""
    return _params(s, ("shared_gate_up", "shared_down")) + s.hidden * s.num_experts


def replicated_params(s: Shapes) -> float:
    """Parameters outside the routed experts: embedding, attention, dense FFN, shared experts, routers, LM head."""
    ffn = _params(s, ("dense_gate_up", "dense_down", "gate_up", "down"))
    return s.num_layers * attention_params(s) + s.dense_layers * ffn + s.moe_layers * moe_shared_params(s) + 2 * s.vocab * s.hidden


def mtp_module_params(s: Shapes) -> float:
    """Parameters of one multi-token-prediction module outside its routed experts: one more MoE layer (attention,
    shared expert, router) and the projection of [hidden; embedding] back to the hidden size, 2h × h; the embedding
    and output head are the main model's (DeepSeek-V3 technical report, section 2.2)."""
    return attention_params(s) + moe_shared_params(s) + 2 * s.hidden * s.hidden


def expert_params(s: Shapes) -> float:
    """Parameters of one routed expert."""
    return sum(k * n for k, n in s.expert_k_n)
