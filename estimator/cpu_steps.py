"""The CPU step model: one vLLM step on one CPU as the sum of its operators, plus the engine's own overhead.

Operator times are read off curves measured on the device by ``fleetcal bench --mode ops`` with
vLLM's own CPU kernels (``bench/ops_vllm.py``), each at the model's own shapes, along its shape
axis: GEMM time against rows M for every linear layer, decode attention against KV tokens
(batch × context), prefill attention against prompt length, sampling against batch, one layer's
elementwise work against tokens. Between measured points a curve is interpolated log-log; past
the last point it grows in proportion (the operator is then bound by its compute or its bytes);
before the first it stays flat (launch-bound). A curve never decreases: a larger shape does not
take less time than a smaller one (the envelope absorbs a slow outlier of a noisy machine).

    decode step  = L × (Σ layers GEMM(B) + attention(B × context) + elementwise(B)) + lm_head(B) + sampling(B)
                   + overhead0 + overhead1 × B
    prefill      = Σ chunks L × (Σ layers GEMM(T) + elementwise(T)) + L × B × attention(prompt)
                   + lm_head(B) + sampling(B) + chunks × overhead0 + overhead1 × B

where T is the tokens of one chunk (vLLM's CPU default caps a step at 4,096). The overheads are
the engine's scheduling, input preparation and output handling, which no kernel benchmark sees:
a per-step and a per-sequence term, fitted by least squares on the measured steps of the
fitted configurations only (the reference model's decode at batches up to 32 and its shortest prompt). Everything else, larger
batches and other models, is held out: predicted, then compared with what was measured.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.dtypes import kernel_dtype
from core.models import MODEL_DIR, resolve_model_key
from core.shapes import Shapes, shapes_from_config

CHUNK_TOKENS = 4096  # vLLM's max_num_batched_tokens on a CPU
FIT_MAX_BATCH = 32  # decode configurations of the reference model up to this batch (at its shortest prompt) are fitted
FIT_PREFILL_BATCH = 1
IMPL = "vllm"  # curves are built from vLLM's kernels only: what the engine runs


class UndeterminedError(ValueError):
    """The measurements cannot determine a parameter of the fit; the message names it."""


@dataclass(frozen=True)
class Curve:
    """Seconds against one shape axis, non-decreasing; interpolated log-log, proportional past the last point."""

    xs: tuple[float, ...]
    ts: tuple[float, ...]

    @classmethod
    def of(cls, points: pd.DataFrame) -> Curve:
        g = points.groupby("x")["seconds"].median().sort_index()
        ts = np.minimum.accumulate(g.to_numpy()[::-1])[::-1]  # the envelope from the right: t(x) ≤ t(x') for x < x'
        return cls(tuple(float(x) for x in g.index), tuple(float(t) for t in ts))

    def __call__(self, x: float) -> float:
        xs, ts = self.xs, self.ts
        if x <= xs[0]:
            return ts[0]
        if x >= xs[-1]:
            return ts[-1] * x / xs[-1]
        i = int(np.searchsorted(xs, x))
        f = (math.log(x) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
        return math.exp(math.log(ts[i - 1]) + f * (math.log(ts[i]) - math.log(ts[i - 1])))


@dataclass(frozen=True)
class OperatorCurves:
    """The operator curves of one model on one device, in one precision."""

    device_name: str
    model: str
    dtype: str
    shapes: Shapes
    gemm: dict[str, Curve]  # layer -> time against M
    attention_decode: Curve  # against KV tokens (batch × context)
    attention_prefill: Curve  # against prompt length (one prompt)
    sampling: Curve  # against batch
    elementwise: Curve  # one layer, against tokens


def model_shapes(model: str) -> Shapes:
    """The shapes of a catalogued model (by name, alias or id), from its config.json."""
    key = resolve_model_key(model)
    if key is None:
        raise ValueError(f"model {model!r} is not catalogued: its layer count is unknown")
    return shapes_from_config(MODEL_DIR / key, key)


def build_curves(ops: pd.DataFrame, device_name: str, model: str, dtype: str) -> OperatorCurves:
    """Curves from the vLLM-kernel operator records of ``model`` on ``device_name`` in ``dtype``."""
    o = ops[(ops["device_name"] == device_name) & (ops["model"] == model) & (ops["dtype"] == dtype) & ops["impl"].str.startswith(IMPL)].copy()
    o["seconds"] = o["time_ms"] / 1e3
    o["_shape"] = o["shape"].map(json.loads)
    s = model_shapes(model)

    def curve(op: str, axis: str | None, where: dict | None = None, x: Callable[[dict], float] | None = None) -> Curve:
        g = o[o["operator"] == op]
        if where:
            g = g[g["_shape"].map(lambda sh: all(sh.get(k) == v for k, v in where.items()))]
        if g.empty:
            raise UndeterminedError(f"no {op} measurements of {model} on {device_name} in {dtype} (vLLM kernels): "
                                    f"run `fleetcal bench --mode ops --model {model}` there")  # fmt: skip
        g = g.assign(x=g["_shape"].map(x or (lambda sh: sh[axis])))
        return Curve.of(g)

    return OperatorCurves(
        device_name, model, dtype, s,
        gemm={layer: curve("gemm", "m", {"layer": layer}) for layer in s.linears},
        attention_decode=curve("attention_decode", None, x=lambda sh: sh["batch"] * sh["context"]),
        attention_prefill=curve("attention_prefill", "context"),
        sampling=curve("sampling", "batch"),
        elementwise=curve("layer_elementwise", "tokens"),
    )  # fmt: skip


def decode_ops(c: OperatorCurves, batch: int, context: float) -> dict[str, float]:
    """Seconds of one decode step by operator (overheads not included)."""
    L = c.shapes.num_layers
    layers = [k for k in c.gemm if k != "lm_head"]
    return {
        "gemm": L * sum(c.gemm[k](batch) for k in layers) + c.gemm["lm_head"](batch),
        "attention": L * c.attention_decode(batch * context),
        "elementwise": L * c.elementwise(batch),
        "sampling": c.sampling(batch),
    }


def prefill_ops(c: OperatorCurves, batch: int, prompt: int) -> tuple[dict[str, float], int]:
    """Seconds of prefilling ``batch`` prompts of ``prompt`` tokens to the first token, by operator; and the steps taken."""
    L = c.shapes.num_layers
    layers = [k for k in c.gemm if k != "lm_head"]
    total = batch * prompt
    chunks = max(1, math.ceil(total / CHUNK_TOKENS))
    t = total / chunks
    return {
        "gemm": chunks * L * sum(c.gemm[k](t) for k in layers) + c.gemm["lm_head"](batch),
        "attention": L * batch * c.attention_prefill(prompt),
        "elementwise": chunks * L * c.elementwise(t),
        "sampling": c.sampling(batch),
    }, chunks


@dataclass(frozen=True)
class Overhead:
    """The engine's own time in a step: ``per_step`` seconds plus ``per_sequence`` seconds per sequence."""

    phase: str
    per_step: float
    per_sequence: float
    fitted_on: int  # configurations
    undetermined: tuple[str, ...] = ()  # terms the fitted steps do not pin down, each with its estimate and why


