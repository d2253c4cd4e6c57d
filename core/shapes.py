"""An architecture, read once from its own config.json: the operator shapes the operator benchmarks time and
the serving model sums, the layer counts, and the per-token KV-cache bytes and attention FLOPs every formula
uses. DeepSeek-style MLA and MoE, Mixtral-style MoE, and dense GQA models. The one description: ModelSpec
(core/models.py) adds the parameter counts and holds one of these."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.dtypes import BYTES_PER_DTYPE

__all__ = ["Shapes", "shapes_from_config", "shapes_from_dict"]


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
    max_context: int = 0  # max_position_embeddings; 0: not given
    node_limited_topk: int = 0  # nodes a token's experts may span (DeepSeek-V3 topk_group: 4); top-k when unlimited, 0 when dense
    mtp_modules: int = 0  # multi-token-prediction modules in the checkpoint (num_nextn_predict_layers)

    @property
    def moe_layers(self) -> int:
        return self.num_layers - self.dense_layers

    def kv_bytes_per_token(self, dtype: str = "bf16", extra_layers: int = 0) -> float:
        """KV-cache bytes one token holds over all layers (plus ``extra_layers``, e.g. MTP modules).

        Standard/GQA: 2 (K and V) × kv_heads × head_dim × bytes per layer.
        MLA: the latent and the rope key, kv_lora_rank + rope, per layer (DeepSeek-V3: 576 × 61 × 2 = 70,272 in bf16).
        """
        per_layer = (self.mla["kv_lora_rank"] + self.mla["rope"]) if self.mla else 2 * self.kv_heads * self.head_dim
        return per_layer * (self.num_layers + extra_layers) * BYTES_PER_DTYPE[dtype]

    def decode_attention_flops(self, context: float) -> float:
        """Attention-score FLOPs of one token attending ``context`` earlier tokens in one layer, as decode runs it.

        Standard attention: QK^T and AV each 2 × heads × head_dim × context (PaLM appendix B).
        MLA absorbed: every head scores against the latent + rope key (512 + 64) and sums the 512-wide latent,
        2 × heads × context × (576 + 512).
        """
        if self.mla:
            r = self.mla["kv_lora_rank"]
            return 2 * self.heads * context * (r + self.mla["rope"] + r)
        return 4 * self.heads * context * self.head_dim


def _moe_layers(cfg: dict[str, Any], layers: int, experts: int) -> int:
    """Layers with routed experts: from ``first_k_dense_replace`` on, every ``moe_layer_freq``-th (all of them in Mixtral)."""
    if not experts:
        return 0
    first = min(int(cfg.get("first_k_dense_replace") or 0), layers)
    freq = int(cfg.get("moe_layer_freq") or 1)
    return len(range(first, layers, freq))


def shapes_from_config(path: str | Path, name: str) -> Shapes:
    """Shapes of the architecture whose config.json is in ``path``."""
    return shapes_from_dict(json.loads((Path(path) / "config.json").read_text()), name)


def shapes_from_dict(cfg: dict[str, Any], name: str) -> Shapes:
    """Shapes of the architecture a config.json's contents (or a transformers config's ``to_dict()``) describe."""
    cfg = cfg.get("text_config") or cfg
    h, heads, layers = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
    common: dict[str, Any] = {
        "name": name, "hidden": h, "heads": heads, "vocab": int(cfg["vocab_size"]), "num_layers": layers,
        "max_context": int(cfg.get("max_position_embeddings") or 0), "mtp_modules": int(cfg.get("num_nextn_predict_layers") or 0),
    }  # fmt: skip
    inter = int(cfg.get("intermediate_size") or 4 * h)
    return _mla_shapes(cfg, common, inter) if cfg.get("kv_lora_rank") else _gqa_shapes(cfg, common, inter)


def _mla_shapes(cfg: dict[str, Any], c: dict[str, Any], inter: int) -> Shapes:
    """MLA (DeepSeek-V2/V3): low-rank query and latent KV projections, shared and routed experts."""
    h, heads, vocab, layers = c["hidden"], c["heads"], c["vocab"], c["num_layers"]
    r, rope, nope, v = (int(cfg[k]) for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"))
    q_rank = int(cfg.get("q_lora_rank") or 0)
    moe = int(cfg.get("moe_intermediate_size") or inter)
    shared = int(cfg.get("n_shared_experts") or 0)
    linears = {
        "q_a_proj": (h, q_rank), "q_b_proj": (q_rank, heads * (nope + rope)), "kv_a_proj": (h, r + rope),
        "o_proj": (heads * v, h), "dense_gate_up": (h, 2 * inter), "dense_down": (inter, h),
        "shared_gate_up": (h, 2 * moe * shared), "shared_down": (moe * shared, h), "lm_head": (h, vocab),
    }  # fmt: skip
    n_exp, top_k = int(cfg.get("n_routed_experts") or 0), int(cfg.get("num_experts_per_tok") or 0)
    return Shapes(**c, kv_heads=1, head_dim=r + rope, linears={k: kn for k, kn in linears.items() if kn[0] and kn[1]},
                  expert_k_n=((h, 2 * moe), (moe, h)) if n_exp else (), mla={"kv_lora_rank": r, "rope": rope, "nope": nope, "v": v},
                  dense_layers=layers - _moe_layers(cfg, layers, n_exp), num_experts=n_exp, experts_per_token=top_k,
                  shared_experts=shared, node_limited_topk=int(cfg.get("topk_group") or top_k))  # fmt: skip


def _gqa_shapes(cfg: dict[str, Any], c: dict[str, Any], inter: int) -> Shapes:
    """Dense GQA models, and Mixtral-style MoE (routed experts in place of the FFN)."""
    h, heads, vocab, layers = c["hidden"], c["heads"], c["vocab"], c["num_layers"]
    kv = int(cfg.get("num_key_value_heads") or heads)
    d = int(cfg.get("head_dim") or h // heads)
    linears = {"qkv_proj": (h, (heads + 2 * kv) * d), "o_proj": (heads * d, h), "gate_up": (h, 2 * inter), "down": (inter, h),
               "lm_head": (h, vocab)}  # fmt: skip
    n_exp = int(cfg.get("num_local_experts") or 0)
    if n_exp:
        linears = {k: kn for k, kn in linears.items() if k not in ("gate_up", "down")}
    top_k = int(cfg.get("num_experts_per_tok") or 0) if n_exp else 0
    return Shapes(**c, kv_heads=kv, head_dim=d, linears=linears, expert_k_n=((h, 2 * inter), (inter, h)) if n_exp else (), mla={},
                  dense_layers=layers - _moe_layers(cfg, layers, n_exp), num_experts=n_exp, experts_per_token=top_k,
                  node_limited_topk=int(cfg.get("topk_group") or top_k))  # fmt: skip
