"""The operators of one serving step on one GPU, as a list of costs, and their sum.

Each operator is a cost (batch.OpCost): FLOPs and bytes per layer, the precision whose peak bounds its compute, the
efficiency it runs at (kernels.py) and the layers that run it. Its time is the larger of FLOPs / (compute efficiency ×
peak) and bytes / (memory efficiency × bandwidth); the step's operators are the sum of those times. Per layer: the
attention projections and attention of the layers that attend, each over the tokens its kind keeps (attention_ops.py:
global, sliding-window, chunked local, MLA), the linear-attention and Mamba-2 layers' projections and state updates
(mixer_ops.py), the dense FFN or the shared experts, the router, the routed experts (a
grouped GEMM at tokens per expert = tokens × top-k ÷ experts on the GPU, times a load-imbalance factor, reading the
experts the batch touches), the activation between each FFN's two GEMMs, norms and residuals; then the LM head and
sampling. Communication (expert-parallel dispatch and combine, tensor-parallel all-reduces) is counted apart, for
serving.py to overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.hardware import Device
from core.opcounts import ep_bytes_per_token, expert_gemm_flops, imbalance
from core.shapes import Shapes
from estimator.arch import experts_per_gpu
from estimator.attention_ops import attention_costs
from estimator.batch import Batch, Op, OpCost, activation_bytes, gemm_class
from estimator.engine_kernels import moe_format
from estimator.mixer_ops import mixer_costs

__all__ = ["Batch", "Comm", "Op", "OpCost", "layer_costs", "layer_ops", "summed"]


# Hidden-size vectors a token's norms and residual adds move per layer: each of the two norms adds the residual in the
# same kernel (reads the sublayer's output and the residual, writes the new residual and the normed input: 4 vectors), as
# both engines run it: vLLM's RMSNorm.forward_cuda calls ops.fused_add_rms_norm (vllm/model_executor/layers/layernorm.py),
# TensorRT-LLM's PyTorch RMSNorm calls flashinfer_fused_add_rmsnorm (tensorrt_llm/_torch/modules/rms_norm.py) from
# LlamaDecoderLayer.forward (tensorrt_llm/_torch/models/modeling_llama.py). Unfused (a norm's read and write, an add's two
# reads and a write) it would be 10, the count before. Rotary is not counted: TensorRT-LLM applies it inside its attention
# op; vLLM's own in-place rotary kernel on q and k is left out (as it was before).
ELEMENTWISE_VECTORS = 8


@dataclass
class Comm:
    """Communication seconds of one micro-batch on one GPU, all layers: expert-parallel dispatch and combine, TP all-reduces."""

    dispatch: float = 0.0
    combine: float = 0.0
    allreduce: float = 0.0
    allreduce_source: str = ""  # where the all-reduce's time comes from (kernels.Kernels.allreduce_s)


def dense_ffn_costs(x: Batch) -> list[OpCost]:
    """The dense FFN's GEMMs and activation, in the layers that have one (Nemotron-H's squared ReLU: up and down only)."""
    s, lin, tp = x.s, x.s.linears, x.layout.tp
    names = ("dense_gate_up", "dense_down", "gate_up", "down", "up")
    costs = [x.gemm(Op.DENSE_FFN, *lin[n], s.dense_layers, component="dense_ffn", row_parallel=n in ("dense_down", "down"))
             for n in names if n in lin]  # fmt: skip
    gated = [x.swiglu(x.m, lin[n][1] / 2 / tp, s.dense_layers, "dense_ffn") for n in ("dense_gate_up", "gate_up") if n in lin]
    if "up" in lin:  # squared ReLU: reads the up projection's output once, writes it once
        ab = activation_bytes(x.fmt("dense_ffn")[2])
        gated.append(OpCost(Op.FFN_ACTIVATION, 0.0, x.m * lin["up"][1] / tp * (2.0 + ab), "bf16", x.k.elementwise(x.m), s.dense_layers))
    return costs + gated


def balanced_pairs(x: Batch) -> float:
    """(token, expert) pairs one GPU's routed experts take in one layer at perfectly balanced routing."""
    s, lay = x.s, x.layout
    return x.tokens * s.experts_per_token * lay.num_gpus / lay.ep if lay.ep > 1 else x.m * s.experts_per_token


