"""A per-operator model of one serving step on one GPU of a deployment.

step = Σ over operators max(FLOPs / (compute eff × peak of the operator's precision),
                            bytes / (memory eff × bandwidth))
       + expert-parallel communication not hidden behind computation + a fixed per-step overhead.

Operators per layer: attention projections (FP8 GEMMs; the MLA absorption bmm in BF16), attention
(MLA absorbed in decode, not absorbed in prefill; GQA for dense models; BF16 or FP8 KV), dense FFN or
shared experts (FP8 GEMMs), routed experts (a grouped GEMM at tokens per expert = tokens × top-k ÷
experts on the GPU, times a load-imbalance factor), the SwiGLU activation between each FFN's two GEMMs,
norms and residuals; then the LM head and sampling. The layout is explicit: tensor parallelism, expert
parallelism, data-parallel attention (each GPU its own sequences, the non-routed weights replicated on
every GPU). With communication on, two micro-batches overlap it with computation stage by stage
(exposed_per_moe_layer), so every weight is read twice per step.

Shapes from the model's config.json (shapes.py), efficiencies from kernels.py; seconds, bytes, FLOPs per GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.dtypes import BYTES_PER_DTYPE
from core.hardware import Device
from core.models import get_model, model_catalog, resolve_model_key
from core.opcounts import (
    ep_bytes_per_token,
    expert_gemm_flops,
    imbalance,
    mla_prefill_attention_flops,
)
from core.shapes import Shapes
from estimator.kernels import Eff, Kernels

ELEMENTWISE_VECTORS = 10  # per token per layer: 2 RMS norms (read + write), 2 residual adds (2 reads + write), rotary


@dataclass(frozen=True)
class Arch:
    """An architecture's shapes plus what the serving model needs beyond them."""

    shapes: Shapes
    weight_dtype: str  # of the linear layers' weights as served (DeepSeek-V3: fp8)
    fp8_block_scaled: bool = False  # FP8 weights in scaled blocks (DeepSeek-V3: 128 x 128), served by block-scaled GEMM kernels

    @property
    def mtp_modules(self) -> int:
        """Multi-token-prediction modules in the checkpoint."""
        return self.shapes.mtp_modules

    def mtp_served(self, mtp_tokens: int) -> int:
        """MTP modules held on the GPUs when ``mtp_tokens`` extra tokens are drafted per step: all of the checkpoint's, or none."""
        return self.mtp_modules if mtp_tokens else 0


def load_arch(model: str, weight_dtype: str | None = None) -> Arch:
    """The architecture of a catalogued model or a config directory, served at ``weight_dtype`` (default: its own)."""
    key, spec = resolve_model_key(model), get_model(model)
    dtype = weight_dtype or spec.weight_dtype
    block = bool(key) and model_catalog()[key].get("fp8_scaling") == "block" and dtype == "fp8"
    return Arch(spec.shapes, dtype, block)


@dataclass(frozen=True)
class Layout:
    """How one serving instance spreads the model over its GPUs."""

    num_gpus: int
    tp: int = 1  # tensor parallelism of attention, dense FFN and shared experts
    ep: int = 1  # expert parallelism: routed experts spread over this many GPUs
    dp_attention: bool = False  # each GPU attends its own sequences; non-routed weights replicated
    redundant_experts: int = 0
    gpus_per_node: int = 8
    step_tokens: int = 0  # prefill tokens per GPU per step this layout is run at; 0: the service's

    def __post_init__(self) -> None:
        from core.hardware import CatalogError

        if self.num_gpus < 1 or self.tp < 1 or self.ep < 1 or self.num_gpus % self.tp or self.ep > self.num_gpus:
            raise CatalogError(f"layout: {self.num_gpus} GPUs cannot hold TP {self.tp} and EP {self.ep}; TP must divide the GPU count, EP at most it")
        if self.dp_attention and self.tp != 1:
            raise CatalogError("layout: data-parallel attention runs with TP 1")


