"""The operators of one serving step on one GPU, as a list of costs, and their sum.

Each operator is a cost: FLOPs and bytes per layer, the precision whose peak bounds its compute, the efficiency it runs at (kernels.py)
and the layers that run it; its time is the larger of FLOPs / (compute efficiency × peak) and bytes / (memory efficiency × bandwidth).
Per layer: attention projections (MLA absorbed in decode, not in prefill), attention, the dense FFN or shared experts, the router, the
routed experts (a grouped GEMM, times a load-imbalance factor), each FFN's SwiGLU, norms and residuals; then the LM head and sampling.
Communication (expert-parallel dispatch and combine, tensor-parallel all-reduces) is counted apart, for serving.py to overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from core.dtypes import BYTES_PER_DTYPE, WEIGHT_FORMATS
from core.hardware import Device
from core.opcounts import ep_bytes_per_token, expert_gemm_flops, imbalance, mla_prefill_attention_flops
from core.shapes import Shapes
from estimator.arch import Arch, Layout, experts_per_gpu, gemm_precision
from estimator.kernels import Eff, Kernels


class Op(StrEnum):
    """The operators (and the rest of a step) a breakdown is keyed by: a renamed one fails where it is used, not zero."""

    ATTENTION_PROJECTIONS = "attention projections"
    ATTENTION = "attention"
    DENSE_FFN = "dense FFN"
    SHARED_EXPERTS = "shared experts"
    ROUTER = "router"
    ROUTED_EXPERTS = "routed experts"
    FFN_ACTIVATION = "FFN activation"
    NORMS = "norms and residuals"
    LM_HEAD = "LM head and sampling"
    MTP_MODULE = "MTP module"
    COMMUNICATION = "communication (not hidden)"
    SMS_LENT = "SMs lent to communication"
    KERNEL_LAUNCHES = "kernel launches"
    SCHEDULER = "scheduler (CPU, not overlapped)"


ELEMENTWISE_VECTORS = 10  # per token per layer: 2 RMS norms (read + write), 2 residual adds (2 reads + write), rotary


@dataclass(frozen=True)
class OpCost:
    """One operator's work in one layer (once, for the LM head) and the layers that run it."""

    name: Op
    flops: float
    nbytes: float
    precision: str  # whose peak bounds its compute: fp8 or bf16
    eff: Eff
    layers: float


@dataclass
class Comm:
    """Communication seconds of one micro-batch on one GPU, all layers: expert-parallel dispatch and combine, TP all-reduces."""

    dispatch: float = 0.0
    combine: float = 0.0
    allreduce: float = 0.0


@dataclass(frozen=True)
class Batch:
    """One micro-batch on one GPU: what the operators are sized by."""

    a: Arch
    gpu: Device
    layout: Layout
    k: Kernels
    phase: str  # decode or prefill
    tokens: float
    seqs: float
    context: float
    q_per_seq: float  # query tokens per sequence (decode: 1 + MTP drafts)
    kv_dtype: str
    uncached_share: float  # prefill: share of each prompt not served from cache

    @cached_property
    def s(self) -> Shapes:
        return self.a.shapes

    @cached_property
    def gp(self) -> str:
        """The GEMM precision of the weights' headline format (what the router reads its input at)."""
        return gemm_precision(self.gpu, self.a.weight_dtype)

    @cached_property
    def m(self) -> float:
        """Tokens through a TP group's GEMMs."""
        return self.tokens * self.layout.tp

    def fmt(self, component: str) -> tuple[str, float, str]:
        """(format, bytes per weight, GEMM precision) of a linear component as served on this GPU."""
        fmt = self.a.format_of(component)
        return fmt, WEIGHT_FORMATS[fmt].bytes_per_element, gemm_precision(self.gpu, fmt)

    def gemm(self, name: Op, kk: int, nn: int, layers: float, mm: float | None = None, component: str = "attention",
             split: int | None = None) -> OpCost:  # fmt: skip
        """A (mm × kk) by (kk × nn) GEMM of ``component``'s weights, split ``split`` ways (default: over the TP group),
        read at their format's bytes and computed at its precision on this GPU."""
        mm = self.m if mm is None else mm
        _, wb, prec = self.fmt(component)
        n_ = nn / (self.layout.tp if split is None else split)
        eff = self.k.ops["gemm" if prec == "fp8" else "gemm_bf16"].at(mm)
        return OpCost(name, 2 * mm * kk * n_, kk * n_ * wb + mm * kk * activation_bytes(prec) + mm * n_ * 2, prec, eff, layers)

    def swiglu(self, rows: float, width: float, layers: float, component: str) -> OpCost:
        """SwiGLU between an FFN's two GEMMs: reads the gate and up outputs (2 x width, BF16), writes width values in the
        down projection's input precision (FP8 fused into the same kernel, as serving engines fuse silu_and_mul and quant)."""
        ab = activation_bytes(self.fmt(component)[2])
        return OpCost(Op.FFN_ACTIVATION, 0.0, rows * width * (2 * 2.0 + ab), "bf16", self.k.ops["elementwise"], layers)


