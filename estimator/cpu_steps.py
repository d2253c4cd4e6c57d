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
fitted configurations only (the reference model's decode at batches up to 32 and its shortest prompt;
cpu_validation.py). Everything else, larger batches and other models, is held out: predicted, then compared
with what was measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.models import MODEL_DIR, resolve_model_key
from core.shapes import Shapes, shapes_from_config
from estimator.traffic import mean_kv_len

CHUNK_TOKENS = 4096  # vLLM's max_num_batched_tokens on a CPU
FIT_MAX_BATCH = 32  # decode configurations of the reference model up to this batch (at its shortest prompt) are fitted
FIT_PREFILL_BATCH = 1
IMPL = "vllm"  # curves are built from vLLM's kernels only: what the engine runs


class UndeterminedError(ValueError):
    """The measurements cannot determine a parameter of the fit; the message names it."""


@dataclass(frozen=True)
class Curve:
    """Seconds against one shape axis, non-decreasing; interpolated log-log, past the last point as the operator's work
    grows: (x / x_last) ** ``power`` (1: proportional; 2 for one prompt's prefill attention, whose query-key pairs grow
    as the square of its length, L (L + 1) / 2)."""

    xs: tuple[float, ...]
    ts: tuple[float, ...]
    power: float = 1.0

    @classmethod
    def of(cls, points: pd.DataFrame, power: float = 1.0) -> Curve:
        g = points.groupby("x")["seconds"].median().sort_index()
        ts = np.minimum.accumulate(g.to_numpy()[::-1])[::-1]  # the envelope from the right: t(x) ≤ t(x') for x < x'
        return cls(tuple(float(x) for x in g.index), tuple(float(t) for t in ts), power)

    def __call__(self, x: float) -> float:
        xs, ts = self.xs, self.ts
        if x <= xs[0]:
            return ts[0]
        if x >= xs[-1]:
            return ts[-1] * (x / xs[-1]) ** self.power
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
    o = ops[
        (ops["device_name"] == device_name) & (ops["model"] == model) & (ops["dtype"] == dtype) & ops["impl"].str.startswith(IMPL)
    ].copy()
    o["seconds"] = o["time_ms"] / 1e3
    o["_shape"] = o["shape"].map(json.loads)
    s = model_shapes(model)

    def curve(op: str, axis: str | None, where: dict | None = None, x: Callable[[dict], float] | None = None,
              power: float = 1.0) -> Curve:  # fmt: skip
        g = o[o["operator"] == op]
        if where:
            g = g[g["_shape"].map(lambda sh: all(sh.get(k) == v for k, v in where.items()))]
        if g.empty:
            raise UndeterminedError(f"no {op} measurements of {model} on {device_name} in {dtype} (vLLM kernels): "
                                    f"run `fleetcal bench --mode ops --model {model}` there")  # fmt: skip
        g = g.assign(x=g["_shape"].map(x or (lambda sh: sh[axis])))
        return Curve.of(g, power)

    return OperatorCurves(
        device_name, model, dtype, s,
        gemm={layer: curve("gemm", "m", {"layer": layer}) for layer in s.linears},
        attention_decode=curve("attention_decode", None, x=lambda sh: sh["batch"] * sh["context"]),
        attention_prefill=curve("attention_prefill", "context", power=2),
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
        raise UndeterminedError(
            f"{phase}: batches {seqs} do not determine the per-sequence overhead; measure batch 1 and a batch at least 8× larger"
        )
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


def step_ops(c: OperatorCurves, mode: str, batch: int, input_len: int, output_len: int) -> tuple[dict[str, float], int]:
    """(seconds by operator, engine steps) of one measured configuration: a decode step, or a prefill to the first token."""
    if mode == "decode":
        return decode_ops(c, batch, mean_kv_len(input_len, output_len)), 1
    return prefill_ops(c, batch, input_len)