TERMS = ("per-step overhead", "per-sequence overhead")


def fit_overhead(phase: str, points: list[tuple[int, int, float, float]]) -> Overhead:
    """Least squares of measured − operator sum = steps × per_step + sequences × per_sequence, both ≥ 0.

    ``points``: (steps, sequences, measured − operator sum, measured), in seconds; errors are weighed
    relative to the measured time. Refuses, naming the parameter, where the configurations cannot tell
    the two terms apart (one batch size only, or a batch range under 8×). A term whose estimate is not
    at least twice its standard error is named in ``undetermined`` (with its estimate): the fitted steps
    are too noisy to pin it down, and a term that came out negative is taken as 0 there, not silently.
    """
    if not points:
        raise UndeterminedError(f"{phase}: no configurations to fit, so the per-step overhead is undetermined")
    seqs = sorted({n for _, n, _, _ in points})
    if len(seqs) < 2 or seqs[-1] < 8 * seqs[0]:
        raise UndeterminedError(f"{phase}: batches {seqs} do not determine the per-sequence overhead; measure batch 1 and a batch at least 8× larger")
    a = np.array([[s, n] for s, n, _, _ in points], dtype=float)
    y = np.array([r for _, _, r, _ in points])
    w = 1.0 / np.array([m for _, _, _, m in points])
    aw, yw = a * w[:, None], y * w
    coef, *_ = np.linalg.lstsq(aw, yw, rcond=None)
    dof = max(len(points) - 2, 1)
    cov = float(np.sum((yw - aw @ coef) ** 2)) / dof * np.linalg.pinv(aw.T @ aw)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    undetermined = tuple(f"{TERMS[i]} ({coef[i] * 1e3:.3g} ± {2 * se[i] * 1e3:.2g} ms)" for i in (0, 1) if not coef[i] > 2 * se[i])
    for keep in (0, 1):  # a negative term is taken as 0 and the other refitted alone
        if coef[1 - keep] < 0:
            x = aw[:, keep]
            coef = np.zeros(2)
            coef[keep] = max(float(x @ yw / (x @ x)), 0.0)
    return Overhead(phase, float(coef[0]), float(coef[1]), len(points), undetermined)


