"""Work done by a prefill or decode phase: model FLOPs and bytes moved, from the model formulas."""

from __future__ import annotations

from dataclasses import dataclass

from core.models import (
    ModelSpec,
    flops_per_token,
    kv_cache_bytes_per_token,
    weight_bytes_read_per_step,
)


@dataclass(frozen=True)
class Work:
    """Model FLOPs and bytes moved by one measured configuration (whole run, all GPUs)."""

    flops: float
    bytes: float


def prefill_work(spec: ModelSpec, batch_size: int, input_len: int, waves: int = 1, kv_dtype: str = "bf16") -> Work:
    """Prefilling ``batch_size`` prompts of ``input_len`` tokens, ``waves`` times.

    FLOPs: every prompt token at its mean causal context (input_len / 2).
    Bytes: the weights once per wave plus the KV cache written.
    """
    tokens = batch_size * input_len * waves
    flops = tokens * flops_per_token(spec, input_len / 2)
    moved = waves * weight_bytes_read_per_step(spec, batch_size * input_len) + tokens * kv_cache_bytes_per_token(spec, kv_dtype)
    return Work(flops, moved)


def decode_step_work(spec: ModelSpec, batch_size: int, context_len: float, kv_dtype: str = "bf16") -> Work:
    """One decode step of ``batch_size`` sequences at context ``context_len``.

    FLOPs = B × flops_per_token(context); bytes = weights read at batch B + B × KV bytes per token × context.
    """
    flops = batch_size * flops_per_token(spec, context_len)
    moved = weight_bytes_read_per_step(spec, batch_size) + batch_size * kv_cache_bytes_per_token(spec, kv_dtype) * context_len
    return Work(flops, moved)


def decode_work(
    spec: ModelSpec, batch_size: int, input_len: int, output_len: int, waves: int = 1, kv_dtype: str = "bf16"
) -> Work:
    """Decoding ``output_len − 1`` steps after the first token for a batch, ``waves`` times,
    each step at the mean context input_len + output_len / 2.
    """
    steps = max(output_len - 1, 0) * waves
    step = decode_step_work(spec, batch_size, input_len + output_len / 2, kv_dtype)
    return Work(steps * step.flops, steps * step.bytes)


def request_work(spec: ModelSpec, batch_size: int, input_len: int, output_len: int, waves: float = 1) -> Work:
    """Whole requests: prefill plus decode of ``batch_size`` sequences, ``waves`` times."""
    pre = prefill_work(spec, batch_size, input_len)
    dec = decode_work(spec, batch_size, input_len, output_len)
    return Work((pre.flops + dec.flops) * waves, (pre.bytes + dec.bytes) * waves)
