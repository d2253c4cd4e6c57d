"""The vLLM-kernel operator cases of a dense model's shapes (``fleetcal bench --mode ops`` on a CPU): the axes the
CPU step model reads its curves along."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.ops_vllm import attention, engine_threads, gemm, layer_elementwise, sampling
from core.dtypes import BYTES_PER_DTYPE

GEMM_M = (1, 4, 16, 64, 256, 1024, 4096)
BATCHES = (1, 8, 32, 128, 512)
CONTEXTS = (128, 512, 2048)
MAX_KV_TOKENS = 1 << 18  # batch × context of the largest decode-attention case
TOKENS = (1, 8, 32, 128, 512, 2048, 8192)


def case_specs(s: Any, dtype: str, copies: Callable[[float], int]) -> list[dict[str, Any]]:
    """The vLLM-kernel cases of a dense (GQA) model's shapes ``s`` in ``dtype``: keyword arguments of ``bench.ops.Case``.

    Each axis is swept so the CPU step model can read any step off it: GEMM rows M, decode attention over
    batch at fixed context and context at fixed batch, prefill attention over prompt length, sampling over
    batch, elementwise work over tokens.
    """
    if s.mla or s.expert_k_n:
        return []  # vLLM runs MLA and MoE on GPUs; its CPU kernels here are the dense ones
    b = BYTES_PER_DTYPE[dtype]
    out = _gemm_cases(s, dtype, b, copies) + _attention_cases(s, dtype, b, copies) + _sampling_and_elementwise_cases(s, dtype, b)
    threads = engine_threads()
    for spec in out:
        spec["threads"] = threads
    return out


def _gemm_cases(s: Any, dtype: str, b: float, copies: Callable[[float], int]) -> list[dict[str, Any]]:
    return [dict(operator="gemm", shape={"layer": lname, "m": m, "k": k, "n": n}, dtype=dtype, flops=2.0 * m * k * n,
                 nbytes=k * n * b + m * (k + n) * b, build=gemm(m, k, n, dtype, copies(k * n * b)), impl="vllm cpu_linear")
            for lname, (k, n) in s.linears.items() for m in GEMM_M]  # fmt: skip


def _attention_cases(s: Any, dtype: str, b: float, copies: Callable[[float], int]) -> list[dict[str, Any]]:
    kv_tok = 2 * s.kv_heads * s.head_dim * b  # K and V of one token, one layer
    heads = {"layout": "GQA", "heads": s.heads, "kv_heads": s.kv_heads, "qk_dim": s.head_dim, "v_dim": s.head_dim}
    out = [dict(operator="attention_decode", shape={"layout": "GQA", "batch": batch, "context": ctx, **heads}, dtype=dtype,
                flops=4.0 * batch * s.heads * ctx * s.head_dim, nbytes=batch * ctx * kv_tok + 2 * batch * s.heads * s.head_dim * b,
                build=attention(batch, s.heads, s.kv_heads, s.head_dim, 1, ctx, dtype, copies(batch * ctx * kv_tok)),
                impl="vllm cpu_attention_with_kv_cache, KV cycled")
           for batch in BATCHES for ctx in CONTEXTS if batch * ctx <= MAX_KV_TOKENS]  # fmt: skip
    return out + [dict(operator="attention_prefill", shape={"layout": "GQA", "context": ctx, **heads}, dtype=dtype,
                       flops=2.0 * s.heads * ctx * ctx * s.head_dim, nbytes=ctx * (kv_tok + 2 * s.heads * s.head_dim * b),
                       build=attention(1, s.heads, s.kv_heads, s.head_dim, ctx, ctx, dtype), impl="vllm cpu_attention_with_kv_cache")
                  for ctx in CONTEXTS]  # fmt: skip


def _sampling_and_elementwise_cases(s: Any, dtype: str, b: float) -> list[dict[str, Any]]:
    out = [dict(operator="sampling", shape={"batch": batch, "vocab": s.vocab}, dtype=dtype, flops=5.0 * batch * s.vocab,
                nbytes=batch * s.vocab * (b + 4), build=sampling(batch, s.vocab, dtype), impl="vllm fused_gumbel_argmax")
           for batch in BATCHES]  # fmt: skip
    inter, q_kv = s.linears["down"][0], (s.heads + s.kv_heads) * s.head_dim
    return out + [dict(operator="layer_elementwise", shape={"tokens": t, "hidden": s.hidden, "intermediate": inter}, dtype=dtype,
                       flops=t * (16.0 * s.hidden + 4.0 * inter + 3.0 * q_kv), nbytes=t * b * (8 * s.hidden + 3 * inter + 2 * q_kv),
                       build=layer_elementwise(t, s.hidden, inter, s.heads, s.kv_heads, s.head_dim, dtype), impl="vllm native elementwise")
                  for t in TOKENS]  # fmt: skip
