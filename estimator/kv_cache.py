"""Bytes of KV cache and recurrent state one sequence takes on one GPU, by layer kind, as the engines allocate them.

vLLM 0.32's hybrid KV-cache manager (vllm/v1/core/kv_cache_utils.py, kv_cache_coordinator.py,
single_type_kv_cache_manager.py, vllm/v1/kv_cache_interface.py):
- layers are grouped by their cache spec (full attention, a sliding window of w, a chunk of w, a Mamba/linear state):
  ``_get_kv_cache_groups_uniform_page_size`` takes the fewest layers of any spec as the group size (the largest when it
  is under 1.5 x the fewest), splits each spec's layers into ceil(n / group size) groups, and one block of the shared pool
  holds one page for each of the group-size layers (``get_kv_cache_config_from_groups``: num_blocks = memory // page
  // group size). A sequence takes, in each group, the blocks its spec holds; padding layers of a partial group take room;
- full attention holds every token's page (ceil(context / block) blocks);
- a sliding window keeps the pages of its last tokens (SlidingWindowManager.remove_skipped_blocks frees the rest; at
  most SlidingWindowSpec.max_memory_usage_bytes, ceil((w - 1 + 1) / block) + 1 blocks for a decode step);
- a chunked local layer keeps the current chunk (ChunkedLocalAttentionSpec: ceil((w + 1) / block) blocks at most);
- a Mamba or gated-DeltaNet layer keeps one fixed state per sequence (MambaSpec.max_memory_usage_bytes: one page,
  mamba_cache_mode "none", no speculative blocks);
- page sizes are unified across kinds (vllm/model_executor/models/config.py, HybridAttentionMambaModelConfig): the
  attention block grows to the smallest multiple of 16 tokens whose page holds a Mamba state, and the Mamba page is
  padded to it. Attention-only hybrids (sliding + full) share one page size already (the same heads per layer).
TensorRT-LLM keeps each layer's own pages, window by window, without groups or padding. The page sizes are the engines'
(core/data/engines/: vLLM's block_size 16, TensorRT-LLM's tokens_per_block 32).

A layer's per-token bytes on one GPU: K and V of max(1, kv_heads // TP) heads (vLLM replicates KV heads where TP exceeds
them), MLA's latent whole on every GPU; a state's bytes: its heads split over TP (core/shapes.state_values_per_sequence).
"""

from __future__ import annotations

import math
from collections import Counter

from core.dtypes import BYTES_PER_DTYPE
from core.engines import DEFAULT_ENGINE, engine_rules
from core.shapes import KV_KINDS, STATE_KINDS, Shapes

STATE_DTYPE = "bf16"  # vLLM's mamba_ssm_cache_dtype "auto": the model's dtype (Nemotron-H's config: float16, also 2 bytes)


def kv_bytes_per_token_per_layer(s: Shapes, kv_dtype: str, tp: int) -> float:
    """Bytes one token adds to one attention layer's cache on one GPU of a TP group."""
    values = s.kv_values_per_token_per_layer() if s.mla else 2 * max(1, s.kv_heads // tp) * s.head_dim
    return values * BYTES_PER_DTYPE[kv_dtype]


def state_bytes_per_layer(s: Shapes, tp: int) -> float:
    """Bytes of one linear-attention or Mamba-2 layer's fixed state for one sequence on one GPU of a TP group."""
    layers = sum(n for kind, n in s.layer_kinds.items() if kind in STATE_KINDS)
    return s.state_values_per_sequence() / layers / tp * BYTES_PER_DTYPE[STATE_DTYPE] if layers else 0.0


def cache_specs(s: Shapes, extra_layers: int = 0) -> dict[tuple[str, int], int]:
    """Layers by cache spec: (kind, window) for attention, ("state", 0) for linear-attention and Mamba layers; MTP modules
    (``extra_layers``) add full-attention (or MLA) layers."""
    if s.layers:
        specs = Counter(("state", 0) if layer.mixer in STATE_KINDS else (layer.mixer, layer.window)
                        for layer in s.layers if layer.mixer in KV_KINDS + STATE_KINDS)  # fmt: skip
    else:
        specs = Counter({("mla" if s.mla else "global", 0): s.num_layers})
    if extra_layers:
        specs[("mla" if s.mla else "global", 0)] += extra_layers
    return dict(specs)


def pages_held(kind: str, window: int, context: float, block: int) -> int:
    """Pages of ``block`` tokens one layer of a spec holds for a sequence of ``context`` tokens (module docstring)."""
    if kind == "state":
        return 1
    pages = math.ceil(context / block)
    if kind == "sliding" and window:  # + 1: the window rarely starts on a page boundary
        return min(pages, math.ceil(window / block) + (1 if block > 1 else 0))
    if kind == "chunked" and window:
        return min(pages, math.ceil((window + 1) / block))
    return pages


def vllm_block(s: Shapes, kv_dtype: str, tp: int) -> int:
    """vLLM's attention block size: its 16 tokens, or with Mamba/linear layers the smallest multiple of 16 whose page
    holds one layer's state (HybridAttentionMambaModelConfig.verify_and_update_config)."""
    state, per_token, base = state_bytes_per_layer(s, tp), kv_bytes_per_token_per_layer(s, kv_dtype, tp), engine_rules("vllm").page_tokens
    if not state or not s.kv_layers:
        return base
    return base * math.ceil(state / (base * per_token))


def vllm_groups(specs: dict[tuple[str, int], int]) -> tuple[int, dict[tuple[str, int], int]]:
    """(group size, groups per spec) of vLLM's hybrid manager (_get_kv_cache_groups_uniform_page_size)."""
    fewest, most = min(specs.values()), max(specs.values())
    size = most if most < 1.5 * fewest else fewest
    return size, {spec: math.ceil(n / size) for spec, n in specs.items()}


def sequence_bytes(s: Shapes, context: float, kv_dtype: str, tp: int = 1, rule: str = DEFAULT_ENGINE, extra_layers: int = 0,
                   block: int = 0) -> float:  # fmt: skip
    """Bytes of cache one sequence of ``context`` tokens takes on one GPU of a TP group under an engine's rule: vLLM's
    groups of equal pages, or TensorRT-LLM's pages layer by layer, of the engine's page size (``block`` 1: the bytes
    themselves, no page rounding; module docstring)."""
    specs, per_token = cache_specs(s, extra_layers), kv_bytes_per_token_per_layer(s, kv_dtype, tp)
    if not specs:
        return 0.0
    if rule == "vllm":
        block = vllm_block(s, kv_dtype, tp)
        page = max(block * per_token, state_bytes_per_layer(s, tp)) if ("state", 0) in specs else block * per_token
        size, groups = vllm_groups(specs)
        return page * size * sum(g * pages_held(kind, w, context, block) for (kind, w), g in groups.items())
    state, block = state_bytes_per_layer(s, tp), block or engine_rules(rule).page_tokens
    return sum(n * (state if kind == "state" else pages_held(kind, w, context, block) * block * per_token)
               for (kind, w), n in specs.items())  # fmt: skip

