"""Parameter counts from an architecture description (core/shapes.py), without torch or transformers: a formula per
component, summed over the layers as the family builds them.

Each formula counts what the model's Hugging Face implementation holds as parameters (the modules of
transformers' modeling_<family>.py): the linear maps (K x N each), their biases where the family has them, the RMS
norms' weights, and the small tensors some families add (gpt-oss's attention sinks, Qwen3-Next's shared-expert gate,
Mamba-2's dt_bias / A_log / D). ``tests/test_param_cache.py`` checks every catalogued config against transformers'
own count on the meta device (core/param_cache.py), to the parameter.
"""

from __future__ import annotations

from core.quant import COMPONENTS
from core.shapes import Shapes

ATTENTION = ("global", "sliding", "chunked")


def _kn(s: Shapes, *names: str) -> int:
    return sum(k * n for name, (k, n) in s.linears.items() if name in names)


def _out(s: Shapes, name: str) -> int:
    return s.linears[name][1] if name in s.linears else 0


def gqa_attention_params(s: Shapes) -> int:
    """One grouped-query attention block: QKV and output projections, their biases, per-head-dim Q/K norms, sinks."""
    d = s.details
    return (_kn(s, "qkv_proj", "o_proj") + (_out(s, "qkv_proj") if d.qkv_bias else 0) + (s.hidden if d.o_bias else 0)
            + (2 * s.head_dim if d.qk_norm else 0) + (s.heads if d.sinks else 0))  # fmt: skip


def mla_attention_params(s: Shapes) -> int:
    """One MLA block (DeepSeek-V3 report, 2.1.1): query down/up projections (and the query latent's norm), the joint KV
    down-projection and its latent's norm, the K/V up-projection kv_b (kv_lora_rank x heads (nope + v)), the output."""
    m = s.mla
    q_norm = _out(s, "q_a_proj")
    kv_b = m["kv_lora_rank"] * s.heads * (m["nope"] + m["v"])
    return _kn(s, "q_a_proj", "q_b_proj", "kv_a_proj", "o_proj") + q_norm + m["kv_lora_rank"] + kv_b


def linear_attention_params(s: Shapes) -> int:
    """One gated DeltaNet block (Qwen3-Next): in/out projections, a depthwise causal conv over queries, keys and values
    (no bias), dt_bias and A_log per value head, and the gated RMS norm over a value head's width."""
    m = s.mixer
    conv = (2 * m["key_heads"] * m["key_dim"] + m["value_heads"] * m["value_dim"]) * m["conv_kernel"]
    return _kn(s, "linear_in_proj", "linear_out_proj") + conv + 2 * m["value_heads"] + m["value_dim"]


def mamba2_params(s: Shapes) -> int:
    """One Mamba-2 mixer (Dao & Gu 2024): in/out projections, a depthwise conv with bias over x, B and C
    (heads x head_dim + 2 groups x state channels), dt_bias, A_log and D per head, the gated norm over the inner width."""
    m = s.mixer
    inner = m["heads"] * m["head_dim"]
    conv_channels = inner + 2 * m["groups"] * m["state"]
    return _kn(s, "mamba_in_proj", "mamba_out_proj") + conv_channels * (m["conv_kernel"] + 1) + 3 * m["heads"] + inner


def mixer_params(s: Shapes, kind: str) -> int:
    """One layer's attention or sequence mixer of ``kind``."""
    if kind in ATTENTION:
        return gqa_attention_params(s)
    return {"mla": mla_attention_params, "linear": linear_attention_params, "mamba": mamba2_params}.get(kind, lambda _: 0)(s)


def dense_ffn_params(s: Shapes) -> int:
    """One dense FFN: gate/up (or up alone) and down, with biases where the family has them."""
    names = ("gate_up", "down", "dense_gate_up", "dense_down", "up")
    bias = sum(_out(s, n) for n in names) if s.details.mlp_bias else 0
    return _kn(s, *names) + bias


def routed_expert_params(s: Shapes) -> int:
    """One routed expert: gate/up and down (K x N each), with gpt-oss's per-expert biases (2 x width + hidden)."""
    weights = sum(k * n for k, n in s.expert_k_n)
    return weights + (s.expert_k_n[0][1] + s.hidden if s.details.expert_bias and s.expert_k_n else 0)


def router_params(s: Shapes) -> int:
    """One MoE layer's router: experts x hidden (and a bias per expert in gpt-oss)."""
    return s.num_experts * s.hidden + (s.num_experts if s.details.router_bias else 0)


def shared_expert_params(s: Shapes) -> int:
    """One MoE layer's shared experts (and Qwen3-Next's sigmoid gate on them, hidden -> 1)."""
    return _kn(s, "shared_gate_up", "shared_down") + (s.hidden if s.details.shared_gate and "shared_gate_up" in s.linears else 0)


def component_params(s: Shapes) -> dict[str, int]:
    """Parameters by component (the components of core/quant.py), over all layers; they sum to the total."""
    out = dict.fromkeys(COMPONENTS, 0)
    out["embedding"] = s.vocab * s.hidden
    out["lm_head"] = 0 if s.tied_embeddings else s.vocab * s.hidden
    out["norms"] = s.num_layers * s.details.norms_per_layer * s.hidden + s.hidden  # every layer's norms and the final one
    for layer in s.layers:
        out["attention" if layer.mixer in (*ATTENTION, "mla") else "mixer"] += mixer_params(s, layer.mixer)
        if layer.ffn == "dense":
            out["dense_ffn"] += dense_ffn_params(s)
        elif layer.ffn == "moe":
            out["router"] += router_params(s)
            out["shared_experts"] += shared_expert_params(s)
            out["routed_experts"] += s.num_experts * routed_expert_params(s)
    return out


def total_params(s: Shapes) -> int:
    """All parameters of the architecture (the MTP modules transformers does not build are not counted, as published)."""
    return sum(component_params(s).values())
