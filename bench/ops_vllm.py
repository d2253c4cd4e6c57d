"""vLLM's own CPU kernels, timed at a model's shapes: what the engine runs in each decode and prefill step.

Where vLLM runs on the CPU, the operator benchmarks time the kernels its CPU worker calls, set up
the way it sets them up, beside the plain torch ones: a linear layer through vLLM's own CPU GEMM
dispatch (oneDNN with prepacked weights, or the small-weight packed kernel), paged attention
(``cpu_attention_with_kv_cache`` with a block table, plus the KV-cache write of the new tokens),
the sampler (logits to fp32, ``fused_gumbel_argmax``), and one layer's elementwise work (two
residual adds with RMS norm as vLLM's native implementation computes it, SiLU-and-mul, rotary
embedding). These are the operator times the CPU step model sums.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

BLOCK = 128  # vLLM's CPU KV-cache block size


def available(device: str) -> bool:
    """True where vLLM's CPU kernels can be called in this process."""
    if device != "cpu":
        return False
    try:
        import torch
        from vllm import _custom_ops as ops

        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            torch._C._cpu._init_amx()  # the kernels use AMX tiles only after the process asks for them, as vLLM's worker does
        return bool(ops._supports_onednn) and hasattr(torch.ops._C, "cpu_attention_with_kv_cache")
    except Exception:  # vLLM absent or built without CPU kernels: the torch cases still run
        return False


def engine_threads() -> int:
    """The OpenMP threads vLLM's CPU worker computes with here, by vLLM's own binding rule.

    On x86 vLLM binds one logical CPU per physical core of the first NUMA node and reserves one for
    its scheduler process: on a 2-core machine the engine computes on one core. Kernels timed with
    more threads than that would be faster than the engine can run them.
    """
    import os

    try:
        from types import SimpleNamespace

        from vllm.utils.ompmultiprocessing import OMPProcessManager

        par = SimpleNamespace(local_world_size=1, data_parallel_rank_local=None, _api_process_count=1)
        lists = OMPProcessManager(SimpleNamespace(parallel_config=par, kv_transfer_config=None)).cpu_lists
        if lists and lists[0]:
            return len(lists[0])
    except Exception:  # another vLLM version: the process's own CPUs, less the scheduler's one
        pass
    return max(1, len(os.sched_getaffinity(0)) - 1)


def _tdt(dtype: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]


def linear_layer(weight: Any) -> Any:
    """A module holding an N×K ``weight``, its ``cpu_linear`` chosen by vLLM's CPU GEMM dispatch (prepacked)."""
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    dispatch_cpu_unquantized_gemm(layer, remove_weight=False)
    return layer


def gemm(m: int, k: int, n: int, dtype: str, copies: int) -> Callable[[], Callable[[], object]]:
    """A K×N linear layer dispatched as vLLM's CPU worker dispatches it; weights cycled over ``copies``."""

    def build() -> Callable[[], object]:
        import torch

        w = (torch.randn(n, k) * 0.1).to(_tdt(dtype))
        layers = [linear_layer(w.clone()) for _ in range(copies)]  # distinct copies of one draw (a draw is the slow part)
        x = (torch.randn(m, k) * 0.1).to(_tdt(dtype))
        nxt = itertools.cycle(layers).__next__

        def call() -> object:
            layer = nxt()
            return layer.cpu_linear(x, layer.weight, None)

        return call

    return build


