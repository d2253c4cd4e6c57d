"""Memory of one GPU of a serving instance: weights, KV cache per token, activations, how engines size their KV
cache (their rules in core/data/engines/, read by core.engines), and the largest decode batch that a per-user speed
target and the KV room allow. Units: bytes; per GPU unless named otherwise."""

from __future__ import annotations

from core.dtypes import WEIGHT_FORMATS
from core.engines import DEFAULT_ENGINE, engine_rules
from core.hardware import Device
from core.opcounts import attention_params, moe_shared_params
from core.params import component_params, routed_expert_params
from core.shapes import Shapes
from estimator.arch import Arch, Layout, experts_per_gpu
from estimator.kernels import Kernels
from estimator.kv_cache import sequence_bytes
from estimator.serving import step


def _bytes(a: Arch, component: str) -> float:
    return WEIGHT_FORMATS[a.format_of(component)].bytes_per_element


def mtp_module_bytes(a: Arch) -> float:
    """Bytes of one multi-token-prediction module outside its routed experts (core/opcounts.mtp_module_params): its
    attention and the projection of [hidden; embedding] in the attention's format, its shared experts in theirs, its
    router at 2 bytes."""
    s = a.shapes
    router, shared = s.hidden * s.num_experts, moe_shared_params(s) - s.hidden * s.num_experts
    return (attention_params(s) + 2 * s.hidden * s.hidden) * _bytes(a, "attention") + shared * _bytes(a, "shared_experts") + router * 2.0


def weight_bytes_per_gpu(a: Arch, layout: Layout, mtp: int = 0) -> dict[str, float]:
    """Weight memory of the busiest GPU: every component's parameters (core/params.component_params) at the bytes of
    the format it is served in (Arch.format_of: the linear layers in theirs, block scales included; embedding, LM head,
    norms and routers at 2 bytes). TP splits the attention, mixers, dense FFN, shared experts, embedding and LM head
    (vLLM's vocabulary-parallel embedding and head); routers and norms are replicated on every GPU (ReplicatedLinear,
    RMSNorm). Routed experts: ceil(E / EP) whole experts per GPU, or with EP 1 every expert split over the TP group.
    PP: each stage holds its share of the layers and the first the embedding, the last the LM head (a tied one as a
    copy): the busiest stage is the layers' share plus the larger of the two. ``mtp``: MTP modules served (each one more
    MoE layer and its projection)."""
    s, parts, pp = a.shapes, component_params(a.shapes), layout.pp
    mb = {c: n * _bytes(a, c) for c, n in parts.items()}
    replicated = mb["router"] + mb["norms"]
    ends = (mb["embedding"], mb["lm_head"] or mb["embedding"]) if pp > 1 else (mb["embedding"] + mb["lm_head"], 0.0)
    apart = ("router", "norms", "embedding", "lm_head", "routed_experts")
    layers = sum(v for c, v in mb.items() if c not in apart) + mtp * mtp_module_bytes(a)
    non_routed = (layers / pp + max(ends)) / layout.tp + replicated / pp
    moe_layers = s.moe_layers + (mtp if s.num_experts else 0)
    expert = routed_expert_params(s) * _bytes(a, "routed_experts") if s.num_experts else 0.0
    per_gpu_experts = experts_per_gpu(s, layout) if layout.ep > 1 else s.num_experts / layout.tp
    routed = per_gpu_experts * moe_layers * expert / pp
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
    widths = [n for name, (_, n) in s.linears.items() if name in ("gate_up", "dense_gate_up", "up", "linear_in_proj", "mamba_in_proj")]
    widths += [s.experts_per_token * s.expert_k_n[0][1]] if s.expert_k_n else []
    return step_tokens * (max(widths, default=0) / tp + 4 * s.hidden) * 2.0


def kv_room_sequences(a: Arch, gpu: Device, layout: Layout, k: Kernels, context: float, kv_dtype: str, headroom: float | None = None,
                      mtp: int = 0, rule: str = DEFAULT_ENGINE, step_tokens: float = 0) -> int:  # fmt: skip
    """Sequences per GPU of ``context`` tokens whose cache fits beside the weights, as engine ``rule`` sizes its cache
    (core/data/engines/: its memory fraction of total or of free memory, ``headroom`` where given, and its page size),
    each sequence taking what its layer kinds hold as the engine allocates them (kv_cache.sequence_bytes: vLLM's hybrid
    groups of equal pages, sliding windows their last pages, Mamba and linear layers one state; KV heads replicated where
    TP exceeds them, MLA's latent on every GPU of the group); ``mtp``: MTP modules served (their weights and KV take room
    too); ``step_tokens``: the forward pass the engine profiles its activations at (default: the layout's prefill step,
    else the engine's token budget on this GPU)."""
    rules = engine_rules(rule)
    weights = weight_bytes_per_gpu(a, layout, mtp)["total"]
    taken = weights + k.reserve_bytes + activation_bytes(a, layout, step_tokens or layout.step_tokens or engine_step_tokens(gpu, rule))
    room = rules.kv_room_bytes(gpu.memory_bytes, taken, headroom)
    per_gpu = sequence_bytes(a.shapes, context, kv_dtype, layout.tp, rule, mtp) / layout.pp  # a stage holds its layers' cache
    # a TP group of a pipeline stage holds every sequence of the instance, tp x pp x B of them, each per_gpu on each GPU
    return max(int(room // per_gpu) // (layout.tp * layout.pp), 0)


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


def prompt_transfer_s(s: Shapes, prompt_len: float, kv_dtype: str, tp: int, bytes_per_s: float) -> float:
    """Seconds to send one prompt's cache from a prefill GPU to decode at ``bytes_per_s`` (DeepEP's RDMA bandwidth per
    GPU): what the prompt holds per layer kind, token by token (a sliding layer its window, a linear or Mamba layer its
    state), split over the TP group."""
    return sequence_bytes(s, prompt_len, kv_dtype, rule="trtllm", block=1) / tp / bytes_per_s
