"""Whole requests on the serving model: the rates of one GPU at one batch, aggregated or disaggregated, what limits a
batch, and the prefill step a TTFT limit allows. The options built from them are estimator/options.py.

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
from dataclasses import dataclass
from enum import StrEnum

from core.engines import DEFAULT_ENGINE, engine_rules
from core.hardware import Device
from estimator.arch import Arch, Layout
from estimator.kernels import Kernels
from estimator.memory import engine_step_tokens, kv_room_sequences, prompt_transfer_s
from estimator.serving import Step, step
from estimator.traffic import Request


def engine_budget(gpu: Device, engine: str = DEFAULT_ENGINE) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) of one engine by default on ``gpu`` (core/data/engines/)."""
    tier = engine_rules(engine).budget(gpu.name, gpu.memory_bytes)
    return tier.max_num_batched_tokens, tier.max_num_seqs


class Limit(StrEnum):
    """What stops a batch (or a layout) from growing: a latency limit, memory, the engine's caps, the network."""

    TTFT = "SLO: TTFT"
    TPOT = "SLO: TPOT"
    KV_ROOM = "memory: KV room"
    WEIGHTS = "memory: weights"
    MAX_NUM_SEQS = "engine: max_num_seqs"
    TOKEN_BUDGET = "engine: token budget"
    KV_TRANSFER = "network: KV transfer"


@dataclass(frozen=True)
class Rejection:
    """Why a layout serves nothing: the limit it hits, in words, and how near it came (the largest of TTFT / limit and
    TPOT / limit at batch 1; inf where no batch could be tried)."""

    limit: Limit
    text: str
    score: float = math.inf

    def __str__(self) -> str:
        return self.text


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


def aggregated_rates(decode_s: float, decode_tokens: float, batch: float, prefill_tokens_per_s: float, r: Request,
                     budget_per_gpu: float, prompt_per_gpu: float) -> Point:  # fmt: skip
    """Steady-state chunked prefill (module docstring) from one decode step (``decode_s`` seconds advancing
    ``decode_tokens``) and a prefill rate; ``prompt_per_gpu``: one prompt's uncached tokens as one GPU carries them."""
    x = decode_tokens * r.uncached_len / r.output_len  # per GPU: d / L_out requests finish a step, each replaced by u tokens
    t = decode_s + x / prefill_tokens_per_s
    room = budget_per_gpu - batch * (1 + r.mtp_tokens)
    steps = math.ceil(prompt_per_gpu / room) if room > 0 else math.inf
    ttft = steps * (decode_s + min(prompt_per_gpu, max(room, 0)) / prefill_tokens_per_s)
    out = decode_tokens / t
    return Point(batch, out, out * (1 + r.input_len / r.output_len), decode_tokens / batch / t, ttft * 1000,
                 t * batch / decode_tokens * 1000, x <= room)  # fmt: skip


def disaggregated_rates(decode_s: float, decode_tokens: float, batch: float, prefill_tokens_per_s: float, prefill_step_s: float,
                        prefill_step_tokens: float, prompt_per_gpu: float, kv_transfer_s: float, r: Request) -> Point:  # fmt: skip
    """Prefill and decode pools in the ratio the requests need: a request takes u / r_p prefill GPU-seconds and
    L_out / r_d decode GPU-seconds, so both pools together give L_out / (u / r_p + L_out / r_d) output tokens/s per GPU;
    TTFT = the prefill steps carrying the prompt plus the KV transfer, TPOT = the decode step per token of a user."""
    r_d = decode_tokens / decode_s
    out = r.output_len / (r.uncached_len / prefill_tokens_per_s + r.output_len / r_d)
    ttft = prefill_step_s * math.ceil(prompt_per_gpu / prefill_step_tokens) + kv_transfer_s
    return Point(batch, out, out * (1 + r.input_len / r.output_len), decode_tokens / batch / decode_s, ttft * 1000,
                 decode_s * batch / decode_tokens * 1000, True)  # fmt: skip


def kv_transfer_s(a: Arch, layout: Layout, k: Kernels, r: Request) -> float:
    """Seconds to send one prompt's cache from a prefill GPU to decode over the network (memory.prompt_transfer_s)."""
    return prompt_transfer_s(a.shapes, r.input_len, r.kv_dtype, layout.tp, k.normal_internode_gb_per_s * 1e9)


def decode_step(a: Arch, gpu: Device, layout: Layout, k: Kernels, r: Request, batch: float) -> Step:
    """One decode step of ``batch`` sequences per GPU at the request's mean KV length."""
    return step(a, gpu, layout, k, "decode", batch_per_gpu=batch, context=r.mean_kv_len, mtp_tokens=r.mtp_tokens, kv_dtype=r.kv_dtype)


def prefill_step(a: Arch, gpu: Device, layout: Layout, k: Kernels, r: Request, tokens_per_gpu: float) -> Step:
    """One prefill step of ``tokens_per_gpu`` uncached prompt tokens per GPU of the request's prompts."""
    return step(a, gpu, layout, k, "prefill", tokens_per_gpu=tokens_per_gpu, prompt_len=r.input_len, cached_fraction=r.cached_fraction,
                kv_dtype=r.kv_dtype)  # fmt: skip


def aggregated_point(a: Arch, gpu: Device, layout: Layout, k: Kernels, r: Request, batch: float) -> Point:
    """Whole requests at ``batch`` sequences per GPU, prefill and decode sharing the GPUs."""
    budget = engine_budget(gpu)[0] / layout.tp
    d, p = decode_step(a, gpu, layout, k, r, batch), prefill_step(a, gpu, layout, k, r, budget)
    return aggregated_rates(d.seconds, d.tokens, batch, p.tokens / p.seconds, r, budget, r.uncached_len / layout.tp)


def max_batch(a: Arch, gpu: Device, layout: Layout, k: Kernels, r: Request) -> tuple[int, Limit]:
    """Sequences per GPU the KV room holds at a request's full length (vLLM's rule: a sequence that outgrows its pages is
    preempted), at most the engine's max_num_seqs; and which of the two it is."""
    room = kv_room_sequences(a, gpu, layout, k, r.full_len, r.kv_dtype, mtp=a.mtp_served(r.mtp_tokens))
    seqs = engine_budget(gpu)[1] // layout.tp or 1
    return (room, Limit.KV_ROOM) if room <= seqs else (seqs, Limit.MAX_NUM_SEQS)


UNREACHABLE = "TTFT target unreachable"  # the smallest step (one prompt's uncached tokens) misses it


def prefill_tokens_for_ttft(a: Arch, gpu: Device, layout: Layout, k: Kernels, r: Request, ttft_ms: float | None,
                            cap: int = 0) -> tuple[int, str]:  # fmt: skip
    """Largest prefill tokens per GPU per step, up to the layout's (else ``cap``, else the engine's token budget on this GPU
    over TP), whose step meets ``ttft_ms`` (None: no limit) for the request's prompts; why it stops there.

    A prompt's first token waits at least for the step that carries its uncached tokens (queueing and the KV
    transfer to decode are not counted), so a step carries at least one prompt's uncached tokens: spreading a
    prompt over more steps only adds time. A prompt longer than the cap takes ceil(uncached / cap) steps.
    """
    cap = layout.step_tokens or cap or engine_step_tokens(gpu) // layout.tp
    if ttft_ms is None:
        return cap, "tokens per step"
    prompt = max(math.ceil(r.uncached_len), 1)

    def first_token_ms(tokens: int) -> float:
        return prefill_step(a, gpu, layout, k, r, tokens).seconds * 1000 * math.ceil(prompt / tokens)

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