@dataclass
class Step:
    """One step's time on one GPU, by operator (ms), and what bounds it."""

    seconds: float
    breakdown_ms: dict[str, float]
    compute_s: float
    comm_s: float
    tokens: float  # tokens this GPU advances per step (decode: sequences × accepted tokens; prefill: prompt tokens)
    flops: float
    bound: str
    notes: list[str] = field(default_factory=list)
    op_bounds: dict[str, str] = field(default_factory=dict)  # operator -> what bounds it: compute, memory, communication, fixed
    op_sources: dict[str, str] = field(default_factory=dict)  # operator -> where its efficiency comes from


@dataclass
class Comm:
    """Communication seconds of one micro-batch on one GPU, all layers: expert-parallel dispatch and combine, TP all-reduces."""

    dispatch: float = 0.0
    combine: float = 0.0
    allreduce: float = 0.0


ATTENTION_SIDE = ("attention projections", "attention", "norms and residuals")  # a layer's computation before dispatch
MOE_SIDE = ("shared experts", "router", "routed experts", "FFN activation")  # between dispatch and combine


def exposed_per_moe_layer(attn_s: float, moe_s: float, dispatch_s: float, combine_s: float) -> float:
    """Communication left exposed in one MoE layer of two micro-batches A and B overlapped stage by stage (seconds).

    Each micro-batch runs attention -> dispatch -> experts -> combine; DeepSeek-V3 overlaps "the attention and MoE of one
    micro-batch with the dispatch and combine of another" (technical report, arXiv:2412.19437, section 3.4.1). In steady
    state the computation stream runs attn A | attn B | MoE A | MoE B while the communication stream runs combine B
    (of the layer before) | dispatch A | dispatch B | combine A, so each stage lasts the longer of its pair:
    exposed = max(a, K) + max(a, D) + max(m, D) + max(m, K) - 2 (a + m), for per-micro-batch attention a, experts m,
    dispatch D and combine K. Communication is hidden in total only if each stage's is, not if the totals balance."""
    a, m, d, k = attn_s, moe_s, dispatch_s, combine_s
    return max(a, k) + max(a, d) + max(m, d) + max(m, k) - 2 * (a + m)


def _op(flops: float, nbytes: float, peak_flops: float, bandwidth: float, e: Eff) -> tuple[float, str]:
    c = flops / (e.compute * peak_flops) if flops else 0.0
    m = nbytes / (e.memory * bandwidth) if nbytes else 0.0
    return (c, "compute") if c >= m else (m, "memory")


def gemm_precision(gpu: Device, weight_dtype: str) -> str:
    """GEMMs compute in FP8 where weights are FP8 and the GPU has FP8; elsewhere in BF16 (weights read as stored)."""
    return "fp8" if weight_dtype == "fp8" and "fp8" in gpu.peak_tflops else "bf16"


def experts_per_gpu(s: Shapes, layout: Layout) -> int:
    return math.ceil((s.num_experts + layout.redundant_experts) / layout.ep) if s.num_experts else 0


