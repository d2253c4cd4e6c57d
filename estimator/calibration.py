"""Calibration: measured prefill and decode records -> a fitted roofline per device and engine.

For each device and engine, prefill and decode are fitted apart:
    time = overhead + max(FLOPs / (c × peak FLOP/s), bytes / (m × peak bytes/s))
with c, m and overhead chosen to minimise the squared relative error over the measured
configurations (a deterministic grid over c and m, the overhead solved in closed form).
Peaks are the datasheet's for catalogued GPUs (so efficiencies transfer to other GPUs) and
the run's own microbenchmarks otherwise (CPUs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.errors import CatalogError
from core.hardware import Peaks
from core.models import get_model
from core.work import decode_step_work, prefill_work
from estimator.pooled_fit import Efficiency, roofline_time

_GRID = np.geomspace(1e-3, 1.0, 121)  # efficiencies up to 100% of the peak they are measured against


@dataclass(frozen=True)
class Point:
    """One measured configuration reduced to the roofline's terms."""

    flops: float
    nbytes: float
    seconds: float
    peaks: Peaks
    label: str


def _base_times(points: list[Point], c: np.ndarray, m: np.ndarray) -> np.ndarray:
    f = np.array([p.flops / p.peaks.flops_per_s for p in points])
    b = np.array([p.nbytes / p.peaks.bytes_per_s for p in points])
    return np.maximum(f[None, None, :] / c[:, None, None], b[None, None, :] / m[None, :, None])


def fit_efficiency(points: list[Point], source: str) -> Efficiency:
    """Least squared relative error fit of (compute, memory, overhead) over ``points``."""
    if not points:
        raise ValueError("no points to fit")
    inv = 1.0 / np.array([p.seconds for p in points])

    def best(cs: np.ndarray, ms: np.ndarray) -> tuple[int, int, float]:
        base = _base_times(points, cs, ms)  # [c, m, point]
        # optimal overhead for each (c, m): minimise sum(((o + base)/t - 1)^2) -> closed form, clipped at 0
        o = np.clip(((1.0 - base * inv) * inv).sum(-1) / (inv**2).sum(), 0.0, None)
        err = (((o[..., None] + base) * inv - 1.0) ** 2).sum(-1)
        i, j = np.unravel_index(np.argmin(err), err.shape)
        return int(i), int(j), float(o[i, j])

    i, j, _ = best(_GRID, _GRID)  # coarse, then a fine grid between the neighbours of the best
    fine_c = np.geomspace(_GRID[max(i - 1, 0)], _GRID[min(i + 1, len(_GRID) - 1)], 81)
    fine_m = np.geomspace(_GRID[max(j - 1, 0)], _GRID[min(j + 1, len(_GRID) - 1)], 81)
    i, j, o = best(fine_c, fine_m)
    return Efficiency(float(fine_c[i]), float(fine_m[j]), o, source)


def predict_point(p: Point, eff: Efficiency) -> float:
    """The roofline's time for one measured configuration."""
    return roofline_time(p.flops, p.nbytes, p.peaks, eff).seconds


def _peaks_of(row: pd.Series) -> Peaks | None:
    """The peaks a record's efficiencies are relative to: the datasheet's (all GPUs of the run), else the run's measured ones."""
    if row["datasheet_tflops"] and not pd.isna(row["datasheet_tflops"]):
        n = row.get("num_gpus", 1)
        return Peaks(row["device_name"], row["datasheet_tflops"] * 1e12 * n, row["datasheet_gb_per_s"] * 1e9 * n)
    if row["measured_tflops"] and not pd.isna(row["measured_tflops"]):
        return Peaks(row["device_name"], row["measured_tflops"] * 1e12, row["measured_gb_per_s"] * 1e9)
    return None


def points_from_runs(df: pd.DataFrame, phase: str) -> list[Point]:
    """Prefill or decode points from successful prefill/decode records."""
    pts: list[Point] = []
    if df.empty:
        return pts
    for _, row in df[(df["status"] == "ok") & (df["mode"] == phase)].iterrows():
        peaks = _peaks_of(row)
        if peaks is None:
            continue
        try:
            spec = get_model(row["model_key"])
        except CatalogError:  # a model whose shape is not known here: its work cannot be counted
            continue
        b, i, o = int(row["batch_size"]), int(row["input_len"]), int(row["output_len"])
        if phase == "decode":
            w = decode_step_work(spec, b, i + o / 2)
            pt = Point(w.flops, w.bytes, row["decode_step_ms"] / 1000, peaks, f"{row['model']} b={b} in={i} out={o}")
        else:
            w = prefill_work(spec, b, i)
            pt = Point(w.flops, w.bytes, row["time_to_first_token_ms"] / 1000, peaks, f"{row['model']} b={b} in={i}")
        pts.append(pt)
    return pts


@dataclass(frozen=True)
class PhaseFit:
    device_name: str
    device_kind: str
    engine: str
    phase: str
    efficiency: Efficiency
    peaks: Peaks
    n_points: int
    fit_mape: float  # mean |relative error| on the points fitted
    heldout_mape: float | None  # leave-one-out mean |relative error|
    residuals: tuple[tuple[str, float, float], ...]  # (label, measured s, predicted s)
    undetermined: tuple[str, ...] = ()  # parameters the data cannot determine, each with why


