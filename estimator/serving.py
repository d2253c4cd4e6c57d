"""A per-operator model of one serving step on one GPU of a deployment.

step = Σ over operators max(FLOPs / (compute eff × peak of the operator's precision),
                            bytes / (memory eff × bandwidth))
       + expert-parallel communication not hidden behind computation + launching the step's kernels
       + the scheduler's CPU time the GPU waits for (estimator/step_floor.py).

Operators per layer: attention projections (FP8 GEMMs; the MLA absorption bmm in BF16), attention
(MLA absorbed in decode, not absorbed in prefill; GQA for dense models; BF16 or FP8 KV), dense FFN or
shared experts (FP8 GEMMs), routed experts (a grouped GEMM at tokens per expert = tokens × top-k ÷
experts on the GPU, times a load-imbalance factor), the SwiGLU activation between each FFN's two GEMMs,
norms and residuals; then the LM head and sampling. The layout is explicit: tensor parallelism, expert
parallelism, data-parallel attention (each GPU its own sequences, the non-routed weights replicated on
every GPU). With communication on, two micro-batches overlap it with computation stage by stage
(exposed_per_moe_layer), so every weight is read twice per step.

The operators and their costs are layer_ops.py; the architecture and layout arch.py; shapes from the model's config.json
(core/shapes.py), efficiencies from kernels.py; seconds, bytes, FLOPs per GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from core.engines import engine_rules
from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels
from estimator.layer_ops import Batch, Comm, Op, layer_ops
from estimator.step_floor import engine_tokens_per_step, exposed_scheduler_s, kernels_per_step, launch_overhead_s, padded, scheduler_s


@dataclass
class Step:
    """One step's time on one GPU, by operator (ms), and what bounds it."""

    seconds: float
    breakdown_ms: dict[Op, float]
    compute_s: float
    comm_s: float
    tokens: float  # tokens this GPU advances per step (decode: sequences × accepted tokens; prefill: prompt tokens)
    flops: float
    bound: str
    notes: list[str] = field(default_factory=list)
    op_bounds: dict[Op, str] = field(default_factory=dict)  # operator -> what bounds it: compute, memory, communication, launch, CPU
    op_sources: dict[Op, str] = field(default_factory=dict)  # operator -> where its efficiency comes from


class Stage(StrEnum):
    """Where an operator sits when two micro-batches overlap communication (exposed_per_moe_layer)."""

    ATTENTION = "attention side"  # a layer's computation before dispatch
    MOE = "MoE side"  # between dispatch and combine
    UNPAIRED = "unpaired"  # dense layers, the LM head, MTP: paired with no communication


STAGES = {Op.ATTENTION_PROJECTIONS: Stage.ATTENTION, Op.ATTENTION: Stage.ATTENTION, Op.NORMS: Stage.ATTENTION,
          Op.MIXER_PROJECTIONS: Stage.ATTENTION, Op.LINEAR_ATTENTION: Stage.ATTENTION, Op.MAMBA_SCAN: Stage.ATTENTION,
          Op.SHARED_EXPERTS: Stage.MOE, Op.ROUTER: Stage.MOE, Op.ROUTED_EXPERTS: Stage.MOE, Op.FFN_ACTIVATION: Stage.MOE,
          Op.DENSE_FFN: Stage.UNPAIRED, Op.LM_HEAD: Stage.UNPAIRED, Op.MTP_MODULE: Stage.UNPAIRED}  # fmt: skip


def stage_seconds(ops: dict[Op, float], stage: Stage) -> float:
    """Seconds of the operators of ``stage``, in the order Op declares them; an operator with no stage fails here."""
    unstaged = [op for op in ops if op not in STAGES]
    if unstaged:
        raise KeyError(f"operators without an overlap stage: {unstaged}; add them to serving.STAGES")
    return sum(ops.get(op, 0.0) for op in STAGES if STAGES[op] is stage)


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


def _within_scaleup(gpu: Device, layout: Layout) -> bool:
    """Whether the instance fits one scale-up (NVLink) domain of ``gpu``."""
    return layout.num_gpus <= gpu.scaleup_domain_gpus and bool(gpu.nvlink_gb_per_s)


