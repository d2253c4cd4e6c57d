"""Whole requests on the serving model, and the search behind ``fleetcal plan``: the fewest GPUs of each kind that
serve a request rate at given prompt and reply lengths within TTFT and TPOT limits.

Aggregated serving (prefill and decode on the same GPUs, chunked prefill, as vLLM runs it): in steady state B
sequences per GPU decode while the prompts of the requests replacing the finished ones are prefilled in the same
steps. Each step advances d output tokens in t_d (the decode step) and must carry x = d × u / L_out uncached prompt
tokens (u) to keep B sequences running; those cost x / r_p at the prefill rate r_p of a step of the engine's token
budget (the weights are read once, by the decode step). So one step lasts t = t_d + x / r_p; output tokens/s per
GPU = d / t, TPOT = t × B / d, and a new prompt waits ceil(u / room) steps of t_d + min(u, room) / r_p, room being
the token budget less the decode tokens (queueing not counted).

Disaggregated serving: a prefill pool at the prefill step a TTFT target allows, plus the KV transfer over the
network, and a decode pool at the largest batch meeting TPOT, sized apart and each in whole instances.

Per GPU as the serving model counts it: a tensor-parallel group of n GPUs holds n × B sequences and carries
n × the per-GPU tokens; with data-parallel attention each GPU is its own engine. Units: seconds, tokens, per GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.engines import DEFAULT_ENGINE, engine_rules
from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels, with_value
from estimator.memory import kv_room_sequences
from estimator.serving import step
from estimator.sizing import UNREACHABLE, prefill_tokens_for_ttft


def engine_budget(gpu: Device, engine: str = DEFAULT_ENGINE) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) of one engine by default on ``gpu`` (core/data/engines/)."""
    tier = engine_rules(engine).budget(gpu.name, gpu.memory_bytes)
    return tier.max_num_batched_tokens, tier.max_num_seqs


@dataclass(frozen=True)
class Workload:
    """Requests as a user plans them: lengths, rate (requests/s), latency limits, cache hits, KV precision."""

    input_len: int
    output_len: int
    request_rate: float
    ttft_ms: float
    tpot_ms: float
    cached_fraction: float = 0.0
    kv_dtype: str = "bf16"
    mtp_tokens: int = 0

    @property
    def uncached_len(self) -> float:
        return self.input_len * (1 - self.cached_fraction)

    @property
    def context(self) -> float:
        """Mean KV length of a decoding sequence."""
        return self.input_len + self.output_len / 2


@dataclass(frozen=True)
class Point:
    """Whole-request rates of one GPU at one batch."""

    batch_per_gpu: float
    output_tokens_per_s_per_gpu: float
    total_tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    ttft_ms: float
    tpot_ms: float
    fits: bool  # the step's prompt tokens fit the engine's token budget


def aggregated_rates(decode_s: float, decode_tokens: float, batch: float, prefill_tokens_per_s: float, w: Workload,
                     budget_per_gpu: float, prompt_per_gpu: float) -> Point:  # fmt: skip
    """Steady-state chunked prefill (module docstring) from one decode step (``decode_s`` seconds advancing
    ``decode_tokens``) and a prefill rate; ``prompt_per_gpu``: one prompt's uncached tokens as one GPU carries them."""
    x = decode_tokens * w.uncached_len / w.output_len  # per GPU: d / L_out requests finish a step, each replaced by u tokens
    t = decode_s + x / prefill_tokens_per_s
    room = budget_per_gpu - batch * (1 + w.mtp_tokens)
    steps = math.ceil(prompt_per_gpu / room) if room > 0 else math.inf
    ttft = steps * (decode_s + min(prompt_per_gpu, max(room, 0)) / prefill_tokens_per_s)
    out = decode_tokens / t
    return Point(
        batch,
        out,
        out * (1 + w.input_len / w.output_len),
        decode_tokens / batch / t,
        ttft * 1000,
        t * batch / decode_tokens * 1000,
        x <= room,
    )


def disaggregated_rates(decode_s: float, decode_tokens: float, batch: float, prefill_tokens_per_s: float, prefill_step_s: float,
                        prefill_step_tokens: float, prompt_per_gpu: float, kv_transfer_s: float, w: Workload) -> Point:  # fmt: skip
    """Prefill and decode pools in the ratio the requests need: a request takes u / r_p prefill GPU-seconds and
    L_out / r_d decode GPU-seconds, so both pools together give L_out / (u / r_p + L_out / r_d) output tokens/s per GPU;
    TTFT = the prefill steps carrying the prompt plus the KV transfer, TPOT = the decode step per token of a user."""
    r_d = decode_tokens / decode_s
    out = w.output_len / (w.uncached_len / prefill_tokens_per_s + w.output_len / r_d)
    ttft = prefill_step_s * math.ceil(prompt_per_gpu / prefill_step_tokens) + kv_transfer_s
    return Point(batch, out, out * (1 + w.input_len / w.output_len), decode_tokens / batch / decode_s, ttft * 1000,
                 decode_s * batch / decode_tokens * 1000, True)  # fmt: skip


