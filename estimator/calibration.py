"""Calibration: measured records -> a table of runs, their MFU/MBU, and a fitted roofline.

For each device and engine, prefill and decode are fitted apart:
    time = overhead + max(FLOPs / (c × peak FLOP/s), bytes / (m × peak bytes/s))
with c, m and overhead chosen to minimise the squared relative error over the measured
configurations (a deterministic grid over c and m, the overhead solved in closed form).
Peaks are the datasheet's for catalogued GPUs (so efficiencies transfer to other GPUs) and
the run's own microbenchmarks otherwise (CPUs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import SchemaError, validate_document
from estimator.hardware import match_gpu
from estimator.models import get_model
from estimator.roofline import Efficiency, Peaks
from estimator.work import decode_step_work, prefill_work
from fleetcal.identity import device_id, device_label

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "runs"
ARTICLE_UTILIZATION = 0.5
_GRID = np.geomspace(1e-3, 1.0, 121)  # efficiencies up to 100% of the peak they are measured against

RECORD_COLUMNS = [
    "mode", "status", "batch_size", "concurrency", "input_len", "output_len", "num_prompts",
    "output_tokens_per_s", "total_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s",
    "decode_step_ms", "time_to_first_token_ms", "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak",
    "output_tokens_per_s_per_user", "interactivity_tokens_per_s", "completed", "failed", "num_gpus", "error", "reason",
    "joules_per_output_token", "joules_per_prefill_token", "power_w_mean", "energy_window",
]  # fmt: skip


def read_run_files(results_dir: Path = RESULTS_DIR) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Valid run documents of ``results_dir`` (or that one file) in name order, and the skipped files with why."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    results_dir = Path(results_dir)
    paths = [results_dir] if results_dir.is_file() else sorted(results_dir.glob("*.json"))
    for path in paths:
        try:
            doc = json.loads(path.read_text())
            validate_document(doc)
        except (OSError, json.JSONDecodeError, SchemaError) as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        docs.append((path, doc))
    return docs, skipped


def device_columns(run: dict[str, Any]) -> dict[str, Any]:
    """How tables name a run's device: its name and identity (``device_name``, what runs are grouped by), and for a
    catalogued GPU the catalog entry its datasheet comes from (``catalog_name``, what projections look up)."""
    dev = run["device"]
    gpu = match_gpu(dev["name"]) if dev["kind"] == "cuda" else None
    ident = dev.get("id") or device_id(dev)
    name = f"{gpu.name} [{ident}]" if gpu else device_label(dev)
    return {"device_kind": dev["kind"], "device_id": ident, "device_name": name, "catalog_name": gpu.name if gpu else None}


def load_runs(results_dir: Path = RESULTS_DIR) -> pd.DataFrame:
    """Every record of every valid run file in ``results_dir`` (or of that one file), one row each, with run context.

    Files that do not follow the schema are skipped (named in the ``skipped`` attribute).
    Rows are sorted so the table does not depend on file-system order.
    """
    rows: list[dict[str, Any]] = []
    docs, skipped = read_run_files(results_dir)
    for path, doc in docs:
        run = doc["run"]
        micro = next((r for r in doc["records"] if r["mode"] == "microbench" and r["status"] == "ok"), None)
        dev = run["device"]
        gpu = match_gpu(dev["name"]) if dev["kind"] == "cuda" else None
        eager = run["engine"].get("enforce_eager", True)
        base = {
            "run_file": path.name,
            "started_utc": run["started_utc"],
            **device_columns(run),
            "dtype": run["model"].get("dtype", "bfloat16"),
            "device_cores": run["device"].get("cores"),
            # compiled engines are fitted and tabled apart from eager ones
            "engine": run["engine"]["name"] if eager else f"{run['engine']['name']} compiled",
            "max_num_batched_tokens": run["engine"].get("max_num_batched_tokens"),
            "model": run["model"]["name"],
            "model_key": run["model"].get("catalog_key") or run["model"]["name"],
            "load_format": run["model"].get("load_format"),
            "measured_tflops": micro.get("matmul_tflops", micro.get("matmul_bf16_tflops")) if micro else None,
            "measured_gb_per_s": micro["memory_bandwidth_gb_per_s"] if micro else None,
            "datasheet_tflops": gpu.peak_flops_per_s("bf16") / 1e12 if gpu else None,
            "datasheet_gb_per_s": gpu.bandwidth_gb_per_s if gpu else None,
        }
        for rec in doc["records"]:
            if rec["mode"] in ("microbench", "ops"):
                continue
            row = {**base, **{c: rec.get(c) for c in RECORD_COLUMNS}}
            for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
                if isinstance(rec.get(key), dict):
                    row[f"{key}_p50"] = rec[key]["p50"]
                    row[f"{key}_p99"] = rec[key]["p99"]
            rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        sort_cols = ["device_name", "model", "engine", "mode", "input_len", "output_len", "batch_size", "concurrency", "run_file"]
        df = df.sort_values(sort_cols, na_position="first", kind="mergesort").reset_index(drop=True)
    df.attrs["skipped"] = skipped
    return df


def utilization_table(df: pd.DataFrame) -> pd.DataFrame:
    """Measured MFU and MBU per device, model, engine, mode and size, beside the article's 50%.

    ``tokens_per_s`` is prefill tokens/s for prefill records, decode tokens/s for decode records
    and output tokens/s otherwise.
    """
    if df.empty:
        return pd.DataFrame()
    ok = df[(df["status"] == "ok")].copy()
    ok["size"] = ok["batch_size"].fillna(ok["concurrency"]).astype(int)
    ok["mfu_used"] = ok["mfu"].fillna(ok["mfu_measured_peak"])
    ok["mbu_used"] = ok["mbu"].fillna(ok["mbu_measured_peak"])
    ok["peak"] = np.where(ok["mfu"].notna(), "datasheet", "measured")
    # the rate each mode is about: prefill tokens/s, decode tokens/s, else output tokens/s
    ok["tokens_per_s"] = ok["prefill_tokens_per_s"].where(ok["mode"] == "prefill", ok["decode_tokens_per_s"].where(ok["mode"] == "decode", ok["output_tokens_per_s"]))
    ok["article_utilization"] = ARTICLE_UTILIZATION
    ok["mfu_vs_article"] = ok["mfu_used"] / ARTICLE_UTILIZATION
    cols = ["device_name", "model", "engine", "mode", "size", "input_len", "output_len", "tokens_per_s",
            "mfu_used", "mbu_used", "peak", "article_utilization", "mfu_vs_article"]  # fmt: skip
    return ok[cols].rename(columns={"mfu_used": "mfu", "mbu_used": "mbu"}).reset_index(drop=True)


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One measured configuration reduced to the roofline's terms."""

    flops: float
    nbytes: float
    seconds: float
    peak_flops_per_s: float
    peak_bytes_per_s: float
    label: str


