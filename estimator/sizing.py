"""Fleet sizing with the per-operator serving model: decode and prefill instances sized apart.

Decode: the largest batch per GPU whose per-user speed meets the target and whose KV fits beside
the weights, in whole instances of the decode layout. Prefill: uncached prompt tokens at the prefill
step's rate, in whole instances of the prefill layout. For the daily mean and for the peak, labelled.

Default layouts: an MoE model with MLA (DeepSeek-V3) is laid out as DeepSeek published its own
(decode: 18 nodes, EP144, data-parallel attention; prefill: 4 nodes, EP32, data-parallel
attention, steps of 16K tokens per GPU; 32 redundant experts each; MTP with one module); a dense model uses the smallest
tensor-parallel group that holds its weights, one instance per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from core.deployments import reference_deployment
from core.hardware import Device
from estimator.arch import Arch, Layout, gemm_precision
from estimator.kernels import Kernels, with_value
from estimator.memory import engine_step_tokens, largest_batch, weight_bytes_per_gpu
from estimator.serving import Step, step
from estimator.traffic import Traffic


def default_layouts(a: Arch, gpu: Device, kernels: Kernels) -> tuple[Layout, Layout]:
    """(decode, prefill) layouts: DeepSeek's published one for MLA MoE models, else the smallest TP group that holds the weights."""
    if a.shapes.num_experts and a.shapes.mla:
        # prefill steps of 16K tokens per GPU: deepseek-ai/profile-data README, "in line with ... actual online deployment"
        return (
            Layout(144, ep=144, dp_attention=True, redundant_experts=32),
            Layout(32, ep=32, dp_attention=True, redundant_experts=32, step_tokens=16384),
        )
    tp = 1
    while (
        weight_bytes_per_gpu(a, Layout(tp, tp=tp, ep=tp if a.shapes.num_experts else 1))["total"]
        > 0.9 * gpu.memory_bytes - kernels.reserve_bytes
    ):
        tp *= 2
        if tp > 64:
            break
    lay = Layout(tp, tp=tp, ep=tp if a.shapes.num_experts else 1)
    return lay, lay


UNREACHABLE = "TTFT target unreachable"  # the smallest step (one prompt's uncached tokens) misses it


def prefill_tokens_for_ttft(a: Arch, gpu: Device, layout: Layout, k: Kernels, *, prompt_len: float, cache_hit_rate: float, kv_dtype: str,
                            ttft_ms: float, cap: int = 0) -> tuple[int, str]:  # fmt: skip
    """Largest prefill tokens per GPU per step, up to the layout's (else ``cap``), whose step meets the ``ttft_ms``
    target (0: none) for prompts of ``prompt_len`` tokens, ``cache_hit_rate`` of them cached; why it stops there.
    ``cap`` 0: the engine's token budget on this GPU (core/data/engines/).

    A prompt's first token waits at least for the step that carries its uncached tokens (queueing and the KV
    transfer to decode are not counted), so a step carries at least one prompt's uncached tokens: spreading a
    prompt over more steps only adds time. A prompt longer than the cap takes ceil(uncached / cap) steps.
    """
    cap = layout.step_tokens or cap or engine_step_tokens(gpu)
    if not ttft_ms:
        return cap, "tokens per step"
    prompt = max(math.ceil(prompt_len * (1 - cache_hit_rate)), 1)

    def first_token_ms(tokens: int) -> float:
        st = step(
            a, gpu, layout, k, "prefill", tokens_per_gpu=tokens, prompt_len=prompt_len, cached_fraction=cache_hit_rate, kv_dtype=kv_dtype
        )
        return st.seconds * 1000 * math.ceil(prompt / tokens)

    lo = min(prompt, cap)
    if first_token_ms(lo) > ttft_ms:
        return lo, UNREACHABLE
    if first_token_ms(cap) <= ttft_ms:
        return cap, "tokens per step"
    hi = cap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if first_token_ms(mid) <= ttft_ms else (lo, mid)
    return lo, "TTFT target"


@dataclass(frozen=True)
class Sizing:
    gpus: int
    decode_gpus: int
    prefill_gpus: int
    decode_batch_per_gpu: int
    decode_step_ms: float
    decode_tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    limited_by: str
    prefill_tokens_per_s_per_gpu: float
    prefill_step_ms: float
    prefill_tokens_per_step: int  # per GPU
    prefill_limited_by: str
    mfu: float
    decode_breakdown_ms: dict[str, float]
    prefill_breakdown_ms: dict[str, float]
    feasible: bool
    note: str
    steps: tuple[Step, Step] | None = None  # the decode and the prefill step, with each operator's bound and source


