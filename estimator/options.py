"""Ways to serve a request on one GPU type (estimator/planning.py's rates on a layout): aggregated on one pool, or
disaggregated on a prefill and a decode pool, at the largest batch the limits allow, and the GPUs a rate needs in whole
instances (or whole GPUs, for a daily mean's capacity). The one path every fleet size takes: ``fleetcal plan``'s search,
``estimate``'s serving-model scenario and the backtest."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels
from estimator.planning import (
    UNREACHABLE,
    Limit,
    Point,
    Rejection,
    aggregated_point,
    decode_step,
    disaggregated_rates,
    engine_budget,
    kv_transfer_s,
    max_batch,
    prefill_step,
    prefill_tokens_for_ttft,
)
from estimator.serving import Step
from estimator.traffic import Request

Pools = tuple[tuple[float, int], ...]  # (requests/s per instance, GPUs per instance): one pool, or prefill and decode


@dataclass(frozen=True)
class Option:
    """One way to serve the request on one GPU type: mode, layouts, batch, GPUs at the peak rate, its rates and steps."""

    gpu: str
    mode: str
    weight_dtype: str
    layout: str
    gpus: int
    pools: Pools
    point: Point
    limited_by: Limit
    steps: tuple[Step, ...] = ()  # the decode step, then the prefill step (aggregated: one of the engine's token budget)
    prefill_tokens_per_gpu: int = 0

    @property
    def requests_per_s_per_gpu(self) -> float:
        """Requests/s one GPU carries at full load, the pools in the ratio the requests need."""
        return 1 / sum(n / cap for cap, n in self.pools)


def gpus_at(pools: Pools, rate: float, whole_instances: bool = True) -> int:
    """GPUs of every pool serving ``rate`` requests/s: whole instances (what is provisioned), or whole GPUs (the capacity a
    daily mean needs, comparable with an average node count)."""
    return sum(_whole(rate / cap * n, n if whole_instances else 1) for cap, n in pools)


def _whole(need: float, n: int) -> int:
    return max(math.ceil(need / n - 1e-9), 1) * n if need > 0 else 0


def describe(layout: Layout) -> str:
    parts = [f"TP{layout.tp}"] if layout.tp > 1 or layout.ep == 1 else []
    parts += [f"EP{layout.ep}"] if layout.ep > 1 else []
    parts += ["DP-attn"] if layout.dp_attention else []
    return f"{layout.num_gpus}x " + " ".join(parts)


def largest(ok: Callable[[int], bool], hi: int) -> int:
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


def _no_room(r: Request) -> Rejection:
    return Rejection(Limit.KV_ROOM, f"no KV room for one {r.full_len:,.0f}-token request beside the weights")


def aggregated_option(a: Arch, gpu: Device, layout: Layout, k: Kernels, r: Request, whole_instances: bool = True) -> Option | Rejection:
    """The largest batch meeting TPOT and TTFT on ``layout``, and the GPUs the peak rate needs; a Rejection if none."""
    limit, why_limit = max_batch(a, gpu, layout, k, r)
    if limit < 1:
        return _no_room(r)
    ttft, tpot = r.ttft_ms or math.inf, r.tpot_ms or math.inf

    def ok(b: int) -> bool:
        p = aggregated_point(a, gpu, layout, k, r, b)
        return p.fits and p.tpot_ms <= tpot and p.ttft_ms <= ttft

    b = largest(ok, limit)
    if b < 1:
        p1 = aggregated_point(a, gpu, layout, k, r, 1)
        which = Limit.TPOT if p1.tpot_ms > tpot else Limit.TTFT if p1.ttft_ms > ttft else Limit.TOKEN_BUDGET
        score = max(p1.ttft_ms / ttft, p1.tpot_ms / tpot)
        return Rejection(which, f"batch 1 gives TTFT {p1.ttft_ms:,.0f} ms, TPOT {p1.tpot_ms:,.2f} ms", score)
    p = aggregated_point(a, gpu, layout, k, r, b)
    if b == limit:
        why = why_limit
    else:
        nxt = aggregated_point(a, gpu, layout, k, r, b + 1)
        why = Limit.TPOT if nxt.tpot_ms > tpot else Limit.TTFT if nxt.ttft_ms > ttft else Limit.TOKEN_BUDGET
    pools = ((p.output_tokens_per_s_per_gpu * layout.num_gpus / r.output_len, layout.num_gpus),)
    budget = engine_budget(gpu)[0] // layout.tp
    steps = (decode_step(a, gpu, layout, k, r, b), prefill_step(a, gpu, layout, k, r, budget))
    return Option(gpu.name, "aggregated", a.weight_dtype, describe(layout), gpus_at(pools, r.peak_requests_per_s, whole_instances), pools,
                  p, why, steps, budget)  # fmt: skip


def disaggregated_point(a: Arch, gpu: Device, pre: Layout, dec: Layout, k: Kernels, r: Request, batch: float,
                        prefill_tokens: float) -> tuple[Point, Pools, tuple[Step, Step]]:  # fmt: skip
    """Whole requests on a prefill pool running steps of ``prefill_tokens`` per GPU and a decode pool at ``batch``
    (disaggregated_rates), the two pools' (requests/s per instance, GPUs per instance), and the decode and prefill steps."""
    d, p = decode_step(a, gpu, dec, k, r, batch), prefill_step(a, gpu, pre, k, r, prefill_tokens)
    pt = disaggregated_rates(d.seconds, d.tokens, batch, p.tokens / p.seconds, p.seconds, prefill_tokens, r.uncached_len / pre.tp,
                             kv_transfer_s(a, pre, k, r), r)  # fmt: skip
    pools = ((p.tokens / p.seconds * pre.num_gpus / r.uncached_len, pre.num_gpus),
             (d.tokens / d.seconds * dec.num_gpus / r.output_len, dec.num_gpus))  # fmt: skip
    return pt, pools, (d, p)


