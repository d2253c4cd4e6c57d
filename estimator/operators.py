"""Operator measurements (``fleetcal bench --mode ops``) as tables: what each operator reaches per device and precision.

Efficiency is against the datasheet peak of the operator's own precision (FLOP/s for GEMMs and
prefill attention, bytes/s for decode attention, norms, sampling and copies) where the device is
catalogued, and against the run's own microbenchmark otherwise. Where one operator at one shape
was timed by several implementations or runs, the fastest counts: it is what the device can do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from core.hardware import gpu_catalog
from core.paths import RESULTS_DIR
from core.records import MEMORY_BOUND, OpsRecord
from core.schema import table_fields, table_row
from estimator.runs import device_columns, read_runs

OPS_FIELDS = table_fields(OpsRecord, own=True)  # an operator case's own columns (core/records.py's OpsRecord)
OPS_COLUMNS = ["device_name", "device_id", "catalog_name", "model", *OPS_FIELDS, "m", "run_file"]  # with its device, rows M, file


def load_ops(results: Path = RESULTS_DIR, warn: bool = True, kind: str | None = None) -> pd.DataFrame:
    """Every successful operator record, one row each, with the device it ran on; ``kind`` ("cpu", "cuda"): of runs on
    that kind of device only."""
    rows = []
    docs, _ = read_runs(results, warn, kind)  # warn=False where load_runs has named the skipped files already
    for doc in docs:
        dev = device_columns(doc.run)
        for rec in doc.records:
            if not isinstance(rec, OpsRecord) or not rec.ok:
                continue
            row = {**dev, "model": doc.run["model"]["name"], "run_file": doc.path.name, **table_row(rec, OPS_FIELDS)}
            row["shape"] = json.dumps(rec.shape, sort_keys=True)
            row["m"] = rec.m
            rows.append(row)
    df = pd.DataFrame(rows, columns=OPS_COLUMNS)
    # bandwidth does not depend on precision: a memory-bound operator timed in a precision without a datasheet
    # peak (fp32 copies, sampling) still has a datasheet bandwidth on a catalogued GPU
    catalogued = {g.name: g.bandwidth_gb_per_s for g in gpu_catalog().values()}
    bw = df["catalog_name"].map(catalogued)
    df["mbu"] = df["mbu"].where(df["mbu"].notna() | bw.isna(), (df["gb_per_s"] / bw).round(5))
    return df.sort_values(["device_name", "model", "operator", "dtype", "shape", "run_file"], kind="mergesort").reset_index(drop=True)


def _best(ops: pd.DataFrame) -> pd.DataFrame:
    """The fastest measurement of each (device, model, operator, precision, shape)."""
    if ops.empty:
        return ops
    return (
        ops.sort_values("time_ms", kind="mergesort").groupby(["device_name", "model", "operator", "dtype", "shape"], as_index=False).first()
    )


def operator_table(ops: pd.DataFrame) -> pd.DataFrame:
    """Per device, model, operator and precision: shapes timed, the best rate and its efficiency."""
    best = _best(ops)
    if best.empty:
        return pd.DataFrame(
            columns=["device_name", "model", "operator", "dtype", "shapes", "best_tflops", "best_gb_per_s", "efficiency", "of", "at"]
        )
    # without a datasheet the reference is this run's one-size microbenchmark, which an operator at a cache-friendly
    # shape can beat: then the reference is the best rate measured on the device in that precision, so no share exceeds 1
    best["_memory"] = best["operator"].isin(MEMORY_BOUND)
    best["_measured"] = best["mbu_measured_peak"].where(best["_memory"], best["mfu_measured_peak"])
    ceiling = best.groupby(["device_name", "dtype", "_memory"])["_measured"].transform("max").clip(lower=1.0)
    best["_measured"] = best["_measured"] / ceiling
    best["_beaten"] = ceiling > 1.0
    rows = []
    for (dev, model, op, dtype), g in best.groupby(["device_name", "model", "operator", "dtype"], sort=True):
        memory = op in MEMORY_BOUND
        top = g.loc[(g["gb_per_s"] if memory else g["tflops"]).idxmax()]
        datasheet = top["mbu"] if memory else top["mfu"]
        reference = "best rate measured on this device" if top["_beaten"] else "microbenchmark"
        eff, of = (datasheet, "datasheet") if pd.notna(datasheet) else (top["_measured"], reference)
        rows.append({"device_name": dev, "model": model, "operator": op, "dtype": dtype, "shapes": len(g),
                     "best_tflops": top["tflops"], "best_gb_per_s": top["gb_per_s"], "efficiency": eff,
                     "of": f"{of} {'bandwidth' if memory else 'FLOP/s'}" if pd.notna(eff) else "", "at": top["shape"]})  # fmt: skip
    return pd.DataFrame(rows)


def gemm_curve(ops: pd.DataFrame) -> pd.DataFrame:
    """GEMM efficiency against tokens M per device and precision: the median over the model's layers at each M.

    The curve a per-operator step-time model needs: small M is bound by reading the weights, large M
    by the matrix units. Efficiency here is against the datasheet FLOP/s where catalogued (``mfu``),
    with the matching bandwidth efficiency (``mbu``) beside it.
    """
    best = _best(ops)
    if best.empty:
        return pd.DataFrame(
            columns=["device_name", "model", "operator", "dtype", "m", "layers", "tflops_median", "mfu_median", "mbu_median"]
        )
    g = best[best["operator"].isin(["gemm", "grouped_gemm"])]
    out = g.groupby(["device_name", "model", "operator", "dtype", "m"], as_index=False).agg(
        layers=("shape", "count"), tflops_median=("tflops", "median"), mfu_median=("mfu", "median"), mbu_median=("mbu", "median"),
        gb_per_s_median=("gb_per_s", "median"),
    )  # fmt: skip
    return out.sort_values(["device_name", "model", "operator", "dtype", "m"], kind="mergesort").reset_index(drop=True)