REFERENCE_MODEL = "SmolLM2-135M-Instruct"  # the bundled model: its smaller decode batches fit the overheads


def _steps(runs: pd.DataFrame, device_name: str) -> pd.DataFrame:
    """The measured vLLM decode and prefill steps (eager) of one device, the median of a configuration's repeats.

    A decode record whose batch of prompts was prefilled in several chunks is left out: the sequences of
    the first chunks start decoding while the later ones prefill, so some of the steps timed by difference
    are partial batches and the step comes out short.
    """
    r = runs[(runs["device_name"] == device_name) & (runs["engine"] == "vllm") & (runs["status"] == "ok") & runs["mode"].isin(["decode", "prefill"])]
    chunk = r["max_num_batched_tokens"].fillna(CHUNK_TOKENS) if "max_num_batched_tokens" in r else CHUNK_TOKENS
    r = r[(r["mode"] != "decode") | (r["batch_size"] * r["input_len"] <= chunk)]
    keys = ["model", "dtype", "mode", "batch_size", "input_len", "output_len", "run_file"]
    # the repeats of one configuration (--repeats, measured in rounds) count once, at their median
    return r.groupby(keys, sort=False, dropna=False)[["decode_step_ms", "time_to_first_token_ms"]].median().reset_index()


def step_ops(c: OperatorCurves, mode: str, batch: int, input_len: int, output_len: int) -> tuple[dict[str, float], int]:
    """(seconds by operator, engine steps) of one measured configuration: a decode step, or a prefill to the first token."""
    if mode == "decode":
        return decode_ops(c, batch, input_len + output_len / 2), 1
    return prefill_ops(c, batch, input_len)


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
            df, over, missing = _validate_session(steps[steps["run_file"].isin(mine)], dev_ops[dev_ops["run_file"].isin(mine)], device_name, reference)
        except UndeterminedError as exc:
            unpredicted.append(f"session {name}: {exc}")
            continue
        frames.append(df.assign(session=name))
        overheads[name], files[name], unpredicted = over, mine, unpredicted + [f"session {name}: {u}" for u in missing]
    if not frames:
        raise UndeterminedError(f"{device_name}: no measuring session has both operator curves and fitted decode steps ({'; '.join(unpredicted)})")
    return StepValidation(pd.concat(frames, ignore_index=True), overheads, files, sorted(unpredicted))


def _validate_session(steps: pd.DataFrame, ops: pd.DataFrame, device_name: str, reference: str) -> tuple[pd.DataFrame, Overhead, list[str]]:
    """The steps of one session against the curves of its operators; the overheads fitted on its reference batches;
    the models whose curves are missing."""
    ref = steps[(steps["model"] == reference) & (steps["mode"] == "decode")]
    fit_len = ref["input_len"].min() if not ref.empty else None  # the batch axis at the shortest context is fitted, longer contexts held out
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
    over = fit_overhead("decode", [(r.steps, r.batch, (r.measured_ms - r.operators_ms) / 1e3, r.measured_ms / 1e3) for r in fit.itertuples()])
    df["overhead_ms"] = (df["steps"] * over.per_step + df["batch"] * over.per_sequence) * 1e3
    df["predicted_ms"] = df["operators_ms"] + df["overhead_ms"]
    df["error"] = df["predicted_ms"] / df["measured_ms"] - 1
    order = ["model", "phase", "input_len", "batch", "run_file"]
    df = df.sort_values(order, kind="mergesort").reset_index(drop=True)
    return df, over, sorted(str(c) for c in curves.values() if isinstance(c, UndeterminedError))