def _base_times(points: list[Point], c: np.ndarray, m: np.ndarray) -> np.ndarray:
    f = np.array([p.flops / p.peak_flops_per_s for p in points])
    b = np.array([p.nbytes / p.peak_bytes_per_s for p in points])
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
    return eff.overhead_s + max(p.flops / (eff.compute * p.peak_flops_per_s), p.nbytes / (eff.memory * p.peak_bytes_per_s))


def _peaks_of(row: pd.Series) -> tuple[float, float] | None:
    if row["datasheet_tflops"] and not pd.isna(row["datasheet_tflops"]):
        return row["datasheet_tflops"] * 1e12 * row.get("num_gpus", 1), row["datasheet_gb_per_s"] * 1e9 * row.get("num_gpus", 1)
    if row["measured_tflops"] and not pd.isna(row["measured_tflops"]):
        return row["measured_tflops"] * 1e12, row["measured_gb_per_s"] * 1e9
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
        except ValueError:
            continue
        b, i, o = int(row["batch_size"]), int(row["input_len"]), int(row["output_len"])
        if phase == "decode":
            w = decode_step_work(spec, b, i + o / 2)
            pt = Point(w.flops, w.bytes, row["decode_step_ms"] / 1000, *peaks, f"{row['model']} b={b} in={i} out={o}")
        else:
            w = prefill_work(spec, b, i)
            pt = Point(w.flops, w.bytes, row["time_to_first_token_ms"] / 1000, *peaks, f"{row['model']} b={b} in={i}")
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
    peaks = Peaks(device_name, float(np.mean([p.peak_flops_per_s for p in points])), float(np.mean([p.peak_bytes_per_s for p in points])))
    res = tuple((p.label, round(p.seconds, 6), round(q, 6)) for p, q in zip(points, pred))
    return PhaseFit(device_name, device_kind, engine, phase, eff, peaks, len(points), fit_mape, heldout, res, undetermined_parameters(points, eff, loo))


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


def measured_utilization(df: pd.DataFrame, prefer_kind: str = "cuda") -> dict[str, Any] | None:
    """The best MFU any throughput or serve run reached: what replaces the article's 50%.

    GPU runs (against datasheet peaks) are preferred; CPU runs count against their measured peaks.
    """
    if df.empty:
        return None
    ok = df[(df["status"] == "ok") & df["mode"].isin(["throughput", "serve"])].copy()
    if ok.empty:
        return None
    ok["mfu_used"] = ok["mfu"].fillna(ok["mfu_measured_peak"])
    ok = ok[ok["mfu_used"].notna() & (ok["mfu_used"] <= 1.0)]  # above 1: the peak it was measured against was wrong
    if ok.empty:
        return None
    preferred = ok[ok["device_kind"] == prefer_kind]
    pool = preferred if not preferred.empty else ok
    row = pool.sort_values(["mfu_used", "run_file"], ascending=[False, True]).iloc[0]
    size = row["batch_size"] if not pd.isna(row["batch_size"]) else row["concurrency"]
    return {
        "utilization": float(row["mfu_used"]),
        "device_name": row["device_name"],
        "device_kind": row["device_kind"],
        "model": row["model"],
        "engine": row["engine"],
        "mode": row["mode"],
        "size": int(size),
        "against": "datasheet peak" if not pd.isna(row["mfu"]) else "measured peak",
    }
