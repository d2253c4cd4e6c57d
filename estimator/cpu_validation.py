"""The CPU step model against what was measured: each measuring session's steps predicted from its own operator
curves, with the engine overheads fitted on the reference model's small decode batches of that session only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from core.dtypes import kernel_dtype
from estimator.cpu_steps import (
    CHUNK_TOKENS,
    FIT_MAX_BATCH,
    OperatorCurves,
    Overhead,
    UndeterminedError,
    build_curves,
    fit_overhead,
    step_ops,
)

REFERENCE_MODEL = "SmolLM2-135M-Instruct"  # the bundled model: its smaller decode batches fit the overheads


def _steps(runs: pd.DataFrame, device_name: str) -> pd.DataFrame:
    """The measured vLLM decode and prefill steps (eager) of one device, the median of a configuration's repeats.

    A decode record whose batch of prompts was prefilled in several chunks is left out: the sequences of
    the first chunks start decoding while the later ones prefill, so some of the steps timed by difference
    are partial batches and the step comes out short.
    """
    r = runs[
        (runs["device_name"] == device_name)
        & (runs["engine"] == "vllm")
        & (runs["status"] == "ok")
        & runs["mode"].isin(["decode", "prefill"])
    ]
    chunk = r["max_num_batched_tokens"].fillna(CHUNK_TOKENS) if "max_num_batched_tokens" in r else CHUNK_TOKENS
    r = r[(r["mode"] != "decode") | (r["batch_size"] * r["input_len"] <= chunk)]
    keys = ["model", "dtype", "mode", "batch_size", "input_len", "output_len", "run_file"]
    # the repeats of one configuration (--repeats, measured in rounds) count once, at their median
    return r.groupby(keys, sort=False, dropna=False)[["decode_step_ms", "time_to_first_token_ms"]].median().reset_index()


SESSION_GAP_S = 3600  # run files started further apart than this were measured in different sessions


def sessions(files: Iterable[str]) -> dict[str, str]:
    """Each run file's measuring session, named by its first file's timestamp (a new one after a gap over ``SESSION_GAP_S``)."""
    out: dict[str, str] = {}
    last, name = None, ""  # the previous file's start, the current session's name
    for f in sorted(set(files)):
        t = dt.datetime.strptime(f[:16], "%Y%m%dT%H%M%SZ")
        if last is None or (t - last).total_seconds() > SESSION_GAP_S:
            name = f[:16]
        out[f], last = name, t
    return out


@dataclass(frozen=True)
class StepValidation:
    """Every measured step of one CPU against its session's step model, and what each session was fitted and timed on."""

    steps: pd.DataFrame  # one row per step: session, model, phase, batch, input_len, role, measured and predicted ms, error
    overheads: dict[str, Overhead]  # session -> its fitted engine overhead
    session_files: dict[str, set[str]]  # session -> its run files
    unpredicted: list[str]  # what could not be predicted, and why

    @property
    def latest_overhead(self) -> Overhead:
        return self.overheads[max(self.overheads)]


def validate(runs: pd.DataFrame, ops: pd.DataFrame, device_name: str, reference: str = REFERENCE_MODEL) -> StepValidation:
    """Every measured step of ``device_name`` against the step model of its own measuring session (curves timed, overheads
    fitted on the reference model's small decode batches, in that session: a machine's speed drifts between sessions).

    Raises UndeterminedError where no session has both operator curves and fitted steps."""
    steps = _steps(runs, device_name)
    dev_ops = ops[ops["device_name"] == device_name]
    session = sessions([*steps["run_file"], *dev_ops["run_file"]])
    frames, overheads, files, unpredicted = [], {}, {}, []
    for name in sorted({session[f] for f in steps["run_file"]}):
        mine = {f for f, s in session.items() if s == name}
        try:
            df, over, missing = _validate_session(
                steps[steps["run_file"].isin(mine)], dev_ops[dev_ops["run_file"].isin(mine)], device_name, reference
            )
        except UndeterminedError as exc:
            unpredicted.append(f"session {name}: {exc}")
            continue
        frames.append(df.assign(session=name))
        overheads[name], files[name], unpredicted = over, mine, unpredicted + [f"session {name}: {u}" for u in missing]
    if not frames:
        raise UndeterminedError(
            f"{device_name}: no measuring session has both operator curves and fitted decode steps ({'; '.join(unpredicted)})"
        )
    return StepValidation(pd.concat(frames, ignore_index=True), overheads, files, sorted(unpredicted))


def _validate_session(steps: pd.DataFrame, ops: pd.DataFrame, device_name: str, reference: str) -> tuple[pd.DataFrame, Overhead, list[str]]:
    """The steps of one session against the curves of its operators; the overheads fitted on its reference batches;
    the models whose curves are missing."""
    ref = steps[(steps["model"] == reference) & (steps["mode"] == "decode")]
    fit_len = (
        ref["input_len"].min() if not ref.empty else None
    )  # the batch axis at the shortest context is fitted, longer contexts held out
    curves: dict[tuple[str, str], OperatorCurves | UndeterminedError] = {}
    rows = []
    for rec in steps.itertuples(index=False):
        key = (rec.model, kernel_dtype(rec.dtype))
        if key not in curves:
            try:
                curves[key] = build_curves(ops, device_name, *key)
            except UndeterminedError as exc:  # a model measured end to end without its operator curves: named, not predicted
                curves[key] = exc
        c = curves[key]
        if isinstance(c, UndeterminedError):
            continue
        parts, n_steps = step_ops(c, rec.mode, int(rec.batch_size), int(rec.input_len), int(rec.output_len))
        measured = (rec.decode_step_ms if rec.mode == "decode" else rec.time_to_first_token_ms) / 1e3
        fitted = rec.model == reference and rec.mode == "decode" and rec.batch_size <= FIT_MAX_BATCH and rec.input_len == fit_len
        rows.append({"model": rec.model, "dtype": key[1], "phase": rec.mode, "batch": int(rec.batch_size), "input_len": int(rec.input_len),
                     "output_len": int(rec.output_len), "role": "fitted" if fitted else "held out", "steps": n_steps,
                     "measured_ms": measured * 1e3, "operators_ms": sum(parts.values()) * 1e3,
                     **{f"{k}_ms": v * 1e3 for k, v in parts.items()}, "run_file": rec.run_file})  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty or not (df["role"] == "fitted").any():
        why = next((str(c) for c in curves.values() if isinstance(c, UndeterminedError)), f"no vLLM decode steps of {reference} measured")
        raise UndeterminedError(f"{device_name}: {why}")
    fit = df[df["role"] == "fitted"]
    over = fit_overhead(
        "decode", [(r.steps, r.batch, (r.measured_ms - r.operators_ms) / 1e3, r.measured_ms / 1e3) for r in fit.itertuples()]
    )
    df["overhead_ms"] = (df["steps"] * over.per_step + df["batch"] * over.per_sequence) * 1e3
    df["predicted_ms"] = df["operators_ms"] + df["overhead_ms"]
    df["error"] = df["predicted_ms"] / df["measured_ms"] - 1
    order = ["model", "phase", "input_len", "batch", "run_file"]
    df = df.sort_values(order, kind="mergesort").reset_index(drop=True)
    return df, over, sorted(str(c) for c in curves.values() if isinstance(c, UndeterminedError))