def p2p_bytes_per_s(gpu: Device, layout: Layout, k: Kernels) -> float:
    """The rate one GPU sends activations to the next pipeline stage at: over its scale-up link (one direction, at the
    all-reduce's share of it) where the instance fits one scale-up domain, else over the network (the per-GPU RDMA rate
    DeepEP measured over CX7 400 Gb/s InfiniBand, kernels.toml dispatch_combine)."""
    if _within_scaleup(gpu, layout):
        return k.allreduce_nvlink_fraction * gpu.nvlink_gb_per_s / 2 * 1e9
    return k.normal_internode_gb_per_s * 1e9


def p2p_source(gpu: Device, layout: Layout, k: Kernels) -> str:
    link = k.allreduce_source if _within_scaleup(gpu, layout) else k.comm_source
    return link + "; vLLM's PP: pp batches in flight (VllmConfig.max_concurrent_batches)"


def pipeline_round(seconds: dict[Op, float], a: Arch, gpu: Device, layout: Layout, k: Kernels,
                   tokens: float) -> tuple[dict[Op, float], float]:  # fmt: skip
    """One round of a pipeline of ``layout.pp`` stages: (seconds by operator, total). vLLM keeps pp batches in flight
    (vllm/config/vllm.py, VllmConfig.max_concurrent_batches: "PP requires PP-size concurrent batches to fill the
    pipeline"; EngineCore.step_with_batch_queue), each of ``tokens`` per GPU, so in steady state there is no bubble to
    fill and every stage works on one batch while the others work on the rest: a round, in which each batch passes every
    stage once and each sequence advances one token, lasts pp stage times. The slowest stage sets the pace: the last,
    with ceil(L / pp) layers and the LM head. Between stages each GPU sends its share of the batch's hidden states and
    residual (2 x hidden x 2 bytes a token of the TP group's tokens, split over the group as vLLM's all_gather_group
    splits it): pp transfers a round. Each of the pp batches is scheduled once a round."""
    pp = layout.pp
    share = math.ceil(a.shapes.num_layers / pp) / a.shapes.num_layers
    scale = {Op.LM_HEAD: pp, Op.SCHEDULER: pp}
    out = {n: t * scale.get(n, pp * share) for n, t in seconds.items()}
    out[Op.PIPELINE_TRANSFER] = pp * tokens * 2 * a.shapes.hidden * 2 / p2p_bytes_per_s(gpu, layout, k)
    return out, sum(out.values())


