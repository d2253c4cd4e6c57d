"""Measured runs as tables: every record of every valid run file, one row each, with its run's context.

One loader for every reader (estimate, predict, backtest, report): a file that fails the schema is
skipped with one stderr line naming it and why, and listed in the report.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UsageError
from core.hardware import match_gpu
from core.identity import device_id, device_label
from core.paths import RESULTS_DIR, runs_dir
from core.records import MEASURED_MODELS, MeasuredRecord, ServeRecord
from core.schema import RunDocument, flat_fields, read_run_files, table_fields, table_row

RECORD_COLUMNS = table_fields(*MEASURED_MODELS)  # every measured record's columns, derived from its typed model


def read_runs(results: Path = RESULTS_DIR, warn: bool = True, kind: str | None = None) -> tuple[list[RunDocument], list[str]]:
    """Valid run documents under ``results`` (the results directory, a runs directory or one run file), and the
    skipped files with why; each skipped file is named on stderr when ``warn``. A missing path is a UsageError.
    ``kind`` ("cpu", "cuda"): only runs on that kind of device (core.schema.read_run_files)."""
    path = runs_dir(results)
    if not path.exists():
        raise UsageError(f"--results {results}: no such directory or file; give the results directory (default results/)")
    docs, skipped = read_run_files(path, kind)
    if warn:
        for line in skipped:
            print(f"fleetcal: skipped run file {line}", file=sys.stderr)
    return docs, skipped


def device_columns(run: dict[str, Any]) -> dict[str, Any]:
    """How tables name a run's device: its name and identity (``device_name``, what runs are grouped by), and for a
    catalogued GPU the catalog entry its datasheet comes from (``catalog_name``, what projections look up)."""
    dev = run["device"]
    gpu = match_gpu(dev["name"]) if dev["kind"] == "cuda" else None
    ident = dev.get("id") or device_id(dev)
    name = f"{gpu.name} [{ident}]" if gpu else device_label(dev)
    return {"device_kind": dev["kind"], "device_id": ident, "device_name": name, "catalog_name": gpu.name if gpu else None}


def load_runs(results: Path = RESULTS_DIR, warn: bool = True) -> pd.DataFrame:
    """Every record of every valid run file under ``results``, one row each, with run context (``load_run_table``)."""
    return load_run_table(results, warn)[0]


@dataclass(frozen=True)
class RunContext:
    """The columns every record of one run shares: its file, device, precision, engine, model and the peaks its
    utilization is measured against (the datasheet's, recorded in the header, and this run's microbenchmark)."""

    run_file: str
    started_utc: str
    device_kind: str
    device_id: str
    device_name: str  # what runs are grouped by: the catalog's name and the device's identity
    catalog_name: str | None  # the catalogued GPU whose datasheet projections look up
    dtype: str
    device_cores: int | None
    engine: str  # compiled engines are fitted and tabled apart from eager ones
    max_num_batched_tokens: int | None
    model: str
    model_key: str
    load_format: str | None
    measured_tflops: float | None
    measured_gb_per_s: float | None
    datasheet_tflops: float | None
    datasheet_gb_per_s: float | None

    @classmethod
    def of(cls, doc: RunDocument) -> RunContext:
        run, micro = doc.run, doc.microbench
        sheet = run.get("datasheet_peaks") or {}  # what the records' mfu and mbu were measured against, recorded once
        eager = run["engine"].get("enforce_eager", True)
        return cls(run_file=doc.path.name, started_utc=run["started_utc"], **device_columns(run),
                   dtype=run["model"].get("dtype", "bfloat16"), device_cores=run["device"].get("cores"),
                   engine=run["engine"]["name"] if eager else f"{run['engine']['name']} compiled",
                   max_num_batched_tokens=run["engine"].get("max_num_batched_tokens"), model=run["model"]["name"],
                   model_key=run["model"].get("catalog_key") or run["model"]["name"], load_format=run["model"].get("load_format"),
                   measured_tflops=micro.peak_tflops if micro else None,
                   measured_gb_per_s=micro.memory_bandwidth_gb_per_s if micro else None,
                   datasheet_tflops=sheet["flops_per_s"] / 1e12 if sheet.get("flops_per_s") else None,
                   datasheet_gb_per_s=sheet["bytes_per_s"] / 1e9 if sheet.get("bytes_per_s") else None)  # fmt: skip


# the run table: its run's context, then its record's columns, then the peak its MFU is against
RUN_TABLE_COLUMNS = [f.name for f in fields(RunContext)] + flat_fields(*MEASURED_MODELS) + ["peak_tflops"]


def run_columns(*names: str) -> list[str]:
    """``names`` as a column list, each checked to be a column of the run table: a selection of it (a table of the
    report, say) that names a field the records no longer have fails where it is defined, not as a column of blanks."""
    unknown = [n for n in names if n not in RUN_TABLE_COLUMNS]
    if unknown:
        raise ValueError(f"not columns of the run table: {', '.join(unknown)} (core/records.py holds the record fields)")
    return list(names)


def load_run_table(results: Path = RESULTS_DIR, warn: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """(every record of every valid run file under ``results``, one row each, with run context; the files skipped, each
    with why). A file that does not follow the schema is skipped and named on stderr (``warn``). Rows are sorted so the
    table does not depend on file-system order."""
    rows: list[dict[str, Any]] = []
    docs, skipped = read_runs(results, warn)
    for doc in docs:
        base = asdict(RunContext.of(doc))
        for rec in doc.records:
            if not isinstance(rec, MeasuredRecord):  # operator cases and microbenchmarks: estimator/operators.py, the context
                continue
            row = {**base, **table_row(rec, RECORD_COLUMNS)}
            # the peak this record's MFU is against: the datasheet's where it has one, else the run's microbenchmark
            row["peak_tflops"] = base["datasheet_tflops"] if rec.mfu is not None else base["measured_tflops"]
            if isinstance(rec, ServeRecord) and rec.request_rate is not None:
                row["request_rate"] = rec.request_rate_per_s  # "inf" in the record: every request sent at once
            rows.append(row)
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=RUN_TABLE_COLUMNS)  # no runs: still every column, empty
    if not df.empty:
        sort_cols = ["device_name", "model", "engine", "mode", "input_len", "output_len", "batch_size", "concurrency", "run_file"]
        df = df.sort_values(sort_cols, na_position="first", kind="mergesort").reset_index(drop=True)
    return df, skipped