LOO_SPREAD_LIMIT = 2.0  # a parameter whose leave-one-out fits differ by more than this factor is not determined


def _bites(points: list[Point], eff: Efficiency, name: str) -> bool:
    """Whether both halving and doubling one efficiency change some prediction by more than 1%. When one direction
    changes nothing, the data only bounds the parameter on that side: it does not determine it."""
    value = getattr(eff, name)
    for factor in (0.5, 2.0):
        other = replace(eff, **{name: min(value * factor, 1.0)})
        if not any(abs(predict_point(p, other) / predict_point(p, eff) - 1) > 0.01 for p in points):
            return False
    return True


def undetermined_parameters(points: list[Point], eff: Efficiency, loo: list[Efficiency]) -> tuple[str, ...]:
    """Parameters the data cannot determine: at a bound of the fit, bounding no measured point, or moving by more
    than ``LOO_SPREAD_LIMIT``x when one point is left out."""
    if len(points) < 3:
        return (f"every parameter ({len(points)} points for compute, memory and overhead)",)
    out = []
    for name in ("compute", "memory"):
        value = getattr(eff, name)
        spread = max(getattr(e, name) for e in loo) / min(getattr(e, name) for e in loo) if loo else 1.0
        if value >= _GRID[-1] * 0.999:
            out.append(f"{name} efficiency at its bound of 1.0")
        elif value <= _GRID[0] * 1.001:
            out.append(f"{name} efficiency at its bound of {_GRID[0]}")
        elif not _bites(points, eff, name):
            out.append(f"{name} efficiency (only bounded: no measured point is clearly {name}-bound)")
        elif spread > LOO_SPREAD_LIMIT:
            out.append(f"{name} efficiency moves {spread:.1f}x when one point is left out")
    return tuple(out)


def fit_phase(points: list[Point], device_name: str, device_kind: str, engine: str, phase: str) -> PhaseFit:
    source = f"fitted on {len(points)} {phase} measurements, {engine} on {device_name}"
    eff = fit_efficiency(points, source)
    pred = [predict_point(p, eff) for p in points]
    fit_mape = float(np.mean([abs(q / p.seconds - 1) for p, q in zip(points, pred)]))
    heldout = None
    loo: list[Efficiency] = []
    if len(points) >= 3:
        errs = []
        for k in range(len(points)):
            e = fit_efficiency(points[:k] + points[k + 1 :], source)
            loo.append(e)
            errs.append(abs(predict_point(points[k], e) / points[k].seconds - 1))
        heldout = float(np.mean(errs))
    peaks = Peaks(device_name, float(np.mean([p.peaks.flops_per_s for p in points])), float(np.mean([p.peaks.bytes_per_s for p in points])))
    res = tuple((p.label, round(p.seconds, 6), round(q, 6)) for p, q in zip(points, pred))
    undetermined = undetermined_parameters(points, eff, loo)
    return PhaseFit(device_name, device_kind, engine, phase, eff, peaks, len(points), fit_mape, heldout, res, undetermined)


def calibrate(df: pd.DataFrame) -> list[PhaseFit]:
    """One fit per (device, engine, phase) that has at least two measured configurations."""
    fits: list[PhaseFit] = []
    if df.empty:
        return fits
    for (device, kind, engine), group in df.groupby(["device_name", "device_kind", "engine"], sort=True):
        for phase in ("prefill", "decode"):
            pts = points_from_runs(group, phase)
            if len(pts) >= 2:
                fits.append(fit_phase(pts, device, kind, engine, phase))
    return fits


def calibration_table(fits: list[PhaseFit]) -> pd.DataFrame:
    rows = [
        {
            "device_name": f.device_name, "engine": f.engine, "phase": f.phase, "points": f.n_points,
            "compute_efficiency": round(f.efficiency.compute, 4), "memory_efficiency": round(f.efficiency.memory, 4),
            "overhead_ms": round(f.efficiency.overhead_s * 1000, 3), "peak_tflops": round(f.peaks.flops_per_s / 1e12, 3),
            "peak_gb_per_s": round(f.peaks.bytes_per_s / 1e9, 1), "fit_mean_abs_error": round(f.fit_mape, 4),
            "heldout_mean_abs_error": None if f.heldout_mape is None else round(f.heldout_mape, 4),
            "undetermined": "; ".join(f.undetermined),
        }
        for f in fits
    ]  # fmt: skip
    return pd.DataFrame(rows)


def residuals_table(fits: list[PhaseFit]) -> pd.DataFrame:
    """Every fitted configuration: measured and predicted time (ms), per device, engine and phase."""
    rows = [
        {
            "device_name": f.device_name,
            "engine": f.engine,
            "phase": f.phase,
            "configuration": lbl,
            "measured_ms": m * 1000,
            "predicted_ms": p * 1000,
        }
        for f in fits
        for lbl, m, p in f.residuals
    ]
    return pd.DataFrame(rows)