def size_fleet(a: Arch, gpu: Device, kernels: Kernels, traffic: Traffic, scale: float = 1.0, layouts: tuple[Layout, Layout] | None = None,
               whole_instances: bool = False, mtp_tokens: int = 1) -> Sizing:  # fmt: skip
    """GPUs to serve ``traffic`` at its targets, its daily mean times ``scale`` (its peak_to_average: the peak).

    ``whole_instances``: round each phase up to whole instances (what must be provisioned); otherwise up to
    whole GPUs (the capacity a daily mean needs, comparable with an average node count). ``mtp_tokens``: tokens
    drafted per decode step by the checkpoint's multi-token-prediction modules, where it has any.
    """
    output_tokens_per_s = traffic.output_tokens_per_s * scale
    input_tokens_per_s = output_tokens_per_s * traffic.input_tokens_per_output_token
    dec_l, pre_l = layouts or default_layouts(a, gpu, kernels)
    mtp = mtp_tokens if a.mtp_modules else 0
    context, kv_dtype = traffic.decode_context_len, traffic.kv_dtype
    b, limited = largest_batch(a, gpu, dec_l, kernels, context=context, tokens_per_user=traffic.tokens_per_s_per_user, mtp_tokens=mtp,
                               kv_dtype=kv_dtype, headroom=traffic.memory_headroom)  # fmt: skip
    feasible = b >= 1
    b = max(b, 1)
    d = step(a, gpu, dec_l, kernels, "decode", batch_per_gpu=b, context=context, mtp_tokens=mtp, kv_dtype=kv_dtype)
    per_gpu = d.tokens / d.seconds
    unit_d, unit_p = (dec_l.num_gpus, pre_l.num_gpus) if whole_instances else (1, 1)
    decode_gpus = math.ceil(output_tokens_per_s / (per_gpu * unit_d) - 1e-9) * unit_d
    uncached = input_tokens_per_s * (1 - traffic.cache_hit_rate)
    prompt, hits = traffic.prompt_len, traffic.cache_hit_rate
    p_tokens, p_limited = prefill_tokens_for_ttft(a, gpu, pre_l, kernels, prompt_len=prompt, cache_hit_rate=hits, kv_dtype=kv_dtype,
                                                  ttft_ms=traffic.ttft_ms)  # fmt: skip
    feasible = feasible and p_limited != UNREACHABLE
    p = step(a, gpu, pre_l, kernels, "prefill", tokens_per_gpu=p_tokens, prompt_len=prompt, cached_fraction=hits, kv_dtype=kv_dtype)
    pre_rate = p.tokens / p.seconds
    prefill_gpus = math.ceil(uncached / (pre_rate * unit_p) - 1e-9) * unit_p if uncached > 0 else 0
    total = decode_gpus + prefill_gpus
    peak = gpu.peak_flops_per_s(gemm_precision(gpu, a.weight_dtype))
    executed = output_tokens_per_s * d.flops / d.tokens + uncached * p.flops / p.tokens
    why = f"{p_limited}{f', {traffic.ttft_ms:g} ms' if traffic.ttft_ms else ''}"
    note = _note(a, gpu, dec_l, pre_l, p_tokens, why, kv_dtype, mtp)
    mfu = executed / (total * peak) if total else 0.0
    return Sizing(total, decode_gpus, prefill_gpus, b, d.seconds * 1000, per_gpu, d.tokens / b / d.seconds, limited, pre_rate,
                  p.seconds * 1000, p_tokens, p_limited, mfu, d.breakdown_ms, p.breakdown_ms, feasible, note, (d, p))  # fmt: skip


def _note(a: Arch, gpu: Device, dec_l: Layout, pre_l: Layout, p_tokens: int, p_limited: str, kv_dtype: str, mtp: int) -> str:
    """How a sizing was laid out, in words."""
    return (
        f"decode {dec_l.num_gpus}-GPU instances "
        f"(EP{dec_l.ep}{', DP attention' if dec_l.dp_attention else ''}{f', TP{dec_l.tp}' if dec_l.tp > 1 else ''}), "
        f"prefill {pre_l.num_gpus}-GPU instances, {p_tokens:,} tokens per GPU per step ({p_limited}); "
        f"{gemm_precision(gpu, a.weight_dtype)} GEMMs, {kv_dtype} KV, MTP {mtp}"
    )


# Traffic field -> its range, the rest held at their central values; the kernels' ranges come from data/kernels.toml
SERVICE_RANGES = {"tokens_per_s_per_user": (15.0, 30.0), "cache_hit_rate": (0.3, 0.7),
                  "peak_to_average": (1.0, reference_deployment().peak_to_average)}  # fmt: skip


def sensitivity(a: Arch, gpu: Device, kernels: Kernels, traffic: Traffic) -> list[dict[str, Any]]:
    """The daily-mean fleet at each end of every assumption's range, the rest at their central values: what to measure first."""
    base = size_fleet(a, gpu, kernels, traffic).gpus
    rows = []
    for name, (lo, hi) in sorted(kernels.ranges.items()):
        ends = [size_fleet(a, gpu, with_value(kernels, name, v), traffic).gpus for v in (lo, hi)]
        rows.append({"assumption": name, "low": lo, "high": hi, "gpus_at_low": ends[0], "gpus_at_high": ends[1], "central_gpus": base})
    for name, (lo, hi) in SERVICE_RANGES.items():
        if name == "peak_to_average":  # the daily mean scaled to that peak
            ends = [size_fleet(a, gpu, kernels, traffic, scale=v).gpus for v in (lo, hi)]
        else:
            ends = [size_fleet(a, gpu, kernels, replace(traffic, **{name: v})).gpus for v in (lo, hi)]
        rows.append({"assumption": name, "low": lo, "high": hi, "gpus_at_low": ends[0], "gpus_at_high": ends[1], "central_gpus": base})
    for r in rows:
        r["swing"] = abs(r["gpus_at_high"] - r["gpus_at_low"])
    return sorted(rows, key=lambda r: (-r["swing"], r["assumption"]))