def kv_transfer_s(a: Arch, layout: Layout, k: Kernels, w: Workload) -> float:
    """Seconds to send one prompt's KV from a prefill GPU to decode over the network (DeepEP's RDMA bandwidth per GPU)."""
    return a.shapes.kv_bytes_per_token(w.kv_dtype) * w.input_len / layout.tp / (k.normal_internode_gb_per_s * 1e9)


def aggregated_point(a: Arch, gpu: Device, layout: Layout, k: Kernels, w: Workload, batch: float) -> Point:
    """Whole requests at ``batch`` sequences per GPU, prefill and decode sharing the GPUs."""
    budget = engine_budget(gpu)[0] / layout.tp
    d = step(a, gpu, layout, k, "decode", batch_per_gpu=batch, context=w.context, mtp_tokens=w.mtp_tokens, kv_dtype=w.kv_dtype)
    p = step(
        a, gpu, layout, k, "prefill", tokens_per_gpu=budget, prompt_len=w.input_len, cached_fraction=w.cached_fraction, kv_dtype=w.kv_dtype
    )
    return aggregated_rates(d.seconds, d.tokens, batch, p.tokens / p.seconds, w, budget, w.uncached_len / layout.tp)


def max_batch(a: Arch, gpu: Device, layout: Layout, k: Kernels, w: Workload) -> int:
    """Sequences per GPU the KV room holds at a request's full length (vLLM's rule), at most the engine's max_num_seqs."""
    room = kv_room_sequences(a, gpu, layout, k, w.input_len + w.output_len, w.kv_dtype, mtp=a.mtp_served(w.mtp_tokens))
    return min(room, engine_budget(gpu)[1] // layout.tp or 1)


def largest(ok: Any, hi: int) -> int:
    """The largest b in 1..hi with ok(b), ok taken as true up to some b and false after; 0 if ok(1) is false."""
    if hi < 1 or not ok(1):
        return 0
    if ok(hi):
        return hi
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


class Rejected(str):
    """Why a layout serves nothing, and how near it came: the largest of TTFT / limit and TPOT / limit at batch 1."""

    score: float

    def __new__(cls, text: str, score: float = math.inf) -> Rejected:
        r = super().__new__(cls, text)
        r.score = score
        return r


@dataclass(frozen=True)
class Option:
    """One way to serve the workload on one GPU type: mode, layouts, batch, GPUs at the rate, and its rates."""

    gpu: str
    mode: str
    weight_dtype: str
    layout: str
    gpus: int
    pools: tuple[tuple[float, int], ...]  # (requests/s per instance, GPUs per instance): one pool, or prefill and decode
    point: Point
    limited_by: str


def gpus_at(pools: tuple[tuple[float, int], ...], rate: float) -> int:
    """GPUs of whole instances of every pool serving ``rate`` requests/s."""
    return sum(_whole(rate / cap * n, n) for cap, n in pools)


def describe(layout: Layout) -> str:
    parts = [f"TP{layout.tp}"] if layout.tp > 1 or layout.ep == 1 else []
    parts += [f"EP{layout.ep}"] if layout.ep > 1 else []
    parts += ["DP-attn"] if layout.dp_attention else []
    return f"{layout.num_gpus}x " + " ".join(parts)


def _whole(need: float, n: int) -> int:
    return max(math.ceil(need / n - 1e-9), 1) * n if need > 0 else 0


def aggregated_option(a: Arch, gpu: Device, layout: Layout, k: Kernels, w: Workload, batch: float | None = None) -> Option | str:
    """The largest batch meeting TPOT and TTFT (or ``batch``) on ``layout``, and the GPUs the rate needs; a reason if none."""
    limit = max_batch(a, gpu, layout, k, w)
    if limit < 1:
        return "no KV room for one request"

    def ok(b: int) -> bool:
        p = aggregated_point(a, gpu, layout, k, w, b)
        return p.fits and p.tpot_ms <= w.tpot_ms and p.ttft_ms <= w.ttft_ms

    b = batch or largest(ok, limit)
    if b < 1:
        p1 = aggregated_point(a, gpu, layout, k, w, 1)
        return Rejected(
            f"batch 1 gives TTFT {p1.ttft_ms:,.0f} ms, TPOT {p1.tpot_ms:,.1f} ms", max(p1.ttft_ms / w.ttft_ms, p1.tpot_ms / w.tpot_ms)
        )
    p = aggregated_point(a, gpu, layout, k, w, b)
    why = "KV room" if b == limit else "TPOT/TTFT"
    pools = ((p.output_tokens_per_s_per_gpu * layout.num_gpus / w.output_len, layout.num_gpus),)
    return Option(gpu.name, "aggregated", a.weight_dtype, describe(layout), gpus_at(pools, w.request_rate), pools, p, why)


def _decode(a: Arch, gpu: Device, dec: Layout, k: Kernels, w: Workload, b: float) -> Any:
    return step(a, gpu, dec, k, "decode", batch_per_gpu=b, context=w.context, mtp_tokens=w.mtp_tokens, kv_dtype=w.kv_dtype)


def disaggregated_point(a: Arch, gpu: Device, pre: Layout, dec: Layout, k: Kernels, w: Workload, batch: float,
                        prefill_tokens: float) -> tuple[Point, tuple[tuple[float, int], ...]]:  # fmt: skip
    """Whole requests on a prefill pool running steps of ``prefill_tokens`` per GPU and a decode pool at ``batch``
    (disaggregated_rates), and the two pools' (requests/s per instance, GPUs per instance)."""
    d = _decode(a, gpu, dec, k, w, batch)
    p = step(
        a,
        gpu,
        pre,
        k,
        "prefill",
        tokens_per_gpu=prefill_tokens,
        prompt_len=w.input_len,
        cached_fraction=w.cached_fraction,
        kv_dtype=w.kv_dtype,
    )
    pt = disaggregated_rates(d.seconds, d.tokens, batch, p.tokens / p.seconds, p.seconds, prefill_tokens, w.uncached_len / pre.tp,
                             kv_transfer_s(a, pre, k, w), w)  # fmt: skip
    pools = (
        (p.tokens / p.seconds * pre.num_gpus / w.uncached_len, pre.num_gpus),
        (d.tokens / d.seconds * dec.num_gpus / w.output_len, dec.num_gpus),
    )
    return pt, pools


def disaggregated_option(a: Arch, gpu: Device, pre: Layout, dec: Layout, k: Kernels, w: Workload) -> Option | str:
    """A prefill pool meeting TTFT (with the KV transfer) and a decode pool meeting TPOT, each in whole instances."""
    kv_s = kv_transfer_s(a, pre, k, w)
    if kv_s * 1000 >= w.ttft_ms:
        return f"the KV transfer alone takes {kv_s * 1000:,.0f} ms"
    tokens, why = prefill_tokens_for_ttft(a, gpu, pre, k, prompt_len=w.input_len, cache_hit_rate=w.cached_fraction, kv_dtype=w.kv_dtype,
                                          ttft_ms=w.ttft_ms - kv_s * 1000, cap=engine_budget(gpu)[0] // pre.tp)  # fmt: skip
    if why == UNREACHABLE:
        return f"prefill of one prompt misses {w.ttft_ms:g} ms TTFT"
    limit = max_batch(a, gpu, dec, k, w)

    def tpot_ms(b: int) -> float:
        d = _decode(a, gpu, dec, k, w, b)
        return d.seconds * b / d.tokens * 1000

    b = largest(lambda b: tpot_ms(b) <= w.tpot_ms, limit)
    if b < 1:
        return (
            "no KV room for one request"
            if limit < 1
            else f"batch 1 decodes at {_decode(a, gpu, dec, k, w, 1).seconds * 1000:,.1f} ms per step"
        )
    pt, pools = disaggregated_point(a, gpu, pre, dec, k, w, b, tokens)
    pre_gpus, dec_gpus = (gpus_at((pool,), w.request_rate) for pool in pools)
    out = (
        pools[1][0] * w.output_len / dec.num_gpus * dec_gpus / (pre_gpus + dec_gpus)
    )  # output tok/s per GPU of both pools at full decode load
    point = replace(pt, output_tokens_per_s_per_gpu=out, total_tokens_per_s_per_gpu=out * (1 + w.input_len / w.output_len))
    return Option(
        gpu.name,
        "disaggregated",
        a.weight_dtype,
        f"prefill {pre_gpus} on {describe(pre)} + decode {dec_gpus} on {describe(dec)}",
        pre_gpus + dec_gpus,
        pools,
        point,
        "KV room" if b == limit else "TPOT",
    )


def sample_kernels(k: Kernels, rng: np.random.Generator) -> Kernels:
    """Every assumption with a range drawn half below and half above its central value, uniformly in each half, so
    each one's median is the central value (the figure the model runs on) and its 90% interval stays inside the range."""
    for name, (lo, hi) in sorted(k.ranges.items()):
        central = _central(k, name)
        below, above = sorted((lo, central)), sorted((central, hi))  # a measured central may lie outside the published range
        v = rng.uniform(*below) if rng.random() < 0.5 else rng.uniform(*above)
        k = with_value(k, name, float(v))
    return k


def _central(k: Kernels, name: str) -> float:
    if name == "low_latency_scale":  # a multiplier on DeepEP's table
        return 1.0
    if "." in name:
        cls, part = name.split(".")
        return float(getattr(k.ops[cls], part))
    return float(getattr(k, name))
