"""Offline modes: throughput, prefill and decode, each one configuration -> one record.

Timing: ``time.perf_counter`` around the engine call (which returns only when every output is
back), after an uncounted warm-up of the same batch (a few tokens: enough to reach every kernel).

How many prompts: ``num_prompts`` when given (at least one wave of the batch size); when it is
None, waves of fresh prompts run until ``ctx.budget_s`` seconds are measured, at least
``MIN_WAVES`` waves: a configuration costs about the same time on a fast and a slow machine.
"""

from __future__ import annotations

from typing import Any

from bench.efficiency import MeasureContext, efficiency_fields
from bench.energy import energy_fields, energy_mj, joules_between
from bench.engines import Engine, make_prompts
from core.models import ModelSpec
from core.work import decode_work, prefill_work, request_work

MIN_WAVES = 1
MAX_WAVES = 64
WARMUP_TOKENS = 4
DECODE_REPEATS = 5  # decode pairs timed at most, while the budget lasts


def _warm_len(engine: Engine, output_len: int) -> int:
    """A few tokens reach every kernel; an engine with static shapes (compiled) needs the measured length."""
    return output_len if getattr(engine, "static_shapes", False) else min(output_len, WARMUP_TOKENS)


def _wave_prompts(
    engine: Engine, batch_size: int, input_len: int, fixed: list[list[int]] | None, seed: int, k: int
) -> list[list[int]] | None:
    """The prompts of wave ``k``: a slice of the ``fixed`` prompts (None when used up), or fresh ones for a time budget."""
    if fixed is not None:
        return fixed[k * batch_size : (k + 1) * batch_size] or None
    return make_prompts(batch_size, input_len, engine.vocab_size, seed=seed * 1_000_003 + k)


def _timed_waves(
    engine: Engine, batch_size: int, input_len: int, output_len: int, num_prompts: int | None, ctx: MeasureContext
) -> tuple[float, int, int, int]:
    """(seconds, output tokens, prompts, waves, joules) of the measured waves."""
    fixed = make_prompts(max(num_prompts, batch_size), input_len, engine.vocab_size, seed=ctx.seed) if num_prompts is not None else None
    first = _wave_prompts(engine, batch_size, input_len, fixed, ctx.seed, 0)
    engine.generate(first, _warm_len(engine, output_len))  # warm-up, not counted
    e0 = energy_mj(ctx.device)
    seconds, tokens, prompts, k = 0.0, 0, 0, 0
    while k < MAX_WAVES:
        if num_prompts is None and k >= MIN_WAVES and seconds >= ctx.budget_s:
            break
        wave = _wave_prompts(engine, batch_size, input_len, fixed, ctx.seed, k)
        if wave is None:
            break
        s, t = engine.generate(wave, output_len)
        seconds, tokens, prompts, k = seconds + s, tokens + t, prompts + len(wave), k + 1
    return seconds, tokens, prompts, k, joules_between(e0, energy_mj(ctx.device))


def measure_throughput(
    engine: Engine, spec: ModelSpec, batch_size: int, input_len: int, output_len: int, num_prompts: int | None, ctx: MeasureContext
) -> dict[str, Any]:
    """Prompts submitted in waves of ``batch_size``: ``max(num_prompts, batch_size)`` of them, or waves for the time budget."""
    seconds, out_tokens, n, waves, joules = _timed_waves(engine, batch_size, input_len, output_len, num_prompts, ctx)
    if out_tokens != n * output_len:
        raise RuntimeError(f"engine returned {out_tokens} output tokens, expected {n * output_len}")
    work = request_work(spec, batch_size, input_len, output_len, waves)
    return {
        "num_prompts": n,
        "elapsed_s": round(seconds, 4),
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / seconds, 3),
        "total_tokens_per_s": round((out_tokens + n * input_len) / seconds, 3),
        "request_throughput_per_s": round(n / seconds, 4),
        **energy_fields(joules, seconds, out_tokens),
        **efficiency_fields(work, seconds, ctx.datasheet, ctx.measured, ctx.num_gpus),
    }


