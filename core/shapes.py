"""Operator shapes of an architecture, read from its own config.json: what the operator benchmarks time
and what the serving model sums. DeepSeek-style MLA and MoE, and dense GQA models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Shapes", "shapes_from_config"]


@dataclass(frozen=True)
class Shapes:
    """The operator shapes of one architecture, read from its config.json."""

    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    linears: dict[str, tuple[int, int]]  # name -> (K, N) of one layer's linear maps
    expert_k_n: tuple[tuple[int, int], ...] = ()  # routed expert gate_up and down (K, N)
    mla: dict[str, int] = field(default_factory=dict)  # kv_lora_rank, rope, nope, v
    num_layers: int = 0
    dense_layers: int = 0  # layers with a dense FFN (all of them in a dense model)
    num_experts: int = 0  # routed experts per MoE layer
    experts_per_token: int = 0
    shared_experts: int = 0

    @property
    def moe_layers(self) -> int:
        return self.num_layers - self.dense_layers


def shapes_from_config(path: str | Path, name: str) -> Shapes:
    """Shapes of the architecture whose config.json is in ``path``."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    d = int(cfg.get("head_dim") or h // heads)
    inter = int(cfg.get("intermediate_size") or 4 * h)
    vocab = int(cfg["vocab_size"])
    if cfg.get("kv_lora_rank"):  # MLA (DeepSeek-V2/V3)
        r, rope, nope, v = (int(cfg[k]) for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"))
        q_rank = int(cfg.get("q_lora_rank") or 0)
        moe = int(cfg.get("moe_intermediate_size") or inter)
        shared = int(cfg.get("n_shared_experts") or 0)
        linears = {
            "q_a_proj": (h, q_rank), "q_b_proj": (q_rank, heads * (nope + rope)), "kv_a_proj": (h, r + rope),
            "o_proj": (heads * v, h), "dense_gate_up": (h, 2 * inter), "dense_down": (inter, h),
            "shared_gate_up": (h, 2 * moe * shared), "shared_down": (moe * shared, h), "lm_head": (h, vocab),
        }  # fmt: skip
        experts = ((h, 2 * moe), (moe, h)) if cfg.get("n_routed_experts") else ()
        layers = int(cfg["num_hidden_layers"])
        n_exp = int(cfg.get("n_routed_experts") or 0)
        return Shapes(name, h, heads, 1, r + rope, vocab, {k: v for k, v in linears.items() if v[0] and v[1]}, experts,
                      {"kv_lora_rank": r, "rope": rope, "nope": nope, "v": v}, layers,
                      min(int(cfg.get("first_k_dense_replace") or 0), layers) if n_exp else layers, n_exp,
                      int(cfg.get("num_experts_per_tok") or 0), shared)  # fmt: skip
    linears = {"qkv_proj": (h, (heads + 2 * kv) * d), "o_proj": (heads * d, h), "gate_up": (h, 2 * inter), "down": (inter, h), "lm_head": (h, vocab)}
    experts = ()
    n_exp = int(cfg.get("num_local_experts") or 0)
    if n_exp:
        experts = ((h, 2 * inter), (inter, h))
        linears = {k: v for k, v in linears.items() if k not in ("gate_up", "down")}
    layers = int(cfg["num_hidden_layers"])
    return Shapes(name, h, heads, kv, d, vocab, linears, experts, {}, layers, 0 if n_exp else layers, n_exp, int(cfg.get("num_experts_per_tok") or 0))
