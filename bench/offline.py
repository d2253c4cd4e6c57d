"""Offline modes: throughput, prefill and decode, each one configuration -> one record.

Timing: ``time.perf_counter`` around the engine call (which returns only when every output is
back), after an uncounted warm-up of the same shape.
"""

from __future__ import annotations

from typing import Any

from bench.efficiency import efficiency_fields
from bench.engines import Engine, make_prompts
from estimator.models import ModelSpec
from estimator.work import decode_work, prefill_work, request_work


def _waves(prompts: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    return [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]


def _timed_waves(engine: Engine, prompts: list[list[int]], batch_size: int, output_len: int) -> tuple[float, int]:
    engine.generate(prompts[:batch_size], output_len)  # warm-up, not counted
    seconds, tokens = 0.0, 0
    for wave in _waves(prompts, batch_size):
        s, t = engine.generate(wave, output_len)
        seconds += s
        tokens += t
    return seconds, tokens


def measure_throughput(
    engine: Engine, spec: ModelSpec, batch_size: int, input_len: int, output_len: int, num_prompts: int, ctx: dict
) -> dict[str, Any]:
    """``max(num_prompts, batch_size)`` prompts submitted in waves of ``batch_size``."""
    n = max(num_prompts, batch_size)
    prompts = make_prompts(n, input_len, engine.vocab_size, seed=ctx["seed"])
    seconds, out_tokens = _timed_waves(engine, prompts, batch_size, output_len)
    if out_tokens != n * output_len:
        raise RuntimeError(f"engine returned {out_tokens} output tokens, expected {n * output_len}")
    work = request_work(spec, batch_size, input_len, output_len, len(_waves(prompts, batch_size)))
    return {
        "num_prompts": n,
        "elapsed_s": round(seconds, 4),
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / seconds, 3),
        "total_tokens_per_s": round((out_tokens + n * input_len) / seconds, 3),
        "request_throughput_per_s": round(n / seconds, 4),
        **efficiency_fields(work, seconds, ctx["peaks"], ctx["measured_peaks"], ctx["num_gpus"]),
    }


def measure_prefill(
    engine: Engine, spec: ModelSpec, batch_size: int, input_len: int, output_len: int, num_prompts: int, ctx: dict
) -> dict[str, Any]:
    """Prompts of ``input_len`` with one output token: prefill tokens/s (the one sampled token included)."""
    n = max(num_prompts, batch_size)
    prompts = make_prompts(n, input_len, engine.vocab_size, seed=ctx["seed"])
    seconds, out_tokens = _timed_waves(engine, prompts, batch_size, 1)
    waves = len(_waves(prompts, batch_size))
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
        **efficiency_fields(work, seconds, ctx["peaks"], ctx["measured_peaks"], ctx["num_gpus"]),
    }


def measure_decode(
    engine: Engine, spec: ModelSpec, batch_size: int, input_len: int, output_len: int, num_prompts: int, ctx: dict
) -> dict[str, Any]:
    """Decode alone, by difference: a batch run to ``output_len`` tokens minus the same batch run to 1.

    decode tokens/s = B × (output_len − 1) / (t_full − t_first); step latency = (t_full − t_first) / (output_len − 1).
    """
    if output_len < 2:
        raise ValueError("decode mode needs output_len >= 2")
    prompts = make_prompts(batch_size, input_len, engine.vocab_size, seed=ctx["seed"])
    engine.generate(prompts, output_len)  # warm-up, not counted
    t_first, _ = engine.generate(prompts, 1)
    t_full, out_tokens = engine.generate(prompts, output_len)
    if out_tokens != batch_size * output_len:
        raise RuntimeError(f"engine returned {out_tokens} output tokens, expected {batch_size * output_len}")
    decode_s = t_full - t_first
    if decode_s <= 0:
        raise RuntimeError("decode time came out non-positive: output too short to separate from prefill")
    steps = output_len - 1
    work = decode_work(spec, batch_size, input_len, output_len)
    return {
        "num_prompts": batch_size,
        "elapsed_s": round(t_full, 4),
        "prefill_s": round(t_first, 4),
        "decode_s": round(decode_s, 4),
        "decode_step_ms": round(decode_s / steps * 1000, 4),
        "decode_tokens_per_s": round(batch_size * steps / decode_s, 3),
        "output_tokens_per_s": round(out_tokens / t_full, 3),
        "total_tokens_per_s": round((out_tokens + batch_size * input_len) / t_full, 3),
        **efficiency_fields(work, decode_s, ctx["peaks"], ctx["measured_peaks"], ctx["num_gpus"]),
    }


OFFLINE_MODES = {"throughput": measure_throughput, "prefill": measure_prefill, "decode": measure_decode}