def activation_bytes(precision: str) -> float:
    """Bytes per GEMM activation element: FP8 where the GEMMs run in FP8, else BF16."""
    return 1.0 if precision == "fp8" else 2.0


def attention_costs(x: Batch) -> list[OpCost]:
    """The attention projections and attention of every layer."""
    s, lin, tp, m, L = x.s, x.s.linears, x.layout.tp, x.m, x.s.num_layers
    costs = [x.gemm(Op.ATTENTION_PROJECTIONS, *lin[n], L, split=1 if n in ("q_a_proj", "kv_a_proj") else None)
             for n in ("q_a_proj", "q_b_proj", "kv_a_proj", "qkv_proj") if n in lin]  # fmt: skip
    costs.append(x.gemm(Op.ATTENTION_PROJECTIONS, *lin["o_proj"], L))
    h_, kv_bytes = s.heads / tp, BYTES_PER_DTYPE[x.kv_dtype]
    if s.mla:
        r, rope, nope, v = s.mla["kv_lora_rank"], s.mla["rope"], s.mla["nope"], s.mla["v"]
        if x.phase == "decode":  # absorbed: per head, queries into the latent and the latent out to values (BF16 bmm)
            costs += [
                OpCost(
                    Op.ATTENTION_PROJECTIONS,
                    2 * m * h_ * kk * nn,
                    h_ * kk * nn * 2 + m * h_ * (kk + nn) * 2,
                    "bf16",
                    x.k.ops["grouped_gemm"],
                    L,
                )
                for kk, nn in ((nope, r), (r, v))
            ]
            kv_b = x.seqs * tp * x.context * (r + rope) * kv_bytes
            costs.append(OpCost(Op.ATTENTION, m * s.decode_attention_flops(x.context) / tp, kv_b, "bf16", x.k.ops["attention_decode"], L))
        else:  # not absorbed: the latents of the whole context are up-projected, then 192/128-wide heads attend
            costs.append(x.gemm(Op.ATTENTION_PROJECTIONS, r, s.heads * (nope + v), L, mm=m / max(x.uncached_share, 1e-9)))
            costs.append(
                OpCost(
                    Op.ATTENTION,
                    m * mla_prefill_attention_flops(s, x.context) / tp,
                    m * h_ * (2 * (nope + rope) + 2 * v) * 2,
                    "bf16",
                    x.k.ops["attention_prefill"],
                    L,
                )
            )
        return costs
    kvh, flops = max(s.kv_heads / tp, 1), m * s.decode_attention_flops(x.context) / tp  # prefill too: one query attending context
    if x.phase == "decode":
        kv_b = x.seqs * tp * x.context * 2 * kvh * s.head_dim * kv_bytes
        return [*costs, OpCost(Op.ATTENTION, flops, kv_b, "bf16", x.k.ops["attention_decode"], L)]
    return [*costs, OpCost(Op.ATTENTION, flops, m * (2 * h_ + 2 * kvh) * s.head_dim * 2, "bf16", x.k.ops["attention_prefill"], L)]


def dense_ffn_costs(x: Batch) -> list[OpCost]:
    """The dense FFN's GEMMs and activation, in the layers that have one (Nemotron-H's squared ReLU: up and down only)."""
    s, lin, tp = x.s, x.s.linears, x.layout.tp
    names = ("dense_gate_up", "dense_down", "gate_up", "down", "up")
    costs = [x.gemm(Op.DENSE_FFN, *lin[n], s.dense_layers, component="dense_ffn") for n in names if n in lin]
    gated = [x.swiglu(x.m, lin[n][1] / 2 / tp, s.dense_layers, "dense_ffn") for n in ("dense_gate_up", "gate_up") if n in lin]
    if "up" in lin:  # squared ReLU: reads the up projection's output once, writes it once
        ab = activation_bytes(x.fmt("dense_ffn")[2])
        gated.append(OpCost(Op.FFN_ACTIVATION, 0.0, x.m * lin["up"][1] / tp * (2.0 + ab), "bf16", x.k.ops["elementwise"], s.dense_layers))
    return costs + gated


