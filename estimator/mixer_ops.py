"""Layers that mix tokens through a fixed state instead of attention: Qwen3-Next's gated DeltaNet (``linear``) and
Nemotron-H's Mamba-2 (``mamba``). Their projections are GEMMs of the ``mixer`` component; per token they update a state
of fixed size per sequence, and keep no per-token cache.

Gated DeltaNet (Yang, Kautz and Hatamizadeh 2024, "Gated Delta Networks", arXiv:2412.06464): per value head a state S of
key_dim x value_dim; a token decays it (α), corrects it by the delta rule with its key and value (S k, then a rank-1
update) and reads it with its query (S q): 7 x key_dim x value_dim FLOPs per head (2 for S k, 2 for the outer product,
1 for the decay, 2 for S q). Mamba-2 (Dao and Gu 2024, "Transformers are SSMs", arXiv:2405.21060): per head a state of
head_dim x state; a token decays it, adds dt B x (an outer product) and reads C h: 5 x head_dim x state FLOPs per head.
A causal depthwise convolution (conv_kernel taps) runs over the mixed channels first: 2 x kernel FLOPs per channel.

Decode reads and writes each sequence's state once a step (its bytes: core/shapes.state_values_per_sequence, in the
model's dtype, vLLM's mamba_ssm_cache_dtype "auto"), split over the TP group by heads. Prefill runs the chunked
algorithms (chunks of C tokens: fla's chunk_gated_delta_rule C = 64, Mamba-2's SSD C = 256): per token and head the
state passes in and out (4 x rows x columns of the state) and the intra-chunk products run over the C / 2 earlier tokens
of the chunk on average, scores and weighted values: 2 x (C / 2) x (rows + columns) x 2 = 2 x C x (rows + columns) (the
delta rule's triangular solve is of the same order, folded in). No published efficiency of these kernels was
looked up: the state update borrows GQA decode attention's (a memory-bound stream of per-sequence cache rows), the
chunked prefill FlashAttention-3's (tensor-core products in tiles), each saying so in its source.
"""

from __future__ import annotations

from core.shapes import Shapes
from estimator.batch import Batch, Op, OpCost
from estimator.kv_cache import state_bytes_per_layer

CHUNK = {"linear": 64, "mamba": 256}  # tokens per chunk of the prefill algorithms (fla's gated delta rule, Mamba-2's SSD)
NAMES = {"linear": Op.LINEAR_ATTENTION, "mamba": Op.MAMBA_SCAN}  # the operators, as the step names them
PROJECTIONS = {"linear": ("linear_in_proj", "linear_out_proj"), "mamba": ("mamba_in_proj", "mamba_out_proj")}


def state_layers(s: Shapes) -> dict[str, int]:
    """Layers of each state kind (linear, mamba) present."""
    return {kind: n for kind, n in s.layer_kinds.items() if kind in CHUNK}


def _geometry(s: Shapes, kind: str) -> tuple[int, int, int, int]:
    """(heads, state rows, state columns, convolved channels) of one layer of ``kind``."""
    m = s.mixer
    if kind == "linear":
        return m["value_heads"], m["key_dim"], m["value_dim"], 2 * m["key_heads"] * m["key_dim"] + m["value_heads"] * m["value_dim"]
    return m["heads"], m["head_dim"], m["state"], m["heads"] * m["head_dim"] + 2 * m["groups"] * m["state"]


def decode_flops_per_token(s: Shapes, kind: str) -> float:
    """FLOPs of one token's state update in one layer (module docstring): the recurrence and the convolution."""
    heads, rows, cols, channels = _geometry(s, kind)
    per_head = 7 if kind == "linear" else 5
    return heads * per_head * rows * cols + 2 * s.mixer["conv_kernel"] * channels


def prefill_flops_per_token(s: Shapes, kind: str) -> float:
    """FLOPs per token of the chunked algorithm in one layer (module docstring)."""
    heads, rows, cols, channels = _geometry(s, kind)
    return heads * (4 * rows * cols + 2 * CHUNK[kind] * (rows + cols)) + 2 * s.mixer["conv_kernel"] * channels


def mixer_costs(x: Batch) -> list[OpCost]:
    """Projections and state work of every linear-attention and Mamba-2 layer of one micro-batch."""
    s, tp, costs = x.s, x.layout.tp, []
    state = state_bytes_per_layer(s, 1)  # one sequence's state in one layer
    for kind, n in state_layers(s).items():
        costs += [x.gemm(Op.MIXER_PROJECTIONS, *s.linears[p], n, component="mixer", row_parallel=p.endswith("out_proj"))
                  for p in PROJECTIONS[kind]]  # fmt: skip
        if x.phase == "decode":  # each sequence's state read and written once a step, its heads split over the TP group
            eff = x.borrowed("attention_decode_gqa", "no published figure of the state-update kernels looked up")
            costs.append(OpCost(NAMES[kind], x.m * decode_flops_per_token(s, kind) / tp, 2 * x.seqs * state, "bf16", eff, n))
        else:  # chunked: the state passes in and out once per sequence, the tokens' queries, keys and values stream
            eff = x.borrowed("attention_prefill", "no published figure of the chunked kernels looked up")
            streamed = x.m * s.linears[PROJECTIONS[kind][0]][1] / tp * 2.0
            costs.append(OpCost(NAMES[kind], x.m * prefill_flops_per_token(s, kind) / tp, 2 * x.seqs * state + streamed, "bf16", eff, n))
    return costs
