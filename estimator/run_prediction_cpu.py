"""A CPU session's measured configurations predicted by the CPU step model (estimator/run_prediction.py says what for).

Decode steps and prefills are estimator/cpu_validation.py's own: the same curves, the same fit, the same fitted and held-out
roles. Offline throughput and serving are built from the same session's curves and overheads: a throughput wave is one
prefill plus output_len - 1 decode steps; serving at a concurrency is the whole-request model of estimator/planning.py
(``aggregated_rates``) with the CPU step model's decode step and prefill rate at the server's token budget.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.dtypes import kernel_dtype
from estimator.cpu_steps import (
    CHUNK_TOKENS,
    FIT_MAX_BATCH,
    OperatorCurves,
    Overhead,
    UndeterminedError,
    build_curves,
    decode_ops,
    prefill_ops,
)
from estimator.cpu_validation import REFERENCE_MODEL, StepValidation, validate
from estimator.planning import aggregated_rates
from estimator.run_prediction import OPEN_LOOP, Unpredictable, label, mean_request, metric_rows, wave_output_tokens_per_s
from estimator.traffic import mean_kv_len

# vLLM 0.32's OpenAI server on a CPU schedules at most 2,048 tokens a step (x the world size): EngineArgs's CPU defaults,
# vllm/engine/arg_utils.py (the offline LLM class gets 4,096, cpu_steps.CHUNK_TOKENS)
SERVER_TOKEN_BUDGET = 2048
CURVE_OPERATORS = "gemm,attention_decode,attention_prefill,layer_elementwise,sampling"  # what build_curves reads


def predict_cpu_device(cfgs: pd.DataFrame, runs: pd.DataFrame, ops: pd.DataFrame, engines: dict[str, Any]) -> tuple[list, list, str]:
    """(rows, what could not be predicted and why, how) for one CPU's measuring session."""
    device = cfgs["device_name"].iloc[0]
    other = cfgs[cfgs["engine"] != "vllm"]
    unpredicted = [(label(c), f"the CPU step model is vLLM's (curves of vLLM's CPU kernels, overheads of its eager engine), not "
                              f"{c.engine}'s") for c in other.itertuples()]  # fmt: skip
    cfgs = cfgs[cfgs["engine"] == "vllm"]
    try:
        if cfgs.empty:
            raise UndeterminedError("no vLLM configuration measured")
        if not ops["impl"].fillna("").str.startswith("vllm").any():
            raise UndeterminedError(f"no operator records of vLLM's CPU kernels in this session, which the step model's curves are "
                                    f"read from: measure them with `fleetcal bench --mode ops --operators {CURVE_OPERATORS}`")  # fmt: skip
        v = validate(runs, ops, device)
    except UndeterminedError as exc:
        return [], unpredicted + [(label(c), str(exc)) for c in cfgs.itertuples()], f"CPU step model: not used ({exc})"
    rows = []
    for c in cfgs.itertuples():
        try:
            rows += _predict(c, v, ops, device)
        except Unpredictable as exc:
            unpredicted.append((label(c), str(exc)))
    over = "; ".join(f"session {s}: {o.per_step * 1e3:.2f} ms per step + {o.per_sequence * 1e3:.3f} ms per sequence, fitted on "
                     f"{o.fitted_on} decode steps" + (f" (undetermined: {', '.join(o.undetermined)})" if o.undetermined else "")
                     for s, o in sorted(v.overheads.items()))  # fmt: skip
    how = (f"CPU step model: operator curves timed with vLLM's CPU kernels in this session; engine overhead fitted on "
           f"{REFERENCE_MODEL}'s decode at batches up to {FIT_MAX_BATCH} at its shortest prompt ({over}); every other row "
           "held out")  # fmt: skip
    return rows, unpredicted, how


