"""What is served and how it is laid out: an architecture with the format each of its components is served in, and one
instance's GPUs (tensor, expert and pipeline parallelism), refused in one line where vLLM could not lay it out."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.deployments import load_deployments
from core.dtypes import WEIGHT_FORMATS, compute_precision
from core.hardware import CatalogError, Device
from core.models import get_model, resolve_model_key
from core.quant import LINEAR
from core.shapes import Shapes

UNQUANTIZED = ("embedding", "lm_head", "norms", "router")  # kept at 2 bytes whatever the linear layers' format (core/quant.py)


@dataclass(frozen=True)
class Arch:
    """An architecture's shapes plus what the serving model needs beyond them."""

    shapes: Shapes
    weight_dtype: str  # the format most linear weights are served in (DeepSeek-V3: fp8; gpt-oss: its MXFP4 experts)
    fp8_block_scaled: bool = False  # FP8 weights in scaled blocks (DeepSeek-V3: 128 x 128), served by block-scaled GEMM kernels
    formats: tuple[tuple[str, str], ...] = ()  # linear component -> format where it differs from weight_dtype (gpt-oss)

    @property
    def mtp_modules(self) -> int:
        """Multi-token-prediction modules in the checkpoint."""
        return self.shapes.mtp_modules

    def mtp_served(self, mtp_tokens: int) -> int:
        """MTP modules held on the GPUs when ``mtp_tokens`` extra tokens are drafted per step: all of the checkpoint's, or none."""
        return self.mtp_modules if mtp_tokens else 0

    def format_of(self, component: str) -> str:
        """The format ``component``'s weights are served in: the embedding, LM head, norms and routers at 2 bytes (bf16),
        each linear component in its own format (core/quant.py's components)."""
        if component in UNQUANTIZED:
            return "bf16"
        return dict(self.formats).get(component, self.weight_dtype)


# What core reads of an architecture (core/shapes.py) that the serving model does not cost, by the name the description
# gives it (an attention kind, a weight format, a feature). load_arch refuses a model that has any, rather than answer as
# if it had none. Every kind and format core reads is costed now (layer_ops.py, mixer_ops.py, memory.py, kv_cache.py);
# a feature core learns to read before the serving model costs it goes here.
NOT_YET_COSTED: dict[str, str] = {}

# How the serving model costs each feature core reads (attention kinds, attention sinks, weight formats): what `fleetcal
# models` prints, and what tests/test_serving_arch.py checks covers every kind and format read, with NOT_YET_COSTED.
COSTED = {
    "global": "attention over the whole context (attention_ops.py); KV every token",
    "sliding": "attention over min(context, window) tokens; KV for the window's pages only (vLLM's hybrid manager, kv_cache.py)",
    "chunked": "attention within the current chunk (half a chunk on average past the first); KV for one chunk at most",
    "mla": "latent attention, absorbed in decode, not in prefill; the latent KV whole on every TP GPU",
    "linear": "gated DeltaNet: projections as GEMMs, a fixed state per sequence read and written each step (mixer_ops.py)",
    "mamba": "Mamba-2: projections as GEMMs, a fixed state per sequence read and written each step (mixer_ops.py)",
    "none": "a block with an FFN only (Nemotron-H): its FFN",
    "sinks": "attention sinks: negligible (one logit per head and query), argued in attention_ops.py",
    "moe": "routed experts of their own width, the experts a batch's tokens touch read; shared experts, dense/MoE interleave",
    "bf16": "BF16 GEMMs (fp16 and fp32 checkpoints served in 2 bytes too)",
    "fp8": "FP8 GEMMs where the GPU has FP8 (DeepGEMM's figures for 128 x 128 blocks), else weight-only (A100)",
    "int8": "weight-only INT8, BF16 GEMMs on 1-byte weights",
    "int4": "weight-only INT4 (AWQ/GPTQ, 4.16 bits with its scales), BF16 GEMMs: Marlin / Machete figures",
    "mxfp4": "FP4 GEMMs at the FP4 peak where the GPU computes MXFP4 (Blackwell, CDNA 4), else weight-only; 4.25 bits",
    "nvfp4": "FP4 GEMMs at the FP4 peak on Blackwell, else weight-only; 4.5 bits with its block scales",
}


