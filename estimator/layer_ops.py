"""The operators of one serving step on one GPU, as a list of costs, and their sum.

Each operator is a cost: FLOPs and bytes per layer, the precision whose peak bounds its compute, the efficiency it
runs at (kernels.py) and the layers that run it. Its time is the larger of FLOPs / (compute efficiency × peak) and
bytes / (memory efficiency × bandwidth); the step's operators are the sum of those times. Per layer: the attention
projections (MLA absorbed in decode, not absorbed in prefill; GQA for dense models), attention, the dense FFN or the
shared experts, the router, the routed experts (a grouped GEMM at tokens per expert = tokens × top-k ÷ experts on the
GPU, times a load-imbalance factor), the SwiGLU activation between each FFN's two GEMMs, norms and residuals; then the
LM head and sampling. Communication (expert-parallel dispatch and combine, tensor-parallel all-reduces) is counted
apart, for serving.py to overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from core.dtypes import BYTES_PER_DTYPE
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
        return gemm_precision(self.gpu, self.a.weight_dtype)

    @cached_property
    def ab(self) -> float:
        """Bytes per GEMM activation element: FP8 where the GEMMs run in FP8."""
        return 1.0 if self.gp == "fp8" else 2.0

    @cached_property
    def m(self) -> float:
        """Tokens through a TP group's GEMMs."""
        return self.tokens * self.layout.tp

    def gemm(
        self, name: Op, kk: int, nn: int, layers: float, mm: float | None = None, prec: str | None = None, split: int | None = None
    ) -> OpCost:
        """A (mm × kk) by (kk × nn) GEMM with its weight split ``split`` ways (default: over the TP group)."""
        mm, prec = self.m if mm is None else mm, prec or self.gp
        n_ = nn / (self.layout.tp if split is None else split)
        wb = BYTES_PER_DTYPE[self.a.weight_dtype] if prec == self.gp else 2.0
        eff = self.k.ops["gemm" if prec == "fp8" else "gemm_bf16"].at(mm)
        return OpCost(name, 2 * mm * kk * n_, kk * n_ * wb + mm * kk * self.ab + mm * n_ * 2, prec, eff, layers)

    def swiglu(self, rows: float, width: float, layers: float) -> OpCost:
        """SwiGLU between an FFN's two GEMMs: reads the gate and up outputs (2 x width, BF16), writes width values in the
        down projection's input precision (FP8 fused into the same kernel, as serving engines fuse silu_and_mul and quant)."""
        return OpCost(Op.FFN_ACTIVATION, 0.0, rows * width * (2 * 2.0 + self.ab), "bf16", self.k.ops["elementwise"], layers)


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
    """The dense FFN's GEMMs and activation, in the layers that have one."""
    s, lin = x.s, x.s.linears
    costs = [x.gemm(Op.DENSE_FFN, *lin[n], s.dense_layers) for n in ("dense_gate_up", "dense_down", "gate_up", "down") if n in lin]
    return costs + [x.swiglu(x.m, lin[n][1] / 2 / x.layout.tp, s.dense_layers) for n in ("dense_gate_up", "gate_up") if n in lin]


def routed_pairs(x: Batch) -> float:
    """(token, expert) pairs the busiest GPU's routed experts take in one layer: routing as independent draws over
    balanced experts (Poisson)."""
    s, lay = x.s, x.layout
    pairs = x.tokens * s.experts_per_token * lay.num_gpus / lay.ep if lay.ep > 1 else x.m * s.experts_per_token
    return pairs * imbalance(pairs, 1.0, lay.ep)


def moe_costs(x: Batch) -> list[OpCost]:
    """Every MoE layer's shared experts, router, routed experts and their activations."""
    s, lin, lay, m = x.s, x.s.linears, x.layout, x.m
    if not s.num_experts:
        return []
    costs = [x.gemm(Op.SHARED_EXPERTS, *lin[n], s.moe_layers) for n in ("shared_gate_up", "shared_down") if n in lin]
    costs.append(OpCost(Op.ROUTER, 2 * m * s.hidden * s.num_experts, s.hidden * s.num_experts * 2 + m * s.hidden * x.ab, "bf16",
                        x.k.ops["gemm_bf16"].at(m), s.moe_layers))  # fmt: skip
    e_g = experts_per_gpu(s, lay) if lay.ep > 1 else s.num_experts
    pairs, split, wb = routed_pairs(x), 1 if lay.ep > 1 else lay.tp, BYTES_PER_DTYPE[x.a.weight_dtype]
    nbytes = sum(e_g * kk * nn / split * wb + pairs * (kk * x.ab + nn / split * 2) for kk, nn in s.expert_k_n)
    costs.append(OpCost(Op.ROUTED_EXPERTS, expert_gemm_flops(s, pairs) / split, nbytes, x.gp, x.k.ops["grouped_gemm"], s.moe_layers))
    costs.append(x.swiglu(pairs, s.expert_k_n[0][1] / 2 / split, s.moe_layers))
    if "shared_gate_up" in lin:
        costs.append(x.swiglu(m, lin["shared_gate_up"][1] / 2 / lay.tp, s.moe_layers))
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