def _predict(c: Any, v: StepValidation, ops: pd.DataFrame, device: str) -> list[dict[str, Any]]:
    if c.mode in ("decode", "prefill"):
        return _step_rows(c, v)
    if pd.notna(c.request_rate):
        raise Unpredictable(OPEN_LOOP)
    session = _session_of(v, c.run_file)
    try:
        curves = build_curves(ops[ops["run_file"].isin(v.session_files[session])], device, c.model, kernel_dtype(c.dtype))
    except UndeterminedError as exc:
        raise Unpredictable(str(exc)) from exc
    over = v.overheads[session]
    if c.mode == "throughput":
        b, i, o = int(c.batch_size), int(c.input_len), int(c.output_len)
        out = wave_output_tokens_per_s(prefill_s(curves, over, b, i), decode_s(curves, over, b, mean_kv_len(i, o)), b, o)
        return metric_rows(c, {"output_tokens_per_s": out}, "held out")
    return metric_rows(c, serve_latency_ms(curves, over, c, budget=_budget(c, SERVER_TOKEN_BUDGET)), "held out")


def _step_rows(c: Any, v: StepValidation) -> list[dict[str, Any]]:
    """A decode or prefill configuration as cpu_validation predicted it (its fitted or held-out role)."""
    s = v.steps
    hit = s[(s["model"] == c.model) & (s["phase"] == c.mode) & (s["batch"] == c.batch_size) & (s["input_len"] == c.input_len)
            & (s["output_len"] == c.output_len) & (s["run_file"] == c.run_file)]  # fmt: skip
    if hit.empty:
        chunk = CHUNK_TOKENS if pd.isna(c.max_num_batched_tokens) else c.max_num_batched_tokens
        if c.mode == "decode" and c.batch_size * c.input_len > chunk:
            raise Unpredictable(f"its {int(c.batch_size)} prompts ({int(c.batch_size * c.input_len):,} tokens) were prefilled in "
                                f"several chunks of {int(chunk):,}, so steps timed by difference include partial batches")  # fmt: skip
        raise Unpredictable(next((u for u in v.unpredicted if f" of {c.model} " in u), "not among the steps cpu_validation predicted"))
    r = hit.iloc[0]
    field = "decode_step_ms" if c.mode == "decode" else "time_to_first_token_ms"
    return metric_rows(c, {field: r["predicted_ms"]}, r["role"], measured={field: r["measured_ms"]})


def _session_of(v: StepValidation, run_file: str) -> str:
    """The step-model session a run file belongs to: the one holding it, else the latest that started before it."""
    for name, files in v.session_files.items():
        if run_file in files:
            return name
    before = [name for name in v.overheads if name <= run_file[:16]]
    return max(before) if before else min(v.overheads)


def _budget(c: Any, default: int) -> int:
    return default if pd.isna(c.max_num_batched_tokens) else int(c.max_num_batched_tokens)


def decode_s(curves: OperatorCurves, over: Overhead, batch: int, context: float) -> float:
    """One decode step: the operator sum at ``batch`` x ``context`` plus the fitted per-step and per-sequence overheads."""
    return sum(decode_ops(curves, batch, context).values()) + over.per_step + over.per_sequence * batch


def prefill_s(curves: OperatorCurves, over: Overhead, batch: int, prompt: int) -> float:
    """``batch`` prompts to their first token: the operator sum of their chunks plus the overheads (one per-step term a chunk)."""
    parts, chunks = prefill_ops(curves, batch, prompt)
    return sum(parts.values()) + chunks * over.per_step + over.per_sequence * batch


def serve_latency_ms(curves: OperatorCurves, over: Overhead, c: Any, budget: int) -> dict[str, float]:
    """TTFT and TPOT (ms) at a closed-loop concurrency: planning.aggregated_rates with the CPU step model's decode step at
    that batch and its prefill rate (operators only: the step's overheads are in the decode step) over a budget's prompts.
    With prefix-cache hits, a prompt's uncached tokens are prefilled as a prompt of their own length (their attention
    to the cached prefix, which the prefill-attention curve does not cover, left out)."""
    n, r = int(c.concurrency), mean_request(c, c.model)
    u = max(round(r.uncached_len), 1)
    prompts = max(1, budget // u)
    parts, _ = prefill_ops(curves, prompts, u)
    rate = prompts * u / sum(parts.values())
    pt = aggregated_rates(decode_s(curves, over, n, r.mean_kv_len), n, n, rate, r, budget, r.uncached_len)
    return {"ttft_ms_p50": pt.ttft_ms, "tpot_ms_p50": pt.tpot_ms}
