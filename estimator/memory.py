"""Memory of one GPU of a serving instance: weights, KV cache per token, activations, how engines size their KV
cache (their rules in core/data/engines/, read by core.engines), and the largest decode batch that a per-user speed
target and the KV room allow. Units: bytes; per GPU unless named otherwise."""

from __future__ import annotations

import math

from core.dtypes import BYTES_PER_DTYPE
from core.engines import DEFAULT_ENGINE, engine_rules
from core.hardware import Device
from core.opcounts import expert_params, mtp_module_params, replicated_params
from estimator.arch import Arch, Layout, experts_per_gpu
from estimator.kernels import Kernels
from estimator.serving import step


def weight_bytes_per_gpu(a: Arch, layout: Layout, mtp: int = 0) -> dict[str, float]:
    """Weight memory of one GPU: replicated (DP attention) or TP-split non-routed part, and its routed experts;
    with ``mtp`` multi-token-prediction modules served, each adds one MoE layer and its projection."""
    s, wb = a.shapes, BYTES_PER_DTYPE[a.weight_dtype]
    embed_head = (1 if s.tied_embeddings else 2) * s.vocab * s.hidden  # a tied LM head is the embedding's matrix, held once
    linear = replicated_params(s) - 2 * s.vocab * s.hidden + mtp * mtp_module_params(s)  # replicated_params counts embedding and head
    non_routed = linear * wb + embed_head * 2.0  # embedding and head kept in BF16
    non_routed /= layout.tp  # TP 1 with data-parallel attention: replicated
    moe_layers = s.moe_layers + (mtp if s.num_experts else 0)
    routed = experts_per_gpu(s, layout) * moe_layers * expert_params(s) * wb
    if s.num_experts and layout.ep == 1:
        routed = s.num_experts * moe_layers * expert_params(s) * wb / layout.tp
    return {"non_routed": non_routed, "routed": routed, "total": non_routed + routed}


def engine_step_tokens(gpu: Device, engine: str = DEFAULT_ENGINE) -> int:
    """Tokens one engine (a TP group) carries per step by default: its max_num_batched_tokens on this GPU (core/data/engines/)."""
    return engine_rules(engine).budget(gpu.name, gpu.memory_bytes).max_num_batched_tokens


def activation_bytes(a: Arch, layout: Layout, step_tokens: float) -> float:
    """Peak activation memory of one forward pass of ``step_tokens`` tokens on one GPU, what an engine's profiling run
    finds and keeps free: the widest intermediate, the gate and up projections (2 F / TP values per token, F the dense
    FFN width or k x the expert width where wider), plus the layer's input, output and residual (4 h), in BF16."""
    s = a.shapes
    tp = layout.tp
    widths = [n for name, (_, n) in s.linears.items() if name in ("gate_up", "dense_gate_up")]
    widths += [s.experts_per_token * s.expert_k_n[0][1]] if s.expert_k_n else []
    return step_tokens * (max(widths, default=0) / tp + 4 * s.hidden) * 2.0


def kv_room_sequences(a: Arch, gpu: Device, layout: Layout, k: Kernels, context: float, kv_dtype: str, headroom: float | None = None,
                      mtp: int = 0, rule: str = DEFAULT_ENGINE, step_tokens: float = 0) -> int:  # fmt: skip
    """Sequences of ``context`` tokens whose KV fits on one GPU beside the weights, as engine ``rule`` sizes its cache
    (core/data/engines/: its memory fraction of total or of free memory, ``headroom`` where given, and its page size),
    each sequence taking whole pages (MLA's latent is not split by TP); ``mtp``: MTP modules served (their weights and KV
    take room too); ``step_tokens``: the forward pass the engine profiles its activations at (default: the layout's
    prefill step, else the engine's token budget on this GPU)."""
    rules = engine_rules(rule)
    weights = weight_bytes_per_gpu(a, layout, mtp)["total"]
    taken = weights + k.reserve_bytes + activation_bytes(a, layout, step_tokens or layout.step_tokens or engine_step_tokens(gpu, rule))
    room = rules.kv_room_bytes(gpu.memory_bytes, taken, headroom)
    page = rules.page_tokens
    per_seq = a.shapes.kv_bytes_per_token(kv_dtype, mtp) * math.ceil(context / page) * page
    # a TP group holds tp × B sequences: GQA splits their KV heads over the group (each head on tp / kv_heads GPUs where TP
    # exceeds them: vLLM replicates), MLA's latent is replicated on every GPU of the group
    shares = layout.tp if a.shapes.mla else max(layout.tp / max(a.shapes.kv_heads, 1), 1)
    return max(int(room // per_seq // shares), 0)


def largest_batch(a: Arch, gpu: Device, layout: Layout, k: Kernels, *, context: float, tokens_per_s_per_user: float, mtp_tokens: int = 0,
                  kv_dtype: str = "bf16", limit: int = 4096, headroom: float | None = None) -> tuple[int, str]:  # fmt: skip
    """Largest sequences per GPU whose per-user speed is at least ``tokens_per_s_per_user`` and whose KV fits; why it stops there."""
    b_kv = min(kv_room_sequences(a, gpu, layout, k, context, kv_dtype, headroom, a.mtp_served(mtp_tokens)), limit)

    def speed(b: int) -> float:
        st = step(a, gpu, layout, k, "decode", batch_per_gpu=b, context=context, mtp_tokens=mtp_tokens, kv_dtype=kv_dtype)
        return st.tokens / b / st.seconds

    if b_kv < 1 or speed(1) < tokens_per_s_per_user:
        return 0, "speed target unreachable" if b_kv >= 1 else "no KV room"
    if speed(b_kv) >= tokens_per_s_per_user:
        return b_kv, "KV memory"
    lo, hi = 1, b_kv
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if speed(mid) >= tokens_per_s_per_user else (lo, mid)
    return lo, "speed target"