def _layer_ops(a: Arch, gpu: Device, layout: Layout, k: Kernels, phase: str, tokens: float, seqs: float, context: float,
               q_per_seq: float, kv_dtype: str, uncached_share: float) -> tuple[dict[str, float], float, Comm, dict[str, str], dict[str, str]]:  # fmt: skip
    """(operator -> seconds for all layers of one micro-batch, FLOPs, communication seconds, operator -> bound,
    operator -> efficiency source) on one GPU."""
    s = a.shapes
    tp = layout.tp  # 1 with data-parallel attention (Layout enforces it)
    gp = gemm_precision(gpu, a.weight_dtype)
    peak = {"fp8": gpu.peak_flops_per_s("fp8") if "fp8" in gpu.peak_tflops else None, "bf16": gpu.peak_flops_per_s("bf16")}
    bw = gpu.bandwidth_bytes_per_s
    wb, ab = BYTES_PER_DTYPE[a.weight_dtype], 1.0 if gp == "fp8" else 2.0
    m = tokens * tp  # tokens through a TP group's GEMMs
    out: dict[str, float] = {}
    bound_s: dict[str, dict[str, float]] = {}  # operator -> bound -> seconds, to name what bounds each operator
    sources: dict[str, str] = {}
    flops_total = 0.0

    def add(name: str, flops: float, nbytes: float, prec: str, e: Eff, layers: float) -> None:
        nonlocal flops_total
        t, why = _op(flops, nbytes, peak[prec] or peak["bf16"], bw, e)
        out[name] = out.get(name, 0.0) + t * layers
        by = bound_s.setdefault(name, {})
        by[why] = by.get(why, 0.0) + t * layers
        sources.setdefault(name, e.source)
        flops_total += flops * layers

    def gemm(name: str, kk: int, nn: int, layers: float, mm: float = m, prec: str = gp, split: int = tp) -> None:
        n_ = nn / split
        add(name, 2 * mm * kk * n_, kk * n_ * (wb if prec == gp else 2.0) + mm * kk * ab + mm * n_ * 2, prec, k.ops["gemm" if prec == "fp8" else "gemm_bf16"].at(mm), layers)

    lin = s.linears
    for name in ("q_a_proj", "q_b_proj", "kv_a_proj", "qkv_proj"):
        if name in lin:
            gemm("attention projections", *lin[name], s.num_layers, split=1 if name in ("q_a_proj", "kv_a_proj") else tp)
    gemm("attention projections", *lin["o_proj"], s.num_layers)
    h_ = s.heads / tp
    if s.mla:
        r, rope, nope, v = s.mla["kv_lora_rank"], s.mla["rope"], s.mla["nope"], s.mla["v"]
        if phase == "decode":  # absorbed: per head, queries into the latent and the latent out to values (BF16 bmm)
            for kk, nn in ((nope, r), (r, v)):
                add("attention projections", 2 * m * h_ * kk * nn, h_ * kk * nn * 2 + m * h_ * (kk + nn) * 2, "bf16", k.ops["grouped_gemm"], s.num_layers)
            kv_b = seqs * tp * context * (r + rope) * BYTES_PER_DTYPE[kv_dtype]
            add("attention", m * s.decode_attention_flops(context) / tp, kv_b, "bf16", k.ops["attention_decode"], s.num_layers)
        else:  # not absorbed: the latents of the whole context are up-projected, then 192/128-wide heads attend
            gemm("attention projections", r, s.heads * (nope + v), s.num_layers, mm=m / max(uncached_share, 1e-9))
            add("attention", m * mla_prefill_attention_flops(s, context) / tp, m * h_ * (2 * (nope + rope) + 2 * v) * 2, "bf16", k.ops["attention_prefill"], s.num_layers)
    else:
        kvh = max(s.kv_heads / tp, 1)
        if phase == "decode":
            kv_b = seqs * tp * context * 2 * kvh * s.head_dim * BYTES_PER_DTYPE[kv_dtype]
            add("attention", 4 * m * h_ * context * s.head_dim, kv_b, "bf16", k.ops["attention_decode"], s.num_layers)
        else:
            add("attention", 4 * m * h_ * context * s.head_dim, m * (2 * h_ + 2 * kvh) * s.head_dim * 2, "bf16", k.ops["attention_prefill"], s.num_layers)
    if phase == "decode" and layout.dp_attention:  # the step waits for the GPU holding the most KV
        out["attention"] *= imbalance(seqs, k.context_cv, layout.num_gpus)
    for name in ("dense_gate_up", "dense_down", "gate_up", "down"):
        if name in lin:
            gemm("dense FFN", *lin[name], s.dense_layers)

    def swiglu(rows: float, width: float, layers: float) -> None:
        """SwiGLU between an FFN's two GEMMs: reads the gate and up outputs (2 x width, BF16), writes width values in the
        down projection's input precision (FP8 fused into the same kernel, as serving engines fuse silu_and_mul and quant)."""
        add("FFN activation", 0.0, rows * width * (2 * 2.0 + ab), "bf16", k.ops["elementwise"], layers)

    for name in ("dense_gate_up", "gate_up"):
        if name in lin:
            swiglu(m, lin[name][1] / 2 / tp, s.dense_layers)
    comm = Comm()
    if s.num_experts:
        for name in ("shared_gate_up", "shared_down"):
            if name in lin:
                gemm("shared experts", *lin[name], s.moe_layers)
        add("router", 2 * m * s.hidden * s.num_experts, s.hidden * s.num_experts * 2 + m * s.hidden * ab, "bf16", k.ops["gemm_bf16"].at(m), s.moe_layers)
        e_g = experts_per_gpu(s, layout) if layout.ep > 1 else s.num_experts
        pairs = tokens * s.experts_per_token * layout.num_gpus / layout.ep if layout.ep > 1 else m * s.experts_per_token
        pairs *= imbalance(pairs, 1.0, layout.ep)  # routing as independent draws over balanced experts (Poisson)
        split = 1 if layout.ep > 1 else tp
        fl = expert_gemm_flops(s, pairs) / split
        by = sum(e_g * kk * nn / split * wb + pairs * (kk * ab + nn / split * 2) for kk, nn in s.expert_k_n)
        add("routed experts", fl, by, gp, k.ops["grouped_gemm"], s.moe_layers)
        swiglu(pairs, s.expert_k_n[0][1] / 2 / split, s.moe_layers)
        if "shared_gate_up" in lin:
            swiglu(m, lin["shared_gate_up"][1] / 2 / tp, s.moe_layers)
        if layout.ep > 1:
            if phase == "decode":  # low-latency kernels: pure RDMA, one copy per routed expert
                copies, rate = float(s.experts_per_token), k.low_latency_bytes_per_s(layout.ep)
            elif layout.ep <= layout.gpus_per_node:  # normal kernels inside one NVLink domain
                copies, rate = float(s.experts_per_token), k.normal_intranode_gb_per_s * 1e9
            else:  # normal kernels: one RDMA copy per remote node among the (node-limited) nodes a token selects
                nodes = layout.ep / layout.gpus_per_node
                copies = min(s.experts_per_token, s.node_limited_topk or s.experts_per_token, nodes) * (nodes - 1) / nodes
                rate = k.normal_internode_gb_per_s * 1e9
            # the all-to-all waits for the GPU receiving the most tokens (the same Poisson routing as the experts)
            dispatch_b, combine_b = (tokens * imbalance(tokens * copies, 1.0, layout.ep) * b for b in ep_bytes_per_token(s, copies))
            comm.dispatch, comm.combine = dispatch_b / rate * s.moe_layers, combine_b / rate * s.moe_layers
    if tp > 1:  # two all-reduces per layer over NVLink
        bus = k.allreduce_nvlink_fraction * (gpu.nvlink_gb_per_s or 0) / 2 * 1e9
        comm.allreduce = 2 * s.num_layers * 2 * (tp - 1) / tp * m * s.hidden * 2 / bus if bus else 0.0
    add("norms and residuals", 0.0, ELEMENTWISE_VECTORS * m * s.hidden * 2, "bf16", k.ops["elementwise"], s.num_layers)
    head_tokens = seqs * q_per_seq if phase == "decode" else seqs  # prefill: the last position of each prompt
    add("LM head and sampling", 2 * head_tokens * s.hidden * s.vocab / tp, s.hidden * s.vocab / tp * 2 + 3 * head_tokens * s.vocab * 4,
        "bf16", k.ops["gemm_bf16"].at(head_tokens), 1)  # fmt: skip
    bounds = {n: max(by, key=by.get) for n, by in bound_s.items()}
    return out, flops_total, comm, bounds, sources


