"""An architecture, read once from its own config.json: the operator shapes the operator benchmarks time and
the serving model sums, the layer counts, every layer's attention kind, and the per-token KV-cache bytes and attention
FLOPs every formula uses. The one description: ModelSpec (core/models.py) adds the parameter counts (core/params.py)
and holds one of these; core/reader.py reads a config.json into it, family by family (core/data/models/families.toml).

Attention kinds of a layer: ``global`` (the whole context), ``sliding`` (the last ``window`` tokens), ``chunked`` (Llama 4:
the tokens of the current ``window``-token chunk), ``mla`` (DeepSeek's latent KV), ``linear`` (Qwen3-Next's gated
DeltaNet: a fixed state per sequence, no per-token cache), ``mamba`` (Mamba-2: a fixed state too), ``none`` (a block
with only an FFN, Nemotron-H's).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.dtypes import BYTES_PER_DTYPE
from core.quant import Checkpoint

__all__ = ["Details", "Layer", "Shapes", "shapes_from_config", "shapes_from_dict"]

KV_KINDS = ("global", "sliding", "chunked", "mla")  # layers that keep keys and values per token
STATE_KINDS = ("linear", "mamba")  # layers that keep a fixed state per sequence instead


@dataclass(frozen=True)
class Layer:
    """One decoder layer: its attention kind, the tokens a sliding or chunked layer keeps, and its FFN (dense, moe, none)."""

    mixer: str = "global"
    window: int = 0
    ffn: str = "dense"


@dataclass(frozen=True)
class Details:
    """What the parameter count needs beyond the linear maps: biases, norms and the small tensors some families add."""

    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    gated_ffn: bool = True  # gate, up and down projections (false: up and down, Nemotron-H's squared ReLU)
    sinks: bool = False  # gpt-oss: one learned attention-sink logit per head
    expert_bias: bool = False
    router_bias: bool = False
    shared_gate: bool = False  # Qwen3-Next: a sigmoid gate (hidden -> 1) on the shared expert


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
    model_type: str = ""
    layers: tuple[Layer, ...] = ()  # every layer's attention kind and FFN, in order
    tied_embeddings: bool = False
    details: Details = field(default_factory=Details)
    mixer: dict[str, int] = field(default_factory=dict)  # geometry of linear-attention / Mamba-2 layers
    checkpoint: Checkpoint = field(default_factory=Checkpoint)

    @property
    def moe_layers(self) -> int:
        """Layers with routed experts."""
        return sum(layer.ffn == "moe" for layer in self.layers) if self.layers else self.num_layers - self.dense_layers

    @property
    def layer_kinds(self) -> dict[str, int]:
        """Layers of each attention kind."""
        return dict(Counter(layer.mixer for layer in self.layers)) if self.layers else {"mla" if self.mla else "global": self.num_layers}

    @property
    def kv_layers(self) -> int:
        """Layers that keep keys and values per token (all of them in a model of global attention)."""
        return sum(n for kind, n in self.layer_kinds.items() if kind in KV_KINDS)

    @property
    def windows(self) -> dict[str, int]:
        """The window of each windowed kind present (sliding, chunked), in tokens."""
        return {layer.mixer: layer.window for layer in self.layers if layer.window}

    def kv_values_per_token_per_layer(self) -> int:
        """Values one token adds to one layer's cache: 2 (K and V) x kv_heads x head_dim; MLA: its latent and rope key."""
        return (self.mla["kv_lora_rank"] + self.mla["rope"]) if self.mla else 2 * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, dtype: str = "bf16", extra_layers: int = 0) -> float:
        """KV-cache bytes one token holds over all layers that keep a per-token cache (plus ``extra_layers``, e.g. MTP
        modules), at a context shorter than every window.

        Standard/GQA: 2 (K and V) × kv_heads × head_dim × bytes per layer.
        MLA: the latent and the rope key, kv_lora_rank + rope, per layer (DeepSeek-V3: 576 × 61 × 2 = 70,272 in bf16).
        """
        return self.kv_values_per_token_per_layer() * (self.kv_layers + extra_layers) * BYTES_PER_DTYPE[dtype]

    def kv_tokens_held(self, context: float) -> float:
        """Token-layers of cache one sequence of ``context`` tokens holds: a global or MLA layer every token, a sliding
        layer its last ``window``, a chunked layer at most one chunk (Llama 4 attends within the current chunk)."""
        held = [min(context, layer.window) if layer.window else context for layer in self.layers if layer.mixer in KV_KINDS]
        return sum(held) if self.layers else context * self.num_layers

    def state_values_per_sequence(self) -> int:
        """Values of the fixed state one sequence keeps in the linear-attention and Mamba-2 layers (vLLM's
        vllm/model_executor/layers/mamba/mamba_utils.py, MambaStateShapeCalculator):
        gated DeltaNet: value_heads × key_dim × value_dim, plus (conv_kernel − 1) × (2 key_heads key_dim + value_heads value_dim);
        Mamba-2: heads × head_dim × state, plus (conv_kernel − 1) × (heads head_dim + 2 groups state)."""
        m, kinds = self.mixer, self.layer_kinds
        if kinds.get("linear"):
            conv = (m["conv_kernel"] - 1) * (2 * m["key_heads"] * m["key_dim"] + m["value_heads"] * m["value_dim"])
            return kinds["linear"] * (m["value_heads"] * m["key_dim"] * m["value_dim"] + conv)
        if kinds.get("mamba"):
            inner = m["heads"] * m["head_dim"]
            conv = (m["conv_kernel"] - 1) * (inner + 2 * m["groups"] * m["state"])
            return kinds["mamba"] * (inner * m["state"] + conv)
        return 0

    def kv_bytes_per_sequence(self, context: float, dtype: str = "bf16", state_dtype: str = "bf16") -> float:
        """Cache bytes one sequence of ``context`` tokens holds: the per-token KV of the tokens each attention layer keeps
        (``kv_tokens_held``) plus the fixed state of its linear-attention and Mamba layers, in ``state_dtype``."""
        kv = self.kv_values_per_token_per_layer() * self.kv_tokens_held(context) * BYTES_PER_DTYPE[dtype]
        return kv + self.state_values_per_sequence() * BYTES_PER_DTYPE[state_dtype]

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

    def decode_attention_flops_all_layers(self, context: float) -> float:
        """``decode_attention_flops`` summed over the layers that attend: a sliding or chunked layer over the tokens it
        keeps (at most its window), a global or MLA layer over the whole context; linear-attention and Mamba layers
        have no attention scores."""
        by_window = Counter(layer.window for layer in self.layers if layer.mixer in KV_KINDS) if self.layers else {0: self.num_layers}
        return sum(self.decode_attention_flops(min(context, w) if w else context) * n for w, n in by_window.items())


def shapes_from_config(path: str | Path, name: str) -> Shapes:
    """Shapes of the architecture whose config.json is in ``path``."""
    return shapes_from_dict(json.loads((Path(path) / "config.json").read_text()), name)


def shapes_from_dict(cfg: dict[str, Any], name: str) -> Shapes:
    """Shapes of the architecture a config.json's contents describe (core/reader.py reads it, family by family)."""
    from core.reader import read_shapes  # the reader builds Shapes: imported here, not at the top, to keep one direction

    return read_shapes(cfg, name)