def step(
    a: Arch,
    gpu: Device,
    layout: Layout,
    k: Kernels,
    phase: str,
    *,
    batch_per_gpu: float = 1,
    context: float = 1,
    mtp_tokens: int = 0,
    kv_dtype: str = "bf16",
    tokens_per_gpu: float = 0,
    prompt_len: float = 0,
    cached_fraction: float = 0.0,
) -> Step:
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
    k = padded(k, gpu, layout, tokens) if phase == "decode" else k  # a CUDA graph's padding runs too
    micro = 2 if layout.ep > 1 and k.overlap > 0 else 1  # two micro-batches hide communication
    x = Batch(a, gpu, layout, k, phase, tokens / micro, seqs / micro, ctx, q, kv_dtype, uncached, prompt_len)
    ops, flops, comm, bounds, sources, cost_kernels = layer_ops(x)
    if mtp_tokens and phase == "decode" and a.mtp_modules:  # each MTP module: about one more layer
        per_layer = {n: t / a.shapes.num_layers for n, t in ops.items() if n is not Op.LM_HEAD}
        ops[Op.MTP_MODULE] = sum(per_layer.values()) * mtp_tokens
        bounds[Op.MTP_MODULE], sources[Op.MTP_MODULE] = "as its layer's operators", "the layer's operators above"
    breakdown = {n: t * micro for n, t in ops.items()}
    compute = sum(breakdown.values())
    ep_comm = (comm.dispatch + comm.combine) * micro
    ep_exposed = _ep_exposed_s(a, ops, comm, k, micro)
    exposed = ep_exposed + comm.allreduce * micro  # tensor-parallel all-reduces sit between dependent GEMMs: never hidden
    breakdown[Op.COMMUNICATION] = exposed
    # while hidden, prefill's normal all-to-all kernels hold a share of the SMs: computation runs that much slower meanwhile
    lent = k.normal_sm_share * (ep_comm - ep_exposed) if phase == "prefill" and micro == 2 else 0.0
    breakdown[Op.SMS_LENT], gpu_s = lent, compute + exposed + lent
    mtp_kernels = (Op.MTP_MODULE in ops) * mtp_tokens * cost_kernels / a.shapes.num_layers  # each module about a layer's
    floor_s, floor_sources = _floor(a, gpu, layout, k, micro, cost_kernels + mtp_kernels, tokens, seqs, gpu_s)
    breakdown.update(floor_s)
    bounds.update({Op.COMMUNICATION: "communication", Op.SMS_LENT: "communication", Op.KERNEL_LAUNCHES: "launch", Op.SCHEDULER: "CPU"})
    allreduce_source = comm.allreduce_source or k.allreduce_source  # the measured database's all-reduce where it was read
    comm_source = "; ".join(src for src, t in ((k.comm_source, ep_comm), (allreduce_source, comm.allreduce)) if t) or k.comm_source
    sources.update({Op.COMMUNICATION: comm_source, Op.SMS_LENT: k.comm_source, **floor_sources})
    all_comm, total = ep_comm + comm.allreduce * micro, gpu_s + sum(floor_s.values())
    if layout.pp > 1:
        breakdown, total = pipeline_round(breakdown, a, gpu, layout, k, tokens)
        bounds[Op.PIPELINE_TRANSFER], sources[Op.PIPELINE_TRANSFER] = "communication", p2p_source(gpu, layout, k)
    bound = "communication" if exposed > 0 and all_comm > compute else max(ops, key=ops.get)
    return Step(total, {n: round(t * 1000, 4) for n, t in breakdown.items()}, compute, all_comm, advanced, flops * micro, bound,
                op_bounds=bounds, op_sources=sources)  # fmt: skip


def _ep_exposed_s(a: Arch, ops: dict[Op, float], comm: Comm, k: Kernels, micro: int) -> float:
    """The expert-parallel all-to-all time left exposed: all of it with one micro-batch; with two, what the stage pairing
    leaves exposed (exposed_per_moe_layer), the rest hidden as far as ``k.overlap`` says."""
    ep_comm = (comm.dispatch + comm.combine) * micro
    if micro != 2:
        return ep_comm
    moe = a.shapes.moe_layers
    ca = stage_seconds(ops, Stage.ATTENTION) / a.shapes.num_layers
    cm = stage_seconds(ops, Stage.MOE) / moe
    paired = moe * exposed_per_moe_layer(ca, cm, comm.dispatch / moe, comm.combine / moe)
    return paired + (1.0 - k.overlap) * (ep_comm - paired)


def _floor(a: Arch, gpu: Device, layout: Layout, k: Kernels, micro: int, cost_kernels: float, tokens: float, seqs: float,
           gpu_s: float) -> tuple[dict[Op, float], dict[Op, str]]:  # fmt: skip
    """The step's kernel launches and the scheduler time the GPU waits for (estimator/step_floor.py), in seconds, with sources."""
    rules = engine_rules(k.engine)
    kernels = micro * kernels_per_step(cost_kernels, a, layout, rules)
    captured = k.graph_run(gpu.name, engine_tokens_per_step(tokens, layout))[1]
    launches = launch_overhead_s(kernels, gpu_s, captured, k)
    waits = exposed_scheduler_s(scheduler_s(seqs, layout, rules), gpu_s + launches, k)
    engine = f"{rules.engine} {rules.version}"
    return ({Op.KERNEL_LAUNCHES: launches, Op.SCHEDULER: waits},
            {Op.KERNEL_LAUNCHES: f"{kernels:,.0f} kernels, {'CUDA graph' if captured else 'eager'} ({engine}): {k.launch_source}",
             Op.SCHEDULER: f"{engine} scheduler, core/data/engines/"})  # fmt: skip