def routed_pairs(x: Batch) -> float:
    """(token, expert) pairs the busiest GPU's routed experts take in one layer: routing as independent draws over
    balanced experts (Poisson)."""
    s, lay = x.s, x.layout
    pairs = x.tokens * s.experts_per_token * lay.num_gpus / lay.ep if lay.ep > 1 else x.m * s.experts_per_token
    return pairs * imbalance(pairs, 1.0, lay.ep)


def touched_experts(x: Batch) -> float:
    """Routed experts on one GPU whose weights one MoE layer reads: those at least one of the step's tokens is routed to.
    Under uniform routing each of T tokens picks a given expert with probability k / E, so E_gpu (1 - (1 - k/E)^T) of
    the E_gpu experts a GPU holds are touched. T: the tokens entering the layer across the expert-parallel group (with
    EP 1, the TP group's tokens; every expert is split over the group and touched there alike); E counts the redundant
    copies. A decode step at small batch reads only these (Mixtral at batch 1: 2 of 8); prefill and large batches all."""
    s, lay = x.s, x.layout
    if lay.ep > 1:
        held, total, tokens = experts_per_gpu(s, lay), s.num_experts + lay.redundant_experts, x.tokens * lay.num_gpus
    else:
        held, total, tokens = s.num_experts, s.num_experts, x.m
    return held * (1.0 - (1.0 - s.experts_per_token / total) ** tokens)


def moe_costs(x: Batch) -> list[OpCost]:
    """Every MoE layer's shared experts, router, routed experts (the experts the batch touches, touched_experts) and
    their activations."""
    s, lin, lay, m = x.s, x.s.linears, x.layout, x.m
    if not s.num_experts:
        return []
    costs = [x.gemm(Op.SHARED_EXPERTS, *lin[n], s.moe_layers, component="shared_experts") for n in ("shared_gate_up", "shared_down")
             if n in lin]  # fmt: skip
    costs.append(OpCost(Op.ROUTER, 2 * m * s.hidden * s.num_experts, s.hidden * s.num_experts * 2 + m * s.hidden * activation_bytes(x.gp),
                        "bf16", x.k.ops["gemm_bf16"].at(m), s.moe_layers))  # fmt: skip
    pairs, split = routed_pairs(x), 1 if lay.ep > 1 else lay.tp
    _, wb, prec = x.fmt("routed_experts")
    ab, touched = activation_bytes(prec), touched_experts(x)
    nbytes = sum(touched * kk * nn / split * wb + pairs * (kk * ab + nn / split * 2) for kk, nn in s.expert_k_n)
    costs.append(OpCost(Op.ROUTED_EXPERTS, expert_gemm_flops(s, pairs) / split, nbytes, prec, x.k.ops["grouped_gemm"], s.moe_layers))
    costs.append(x.swiglu(pairs, s.expert_k_n[0][1] / 2 / split, s.moe_layers, "routed_experts"))
    if "shared_gate_up" in lin:
        costs.append(x.swiglu(m, lin["shared_gate_up"][1] / 2 / lay.tp, s.moe_layers, "shared_experts"))
    return costs


def tail_costs(x: Batch) -> list[OpCost]:
    """Norms and residuals of every layer; the LM head and sampling once."""
    s, tp = x.s, x.layout.tp
    head_tokens = x.seqs * x.q_per_seq if x.phase == "decode" else x.seqs  # prefill: the last position of each prompt
    return [
        OpCost(Op.NORMS, 0.0, ELEMENTWISE_VECTORS * x.m * s.hidden * 2, "bf16", x.k.ops["elementwise"], s.num_layers),
        OpCost(
            Op.LM_HEAD,
            2 * head_tokens * s.hidden * s.vocab / tp,
            s.hidden * s.vocab / tp * 2 + 3 * head_tokens * s.vocab * 4,
            "bf16",
            x.k.ops["gemm_bf16"].at(head_tokens),
            1,
        ),
    ]


def layer_costs(x: Batch) -> list[OpCost]:
    """Every operator of one micro-batch's step, in the order they run."""
    return attention_costs(x) + dense_ffn_costs(x) + moe_costs(x) + tail_costs(x)


