"""Reading a config.json, without transformers or remote code, into one architecture description (core/shapes.py).

The family (core/families.py, from the config's model_type) names the reader of its layer stack: grouped-query attention
(``gqa``: Llama, Mistral, Qwen2/3, Phi-3, Gemma 3, Mixtral, Qwen3-MoE, gpt-oss, Llama 4, GLM-4.5), DeepSeek's latent
attention (``mla``: DeepSeek-V3, Kimi K2), Qwen3-Next's gated DeltaNet beside full attention (``gated_deltanet``) and
Nemotron-H's Mamba-2 / attention / MLP blocks (``mamba2_hybrid``). Any field the cost needs that is missing is refused
in one line naming it (core/config_fields.py).
"""

from __future__ import annotations

from typing import Any

from core.config_fields import attention_kinds, ffn_side, layer_stack, moe_mask, need_int, read_details, text_model
from core.errors import CatalogError
from core.families import Family, family_of
from core.quant import read_checkpoint
from core.shapes import Layer, Shapes

FFN_KEYS = ("expert_k_n", "num_experts", "experts_per_token", "shared_experts", "node_limited_topk")


def _attention(cfg: dict[str, Any], fam: Family, name: str, h: int, heads: int) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """(kv_heads, head_dim, linears) of grouped-query attention; Qwen3-Next's output gate doubles the query projection."""
    kv = need_int(cfg, "num_key_value_heads", name, fam, heads)
    d = need_int(cfg, "head_dim", name, fam, need_int(cfg, "attention_head_dim", name, fam, h // heads))
    if not (kv and d) or heads % kv:
        raise CatalogError(f"model {name!r}: {heads} attention heads cannot share {kv} key/value heads of width {d}")
    q = heads * (2 if fam.attn_gate else 1)
    return kv, d, {"qkv_proj": (h, (q + 2 * kv) * d), "o_proj": (heads * d, h)}


def _gqa(cfg: dict[str, Any], fam: Family, name: str, c: dict[str, Any]) -> Shapes:
    """Grouped-query attention in every layer (of the family's kinds: global, sliding, chunked), dense FFN or experts."""
    h, n = c["hidden"], c["num_layers"]
    kv, d, linears = _attention(cfg, fam, name, h, c["heads"])
    kinds = attention_kinds(cfg, fam, n, c["max_context"], name)
    moe = moe_mask(cfg, fam, n, name) if fam.is_moe else [False] * n
    f = ffn_side(cfg, fam, name, h, moe)
    extra: dict[str, Any] = {}
    if fam.reader == "gated_deltanet":
        extra, linear_maps = _deltanet(cfg, fam, name, h)
        linears.update(linear_maps)
    return Shapes(**c, kv_heads=kv, head_dim=d, linears={**linears, **f["linears"], "lm_head": (h, c["vocab"])},
                  dense_layers=n - sum(moe), layers=layer_stack(kinds, moe, fam), **{k: f[k] for k in FFN_KEYS if k in f},
                  **extra)  # fmt: skip


def _deltanet(cfg: dict[str, Any], fam: Family, name: str, h: int) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Qwen3-Next's linear-attention layers: the gated DeltaNet's head geometry and its two projections
    (in: queries, keys, values, the output gate z, and the b, a gates; out: values back to the hidden size)."""
    keys_of = {"key_heads": "linear_num_key_heads", "value_heads": "linear_num_value_heads", "key_dim": "linear_key_head_dim",
               "value_dim": "linear_value_head_dim", "conv_kernel": "linear_conv_kernel_dim"}  # fmt: skip
    m = {k: need_int(cfg, key, name, fam) for k, key in keys_of.items()}
    keys, values = m["key_heads"] * m["key_dim"], m["value_heads"] * m["value_dim"]
    return {"mixer": m}, {"linear_in_proj": (h, 2 * keys + 2 * values + 2 * m["value_heads"]), "linear_out_proj": (values, h)}


def _mla(cfg: dict[str, Any], fam: Family, name: str, c: dict[str, Any]) -> Shapes:
    """MLA (DeepSeek-V2/V3, Kimi K2): low-rank query and latent KV projections, shared and routed experts. Without a
    query LoRA (q_lora_rank null) the query projection is q_b_proj from the hidden size."""
    h, heads, n = c["hidden"], c["heads"], c["num_layers"]
    r, rope, nope, v = (need_int(cfg, k, name, fam) for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"))
    q_rank = need_int(cfg, "q_lora_rank", name, fam, 0)
    attn = {"q_a_proj": (h, q_rank), "q_b_proj": (q_rank, heads * (nope + rope))} if q_rank else {"q_b_proj": (h, heads * (nope + rope))}
    attn.update({"kv_a_proj": (h, r + rope), "o_proj": (heads * v, h)})
    moe = moe_mask(cfg, fam, n, name)
    f = ffn_side(cfg, fam, name, h, moe)
    return Shapes(**c, kv_heads=1, head_dim=r + rope, linears={**attn, **f["linears"], "lm_head": (h, c["vocab"])},
                  mla={"kv_lora_rank": r, "rope": rope, "nope": nope, "v": v}, dense_layers=n - sum(moe),
                  layers=layer_stack([("mla", 0)] * n, moe, fam), **{k: f[k] for k in FFN_KEYS if k in f})  # fmt: skip


BLOCKS = {"M": Layer("mamba", 0, "none"), "*": Layer("global", 0, "none"), "-": Layer("none", 0, "dense")}


def _mamba2_hybrid(cfg: dict[str, Any], fam: Family, name: str, c: dict[str, Any]) -> Shapes:
    """Nemotron-H: a block per character of ``hybrid_override_pattern`` (M Mamba-2, * attention, - squared-ReLU MLP)."""
    h, n = c["hidden"], c["num_layers"]
    pattern = cfg.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or len(pattern) != n:
        raise CatalogError(f"model {name!r}: config.json (nemotron_h) needs a 'hybrid_override_pattern' of {n} blocks")
    if set(pattern) - set(BLOCKS):
        raise CatalogError(f"model {name!r}: hybrid_override_pattern blocks {sorted(set(pattern) - set(BLOCKS))} are not read (E: MoE)")
    kv, d, linears = _attention(cfg, fam, name, h, c["heads"])
    keys_of = {"heads": "mamba_num_heads", "head_dim": "mamba_head_dim", "state": "ssm_state_size", "groups": "n_groups",
               "conv_kernel": "conv_kernel"}  # fmt: skip
    m = {k: need_int(cfg, key, name, fam) for k, key in keys_of.items()}
    inner, inter = m["heads"] * m["head_dim"], need_int(cfg, "intermediate_size", name, fam)
    linears.update({"up": (h, inter), "down": (inter, h), "mamba_in_proj": (h, 2 * inner + 2 * m["groups"] * m["state"] + m["heads"]),
                    "mamba_out_proj": (inner, h), "lm_head": (h, c["vocab"])})  # fmt: skip
    layers = tuple(BLOCKS[ch] for ch in pattern)
    return Shapes(**c, kv_heads=kv, head_dim=d, linears=linears, dense_layers=pattern.count("-"), layers=layers, mixer=m)


READERS = {"gqa": _gqa, "gated_deltanet": _gqa, "mla": _mla, "mamba2_hybrid": _mamba2_hybrid}


def read_shapes(cfg: dict[str, Any], name: str) -> Shapes:
    """The one architecture description of a config.json's contents (see the module docstring)."""
    if not isinstance(cfg, dict):
        raise CatalogError(f"model {name!r}: config.json is not a JSON object")
    top_fam = family_of(cfg, name)
    text, fam = text_model(cfg, top_fam, name)
    text = {**fam.defaults, **{k: v for k, v in text.items() if v is not None}}
    h, heads, n = (need_int(text, k, name, fam) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers"))
    if not (h and heads and n):
        raise CatalogError(f"model {name!r}: hidden_size, num_attention_heads and num_hidden_layers must be positive")
    context = need_int(text, "max_position_embeddings", name, fam, 0)
    common: dict[str, Any] = {
        "name": name, "hidden": h, "heads": heads, "vocab": need_int(text, "vocab_size", name, fam), "num_layers": n,
        "max_context": context, "mtp_modules": need_int(text, "num_nextn_predict_layers", name, fam, 0), "model_type": top_fam.model_type,
        "tied_embeddings": bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", fam.tie))),
        "details": read_details(text, fam), "checkpoint": read_checkpoint({**text, **cfg}, name),
    }  # fmt: skip
    if fam.reader not in READERS:
        raise CatalogError(f"model {name!r}: reader {fam.reader!r} of family {fam.model_type!r} is not known")
    return READERS[fam.reader](text, fam, name, common)