def not_yet_costed(s: Shapes, weight_dtype: str) -> list[str]:
    """The features of ``s`` served at ``weight_dtype`` that the serving model does not cost (NOT_YET_COSTED)."""
    present = set(s.layer_kinds) | {weight_dtype} | ({"sinks"} if s.details.sinks else set())
    return [what for feature, what in NOT_YET_COSTED.items() if feature in present]


def served_formats(s: Shapes, asked: str, own: str) -> tuple[tuple[str, str], ...]:
    """The linear components whose format differs from ``asked``: the checkpoint's own per component when ``asked`` is
    its own format (gpt-oss: MXFP4 experts, bf16 attention, served as stored), none when a format is asked for (every
    linear component in it, as a quantization tool that converts the whole model would)."""
    if asked != own or not s.checkpoint.quantized:
        return ()
    served = {c: s.checkpoint.format_of(c) for c in LINEAR}
    return tuple((c, "bf16" if f in ("fp16", "fp32") else f) for c, f in served.items() if f != asked)


def load_arch(model: str, weight_dtype: str | None = None) -> Arch:
    """The architecture of a catalogued model or a config directory, served at ``weight_dtype`` (default: its own, each
    component in its checkpoint's format); one line naming what it has that the serving model does not cost, if any."""
    spec = get_model(model)
    dtype = weight_dtype or spec.weight_dtype
    if dtype not in WEIGHT_FORMATS:
        raise CatalogError(f"unknown weight format {dtype!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    missing = not_yet_costed(spec.shapes, dtype)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise CatalogError(f"{spec.name}: {', '.join(missing)} {verb} read but not yet modelled by the serving model")
    # block-scaled FP8 is the checkpoint's own (quantization_config.weight_block_size), catalogued or not
    formats = served_formats(spec.shapes, dtype, spec.weight_dtype)
    return Arch(spec.shapes, dtype, dtype == "fp8" and spec.checkpoint.fp8_block_scaled, formats)


@dataclass(frozen=True)
class Layout:
    """How one serving instance spreads the model over its GPUs."""

    num_gpus: int
    tp: int = 1  # tensor parallelism of attention, dense FFN and shared experts (and of the experts where ep is 1)
    ep: int = 1  # expert parallelism: routed experts spread over this many GPUs
    dp_attention: bool = False  # each GPU attends its own sequences; non-routed weights replicated
    redundant_experts: int = 0
    gpus_per_node: int = 8  # GPUs of one scale-up (NVLink) domain: the GPU's scaleup_domain_gpus (72 on a GB200 NVL72)
    step_tokens: int = 0  # prefill tokens per GPU per step this layout is run at; 0: the service's
    pp: int = 1  # pipeline stages, each holding a contiguous share of the layers on tp GPUs

    def __post_init__(self) -> None:
        if self.num_gpus < 1 or self.tp < 1 or self.ep < 1 or self.pp < 1 or self.num_gpus % (self.tp * self.pp) or self.ep > self.num_gpus:
            raise CatalogError(
                f"layout: {self.num_gpus} GPUs cannot hold TP {self.tp}, PP {self.pp} and EP {self.ep}; TP x PP must divide the GPU "
                "count, EP at most it"
            )
        if self.dp_attention and self.tp != 1:
            raise CatalogError("layout: data-parallel attention runs with TP 1")
        if self.pp > 1 and (self.dp_attention or self.ep > 1):
            raise CatalogError("layout: pipeline parallelism is modelled with tensor parallelism only (no EP, no DP attention)")


def gemm_precision(gpu: Device, weight_dtype: str) -> str:
    """The precision whose peak bounds the GEMMs of ``weight_dtype`` weights on ``gpu`` (core/dtypes.compute_precision):
    FP8 or FP4 where the GPU computes the format natively, else BF16 with the weights read at their stored size."""
    return compute_precision(weight_dtype, gpu)


def experts_per_gpu(s: Shapes, layout: Layout) -> int:
    """Routed experts (with their redundant copies) on each GPU of the EP group."""
    return math.ceil((s.num_experts + layout.redundant_experts) / layout.ep) if s.num_experts else 0


def tp_limit(gpu: Device) -> int:
    """GPUs of one node or scale-up domain for ``gpu`` (a Layout's ``gpus_per_node``): the GPU's NVLink domain (8 of an HGX
    node, 72 of a GB200 NVL72), and for a GPU without a scale-up fabric (L40S, RTX PRO 6000: domain 1, PCIe) or with
    NVLink bridges in pairs (H100 PCIe) the 8 GPUs of one server over PCIe, as TensorRT-LLM's published L40S TP4 runs."""
    return max(gpu.scaleup_domain_gpus, 8)


def layout_problem(a: Arch, layout: Layout) -> str | None:
    """Why ``layout`` cannot serve ``a`` as vLLM 0.32 lays models out (None when it can):

    - tensor parallelism stays inside one node or NVLink domain (``gpus_per_node`` GPUs: tp_limit of the GPU);
    - attention heads divide by TP (vllm/model_executor/models/llama.py: ``total_num_heads % tp_size == 0``); KV heads
      divide by TP, or, where TP exceeds them, TP divides by them and each KV head is replicated on TP / KV heads GPUs
      (the same file: "Number of KV heads is less than TP size, so we replicate"); MLA's latent is not split by heads;
      linear-attention and Mamba-2 heads divide by TP (their state is split by heads);
    - a pipeline has no more stages than the model has layers;
    - routed experts (and redundant ones) divide by EP, as vLLM's expert placement with redundant experts requires
      (vllm/model_executor/layers/fused_moe/layer.py: "EPLB currently only supports even distribution of experts across
      ranks"); EP past one node spans whole nodes (DeepEP's internode kernels); a dense model has EP 1.
    """
    s, tp, ep, node = a.shapes, layout.tp, layout.ep, layout.gpus_per_node
    if tp > node:
        return f"TP {tp} spans more than the {node} GPUs of one NVLink domain (a node); tensor parallelism stays within one"
    if s.heads % tp:
        return f"{s.name}'s {s.heads} attention heads do not divide by TP {tp}; use a TP that divides {s.heads}"
    kv = s.kv_heads
    if not s.mla and kv and ((kv >= tp and kv % tp) or (kv < tp and tp % kv)):
        return f"{s.name}'s {kv} KV heads neither divide by TP {tp} nor divide it (to be replicated); use a TP that does"
    mixer = [s.mixer[h] for h in ("key_heads", "value_heads", "heads") if h in s.mixer]
    if any(h % tp for h in mixer):
        return f"{s.name}'s linear-attention or Mamba-2 heads ({', '.join(map(str, mixer))}) do not divide by TP {tp}"
    if layout.pp > s.num_layers:
        return f"PP {layout.pp} is more stages than {s.name}'s {s.num_layers} layers"
    if not s.num_experts:
        return f"{s.name} has no routed experts to spread: EP must be 1, got {ep}" if ep > 1 else None
    experts = s.num_experts + layout.redundant_experts
    if experts % ep:
        return f"{s.name}'s {s.num_experts} routed experts (+{layout.redundant_experts} redundant) do not divide by EP {ep}"
    if ep > node and ep % node:
        return f"EP {ep} spans {ep / node:.2f} nodes of {node} GPUs; expert parallelism past one node spans whole nodes"
    return None


def check_layout(a: Arch, layout: Layout) -> None:
    """A CatalogError (one line, exit 2) where ``layout`` cannot serve ``a`` (layout_problem)."""
    problem = layout_problem(a, layout)
    if problem:
        raise CatalogError(f"layout: {problem}")


def check_mtp(a: Arch, mtp_tokens: int) -> None:
    """Drafted tokens need the checkpoint's multi-token-prediction modules: a model without any is refused."""
    if mtp_tokens and not a.mtp_modules:
        raise CatalogError(f"--mtp-tokens {mtp_tokens}: {a.shapes.name} has no multi-token-prediction module to draft with; give 0")


def deployment_layouts(model: str) -> tuple[Layout, Layout] | None:
    """(prefill, decode) layouts of the first published deployment of ``model`` (core/data/deployments.toml), if any."""
    key = resolve_model_key(model)
    for d in load_deployments():
        if key is not None and resolve_model_key(d.model) == key and d.prefill_layout and d.decode_layout:
            return Layout(**d.prefill_layout), Layout(**d.decode_layout)
    return None