def routed_pairs(x: Batch) -> float:
    """(token, expert) pairs the busiest GPU's routed experts take in one layer: routing as independent draws over
    balanced experts (Poisson)."""
    pairs = balanced_pairs(x)
    return pairs * imbalance(pairs, 1.0, x.layout.ep)


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
    costs = [x.gemm(Op.SHARED_EXPERTS, *lin[n], s.moe_layers, component="shared_experts", row_parallel=n == "shared_down")
             for n in ("shared_gate_up", "shared_down") if n in lin]  # fmt: skip
    costs.append(OpCost(Op.ROUTER, 2 * m * s.hidden * s.num_experts, s.hidden * s.num_experts * 2 + m * s.hidden * activation_bytes(x.gp),
                        "bf16", x.k.figure("gemm_bf16", m), s.moe_layers))  # fmt: skip
    pairs, split = routed_pairs(x), 1 if lay.ep > 1 else lay.tp
    fmt, wb, prec = x.fmt("routed_experts")
    ab, touched = activation_bytes(prec), touched_experts(x)
    nbytes = sum(touched * kk * nn / split * wb + pairs * (kk * ab + nn / split * 2) for kk, nn in s.expert_k_n)
    flops, group = expert_gemm_flops(s, pairs) / split, x.tokens * lay.ep if lay.ep > 1 else m  # group: tokens into the EP group
    figure = (gemm_class(prec, wb, grouped=True), pairs / max(touched, 1e-9))  # the class's, at tokens per touched expert
    eff = x.k.routed_experts(x.gpu, x.phase, moe_format(fmt, prec, x.a.fp8_block_scaled), group, s, lay.tp, lay.ep, prec, flops,
                             nbytes, pairs / balanced_pairs(x), figure)  # fmt: skip
    costs.append(OpCost(Op.ROUTED_EXPERTS, flops, nbytes, prec, eff, s.moe_layers))
    costs.append(x.swiglu(pairs, s.expert_k_n[0][1] / 2 / split, s.moe_layers, "routed_experts"))
    if "shared_gate_up" in lin:
        costs.append(x.swiglu(m, lin["shared_gate_up"][1] / 2 / lay.tp, s.moe_layers, "shared_experts"))
    return costs


def tail_costs(x: Batch) -> list[OpCost]:
    """Norms and residuals of every layer; the LM head and sampling once."""
    s, tp = x.s, x.layout.tp
    head_tokens = x.seqs * x.q_per_seq if x.phase == "decode" else x.seqs  # prefill: the last position of each prompt
    return [
        OpCost(Op.NORMS, 0.0, ELEMENTWISE_VECTORS * x.m * s.hidden * 2, "bf16", x.k.elementwise(x.m), s.num_layers),
        OpCost(
            Op.LM_HEAD,
            2 * head_tokens * s.hidden * s.vocab / tp,
            s.hidden * s.vocab / tp * 2 + 3 * head_tokens * s.vocab * 4,
            "bf16",
            x.k.figure("gemm_bf16", head_tokens),
            1,
        ),
    ]


def layer_costs(x: Batch) -> list[OpCost]:
    """Every operator of one micro-batch's step, in the order they run."""
    return attention_costs(x) + mixer_costs(x) + dense_ffn_costs(x) + moe_costs(x) + tail_costs(x)


def allreduces(s: Shapes) -> int:
    """TP all-reduces of one forward pass: one after each sublayer, the mixer (attention, linear attention, Mamba) and the
    FFN; two a layer in most models, one a block in Nemotron-H, whose blocks carry either."""
    if not s.layers:
        return 2 * s.num_layers
    return sum((layer.mixer != "none") + (layer.ffn != "none") for layer in s.layers)


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
    if lay.tp > 1:  # an all-reduce after each sublayer of the TP group's tokens x hidden (kernels.Kernels.allreduce_s)
        one_s, comm.allreduce_source = k.allreduce_s(x.gpu, lay.tp, x.m * s.hidden)
        comm.allreduce = allreduces(s) * one_s
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
    fp8 = gpu.peak_flops_per_s("fp8") if "fp8" in gpu.peak_tflops else bf16  # no FP8: it runs at BF16's
    peaks = {"bf16": bf16, "fp8": fp8, "fp4": gpu.peak_flops_per_s("fp4") if "fp4" in gpu.peak_tflops else fp8}
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