def disaggregated_option(a: Arch, gpu: Device, pre: Layout, dec: Layout, k: Kernels, r: Request,
                         whole_instances: bool = True) -> Option | Rejection:  # fmt: skip
    """A prefill pool meeting TTFT (with the KV transfer) and a decode pool meeting TPOT, each in whole instances (or
    whole GPUs), at the peak rate; a Rejection if none."""
    kv_ms = kv_transfer_s(a, pre, k, r) * 1000
    if r.ttft_ms is not None and kv_ms >= r.ttft_ms:
        return Rejection(Limit.KV_TRANSFER, f"the KV transfer alone takes {kv_ms:,.0f} ms")
    left = None if r.ttft_ms is None else r.ttft_ms - kv_ms
    tokens, why = prefill_tokens_for_ttft(a, gpu, pre, k, r, left)
    if why == UNREACHABLE:
        return Rejection(Limit.TTFT, f"prefill of one prompt misses {r.ttft_ms:g} ms TTFT")
    limit, why_limit = max_batch(a, gpu, dec, k, r)
    tpot = r.tpot_ms or math.inf

    def tpot_ms(b: int) -> float:
        d = decode_step(a, gpu, dec, k, r, b)
        return d.seconds * b / d.tokens * 1000

    b = largest(lambda b: tpot_ms(b) <= tpot, limit)
    if b < 1:
        return _no_room(r) if limit < 1 else Rejection(Limit.TPOT, f"batch 1 decodes at {tpot_ms(1):,.2f} ms per token", tpot_ms(1) / tpot)
    pt, pools, steps = disaggregated_point(a, gpu, pre, dec, k, r, b, tokens)
    pre_gpus, dec_gpus = (gpus_at((pool,), r.peak_requests_per_s, whole_instances) for pool in pools)
    if pre_gpus + dec_gpus:  # output tok/s per GPU of both pools, decode at full load
        out = pools[1][0] * r.output_len / dec.num_gpus * dec_gpus / (pre_gpus + dec_gpus)
        pt = replace(pt, output_tokens_per_s_per_gpu=out, total_tokens_per_s_per_gpu=out * (1 + r.input_len / r.output_len))
    layout = f"prefill {pre_gpus} on {describe(pre)} + decode {dec_gpus} on {describe(dec)}"
    return Option(gpu.name, "disaggregated", a.weight_dtype, layout, pre_gpus + dec_gpus, pools, pt,
                  why_limit if b == limit else Limit.TPOT, steps, tokens)  # fmt: skip