def communication(x: Batch) -> Comm:
    """Expert-parallel dispatch and combine over all MoE layers, and tensor-parallel all-reduces over all layers."""
    s, lay, k, comm = x.s, x.layout, x.k, Comm()
    if s.num_experts and lay.ep > 1:
        if x.phase == "decode":  # low-latency kernels: pure RDMA, one copy per routed expert
            copies, rate = float(s.experts_per_token), k.low_latency_bytes_per_s(lay.ep)
        elif lay.ep <= lay.gpus_per_node:  # normal kernels inside one NVLink domain
            copies, rate = float(s.experts_per_token), k.normal_intranode_gb_per_s * 1e9
        else:  # normal kernels: one RDMA copy per remote node among the (node-limited) nodes a token selects
            nodes = lay.ep / lay.gpus_per_node
            copies = min(s.experts_per_token, s.node_limited_topk or s.experts_per_token, nodes) * (nodes - 1) / nodes
            rate = k.normal_internode_gb_per_s * 1e9
        # the all-to-all waits for the GPU receiving the most tokens (the same Poisson routing as the experts)
        dispatch_b, combine_b = (x.tokens * imbalance(x.tokens * copies, 1.0, lay.ep) * b for b in ep_bytes_per_token(s, copies))
        comm.dispatch, comm.combine = dispatch_b / rate * s.moe_layers, combine_b / rate * s.moe_layers
    if lay.tp > 1:  # two all-reduces per layer over NVLink, each a fixed latency plus its bytes at the bus bandwidth
        bus = k.allreduce_nvlink_fraction * (x.gpu.nvlink_gb_per_s or 0) / 2 * 1e9
        transfer = 2 * (lay.tp - 1) / lay.tp * x.m * s.hidden * 2 / bus if bus else 0.0
        comm.allreduce = 2 * s.num_layers * (k.allreduce_latency_s + transfer)
    return comm


def op_time(c: OpCost, peaks: dict[str, float], bandwidth: float) -> tuple[float, str]:
    """(seconds in one layer, what bounds it: compute or memory), at ``peaks`` FLOP/s by precision and ``bandwidth`` bytes/s."""
    compute = c.flops / (c.eff.compute * peaks[c.precision]) if c.flops else 0.0
    memory = c.nbytes / (c.eff.memory * bandwidth) if c.nbytes else 0.0
    return (compute, "compute") if compute >= memory else (memory, "memory")


def summed(costs: list[OpCost], gpu: Device) -> tuple[dict[Op, float], float, dict[Op, str], dict[Op, str], float]:
    """(operator -> seconds over its layers, FLOPs, operator -> what bounds most of its time, operator -> efficiency source,
    kernels: one per cost and layer it runs in)."""
    seconds: dict[Op, float] = {}
    by_bound: dict[Op, dict[str, float]] = {}
    sources: dict[Op, str] = {}
    flops = 0.0
    bf16 = gpu.peak_flops_per_s("bf16")
    peaks = {"bf16": bf16, "fp8": gpu.peak_flops_per_s("fp8") if "fp8" in gpu.peak_tflops else bf16}  # no FP8: it runs at BF16's
    for c in costs:
        t, why = op_time(c, peaks, gpu.bandwidth_bytes_per_s)
        seconds[c.name] = seconds.get(c.name, 0.0) + t * c.layers
        bound = by_bound.setdefault(c.name, {})
        bound[why] = bound.get(why, 0.0) + t * c.layers
        sources.setdefault(c.name, c.eff.source)
        flops += c.flops * c.layers
    kernels = sum(c.layers for c in costs)
    return seconds, flops, {n: max(b, key=b.get) for n, b in by_bound.items()}, sources, kernels


def layer_ops(x: Batch) -> tuple[dict[Op, float], float, Comm, dict[Op, str], dict[Op, str], float]:
    """(operator -> seconds for all layers of one micro-batch, FLOPs, communication, operator -> bound, operator ->
    efficiency source, kernels the costs launch) on one GPU. With data-parallel attention, decode waits for the GPU
    holding the most KV."""
    seconds, flops, bounds, sources, kernels = summed(layer_costs(x), x.gpu)
    if x.phase == "decode" and x.layout.dp_attention:
        seconds[Op.ATTENTION] *= imbalance(x.seqs, x.k.context_cv, x.layout.num_gpus)
    return seconds, flops, communication(x), bounds, sources, kernels