def attention(
    batch: int, heads: int, kv_heads: int, head_dim: int, q_len: int, context: int, dtype: str, copies: int = 1
) -> Callable[[], Callable[[], object]]:
    """Paged attention of ``batch`` sequences, ``q_len`` new tokens each over ``context`` tokens (causal when q_len > 1), KV write included.

    The KV cache is cycled over ``copies`` distinct caches, as GEMM weights are: a decode step reads every layer's
    cache once, from memory, between the weights of the layers; one cache read over and over stays hot in the
    CPU's caches and came out 1.5-2.3x as fast (SmolLM2 shapes, one core). A prefill attends to keys and values its
    own projections have just written, so it runs on one cache (``copies=1``).
    """

    def build() -> Callable[[], object]:
        import torch
        from vllm import _custom_ops as ops
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        tdt = _tdt(dtype)
        isa = _get_attn_isa(tdt, BLOCK, head_dim)
        blocks = -(-context // BLOCK)
        cache = (torch.randn(batch * blocks, kv_heads, 2 * BLOCK, head_dim) * 0.1).to(tdt)
        caches = [c.chunk(2, dim=2) for c in (cache, *(cache.clone() for _ in range(copies - 1)))]
        table = torch.arange(batch * blocks, dtype=torch.int32).view(batch, blocks)
        seq_lens = torch.full((batch,), context, dtype=torch.int32)
        starts = torch.arange(0, (batch + 1) * q_len, q_len, dtype=torch.int32)
        q = (torch.randn(batch * q_len, heads, head_dim) * 0.1).to(tdt)
        k_new = (torch.randn(batch * q_len, kv_heads, head_dim) * 0.1).to(tdt)
        v_new = k_new.clone()
        slots = (table[:, :1].long() * BLOCK + context - q_len + torch.arange(q_len)).reshape(-1)  # the last q_len slots of each sequence
        out = torch.empty_like(q)
        causal = q_len > 1
        meta = ops.cpu_attn_get_scheduler_metadata(
            num_reqs=batch, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, seq_lens=seq_lens, dtype=tdt,
            query_start_loc=starts, causal=causal, sliding_window_size=-1, isa=isa, enable_kv_split=False,
        )  # fmt: skip

        nxt = itertools.cycle(caches).__next__

        def call() -> object:
            key_cache, value_cache = nxt()
            ops.cpu_attn_reshape_and_cache(k_new, v_new, key_cache, value_cache, slots, isa)
            ops.cpu_attention_with_kv_cache(
                query=q, key_cache=key_cache, value_cache=value_cache, output=out, query_start_loc=starts, seq_lens=seq_lens,
                scale=head_dim**-0.5, causal=causal, alibi_slopes=None, sliding_window=-1, block_table=table, softcap=0.0,
                scheduler_metadata=meta, s_aux=None,
            )  # fmt: skip
            return out

        return call

    return build


def sampling(batch: int, vocab: int, dtype: str) -> Callable[[], Callable[[], object]]:
    """vLLM's CPU sampler at temperature 1: the logits made fp32, then its fused Gumbel-max draw."""

    def build() -> Callable[[], object]:
        import torch

        logits = (torch.randn(batch, vocab) * 0.1).to(_tdt(dtype))
        seeds = torch.randint(0, 2**31, (batch,), dtype=torch.long)
        return lambda: torch.ops._C.fused_gumbel_argmax(logits.to(torch.float32), seeds)

    return build


def layer_elementwise(
    tokens: int, hidden: int, inter: int, heads: int, kv_heads: int, head_dim: int, dtype: str
) -> Callable[[], Callable[[], object]]:
    """One decoder layer's elementwise work: residual add + RMS norm twice, SiLU-and-mul, rotary embedding of q and k."""

    def build() -> Callable[[], object]:
        import torch
        import torch.nn.functional as F
        from vllm import _custom_ops as ops

        tdt = _tdt(dtype)
        x = (torch.randn(tokens, hidden) * 0.1).to(tdt)
        residual = x.clone()
        w = torch.ones(hidden, dtype=tdt)
        gate_up = (torch.randn(tokens, 2 * inter) * 0.1).to(tdt)
        q = (torch.randn(tokens, heads * head_dim) * 0.1).to(tdt)
        k = (torch.randn(tokens, kv_heads * head_dim) * 0.1).to(tdt)
        positions = torch.arange(tokens, dtype=torch.long) % 4096
        inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(4096, dtype=torch.float32), inv)
        cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(tdt)

        def add_norm() -> object:  # vLLM's native fused_add_rms_norm: in fp32, back to the model's dtype
            s = x.to(torch.float32) + residual.to(torch.float32)
            r = s.to(tdt)
            y = (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6)).to(tdt) * w
            return y, r

        def call() -> object:
            add_norm()
            ops.rotary_embedding(positions, q, k, head_dim, cos_sin, True)
            add_norm()
            d = gate_up.shape[-1] // 2
            return F.silu(gate_up[..., :d]) * gate_up[..., d:]

        return call

    return build