def measure_prefill(
    engine: Engine, spec: ModelSpec, batch_size: int, input_len: int, output_len: int, num_prompts: int | None, ctx: MeasureContext
) -> dict[str, Any]:
    """Prompts of ``input_len`` with one output token: prefill tokens/s (the one sampled token included)."""
    seconds, out_tokens, n, waves, joules = _timed_waves(engine, batch_size, input_len, 1, num_prompts, ctx)
    work = prefill_work(spec, batch_size, input_len, waves)
    prefill_tps = n * input_len / seconds
    return {
        "num_prompts": n,
        "output_len": 1,
        "elapsed_s": round(seconds, 4),
        "prefill_tokens_per_s": round(prefill_tps, 3),
        "output_tokens_per_s": round(out_tokens / seconds, 3),
        "total_tokens_per_s": round((out_tokens + n * input_len) / seconds, 3),
        "time_to_first_token_ms": round(seconds / waves * 1000, 3),
        **energy_fields(joules, seconds, out_tokens, n * input_len),
        **efficiency_fields(work, seconds, ctx.datasheet, ctx.measured, ctx.num_gpus),
    }


def measure_decode(
    engine: Engine, spec: ModelSpec, batch_size: int, input_len: int, output_len: int, num_prompts: int | None, ctx: MeasureContext
) -> dict[str, Any]:
    """Decode alone, by difference: a batch run to ``output_len`` tokens minus the same batch run to 1.

    decode tokens/s = B × (output_len − 1) / (t_full − t_first); step latency = (t_full − t_first) / (output_len − 1).
    The pair is repeated while the time budget lasts (at most ``DECODE_REPEATS``; once with ``num_prompts``), and the
    median pair counts, as vLLM's latency benchmark reports over iterations: one pair on a shared machine can be far off.
    """
    if output_len < 2:
        raise ValueError("decode mode needs output_len >= 2")
    prompts = make_prompts(batch_size, input_len, engine.vocab_size, seed=ctx.seed)
    engine.generate(prompts, _warm_len(engine, output_len))  # warm-ups, not counted: both lengths timed below
    engine.generate(prompts, 1)
    device = ctx.device
    pairs: list[tuple[float, float, float | None, float | None]] = []
    spent = 0.0
    while not pairs or (num_prompts is None and len(pairs) < DECODE_REPEATS and spent < ctx.budget_s):
        e0 = energy_mj(device)
        t_first, _ = engine.generate(prompts, 1)
        e1 = energy_mj(device)
        t_full, out_tokens = engine.generate(prompts, output_len)
        e2 = energy_mj(device)
        if out_tokens != batch_size * output_len:
            raise RuntimeError(f"engine returned {out_tokens} output tokens, expected {batch_size * output_len}")
        pairs.append((t_first, t_full, joules_between(e0, e1), joules_between(e1, e2)))
        spent += t_first + t_full
    t_first, t_full, j_first, j_full = sorted(pairs, key=lambda p: p[1] - p[0])[(len(pairs) - 1) // 2]  # the median pair (lower middle)
    decode_s = t_full - t_first
    if decode_s <= 0:
        raise RuntimeError("decode time came out non-positive: output too short to separate from prefill")
    steps = output_len - 1
    work = decode_work(spec, batch_size, input_len, output_len)
    return {
        "num_prompts": batch_size,
        "repeats": len(pairs),
        "elapsed_s": round(t_full, 4),
        "prefill_s": round(t_first, 4),
        "decode_s": round(decode_s, 4),
        "decode_step_ms": round(decode_s / steps * 1000, 4),
        "decode_tokens_per_s": round(batch_size * steps / decode_s, 3),
        **_decode_energy(j_first, j_full, decode_s, batch_size * steps),
        "output_tokens_per_s": round(batch_size * output_len / t_full, 3),
        "total_tokens_per_s": round((batch_size * output_len + batch_size * input_len) / t_full, 3),
        **efficiency_fields(work, decode_s, ctx.datasheet, ctx.measured, ctx.num_gpus),
    }


def _decode_energy(j_first: float | None, j_full: float | None, decode_s: float, tokens: int) -> dict[str, Any]:
    """Decode energy by the same difference as decode time: the full run minus the run to one token."""
    joules = None if j_first is None or j_full is None else max(j_full - j_first, 0.0)
    return energy_fields(joules, decode_s, tokens)


OFFLINE_MODES = {"throughput": measure_throughput, "prefill": measure_prefill, "decode": measure_decode}