def step(a: Arch, gpu: Device, layout: Layout, k: Kernels, phase: str, *, batch_per_gpu: float = 1, context: float = 1,
         mtp_tokens: int = 0, kv_dtype: str = "bf16", tokens_per_gpu: float = 0, prompt_len: float = 0, cached_fraction: float = 0.0) -> Step:  # fmt: skip
    """One decode step (``batch_per_gpu`` sequences at ``context``) or one prefill step (``tokens_per_gpu`` uncached
    prompt tokens of prompts of ``prompt_len`` with ``cached_fraction`` served from cache) on one GPU."""
    if phase == "decode":
        q = 1 + mtp_tokens
        seqs, tokens, ctx, uncached = batch_per_gpu, batch_per_gpu * q, context, 1.0
        advanced = batch_per_gpu * (1 + mtp_tokens * k.mtp_acceptance)
    else:
        q, uncached = 1, 1.0 - cached_fraction
        seqs = tokens_per_gpu / max(prompt_len * uncached, 1.0)
        tokens, advanced = tokens_per_gpu, tokens_per_gpu
        ctx = prompt_len * cached_fraction + prompt_len * uncached / 2  # uncached tokens follow the cached prefix
    micro = 2 if layout.ep > 1 and k.overlap > 0 else 1  # two micro-batches hide communication
    ops, flops, comm, bounds, sources = _layer_ops(a, gpu, layout, k, phase, tokens / micro, seqs / micro, ctx, q, kv_dtype, uncached)
    if mtp_tokens and phase == "decode" and a.mtp_modules:  # each MTP module: about one more layer
        per_layer = {n: t / a.shapes.num_layers for n, t in ops.items() if n != "LM head and sampling"}
        ops["MTP module"] = sum(per_layer.values()) * mtp_tokens
        bounds["MTP module"], sources["MTP module"] = "as its layer's operators", "the layer's operators above"
    breakdown = {n: t * micro for n, t in ops.items()}
    compute = sum(breakdown.values())
    ep_comm = (comm.dispatch + comm.combine) * micro
    if micro == 2:  # what the stage pairing leaves exposed; the rest hidden as far as `overlap` says
        s, moe = a.shapes, a.shapes.moe_layers
        ca = sum(ops.get(n, 0.0) for n in ATTENTION_SIDE) / s.num_layers
        cm = sum(ops.get(n, 0.0) for n in MOE_SIDE) / moe
        paired = moe * exposed_per_moe_layer(ca, cm, comm.dispatch / moe, comm.combine / moe)
        ep_exposed = paired + (1.0 - k.overlap) * (ep_comm - paired)
    else:
        ep_exposed = ep_comm
    exposed = ep_exposed + comm.allreduce * micro  # tensor-parallel all-reduces sit between dependent GEMMs: never hidden
    breakdown["communication (not hidden)"] = exposed
    # while hidden, prefill's normal all-to-all kernels hold a share of the SMs: computation runs that much slower meanwhile
    lent = k.normal_sm_share * (ep_comm - ep_exposed) if phase == "prefill" and micro == 2 else 0.0
    breakdown["SMs lent to communication"] = lent
    breakdown["fixed overhead"] = k.step_overhead_s
    bounds.update({"communication (not hidden)": "communication", "SMs lent to communication": "communication", "fixed overhead": "fixed"})
    sources.update({"communication (not hidden)": k.comm_source, "SMs lent to communication": k.comm_source,
                    "fixed overhead": "kernels.toml [service] step_overhead_ms"})  # fmt: skip
    total = compute + exposed + lent + k.step_overhead_s
    all_comm = ep_comm + comm.allreduce * micro
    bound = "communication" if exposed > 0 and all_comm > compute else max(ops, key=ops.get)
    return Step(total, {n: round(t * 1000, 4) for n, t in breakdown.items()}, compute, all_comm, advanced, flops * micro, bound,
                op_bounds=bounds, op_sources=sources)  # fmt: skip
