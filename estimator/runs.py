"""Measured runs as tables: every record of every valid run file, one row each, with its run's context.

One loader for every reader (estimate, predict, backtest, report): a file that fails the schema is
skipped with one stderr line naming it and why, and listed in the report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UsageError
from core.hardware import match_gpu
from core.identity import device_id, device_label
from core.paths import RESULTS_DIR, runs_dir
from core.schema import read_run_files

RECORD_COLUMNS = [
    "mode", "status", "batch_size", "concurrency", "input_len", "output_len", "num_prompts",
    "output_tokens_per_s", "total_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s",
    "decode_step_ms", "time_to_first_token_ms", "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak",
    "output_tokens_per_s_per_user", "interactivity_tokens_per_s", "completed", "failed", "num_gpus", "error", "reason",
    "joules_per_output_token", "joules_per_prefill_token", "power_w_mean", "energy_window",
    "request_rate", "burstiness", "steady_output_tokens_per_s", "goodput_requests_per_s", "slo_met", "search_step", "repeat",
    "workload", "prefix_cache_hit_rate", "mean_prompt_tokens", "mean_output_tokens", "unsent_over_budget", "model_tflops_per_s",
]  # fmt: skip



def read_runs(results: Path = RESULTS_DIR, warn: bool = True) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Valid run documents under ``results`` (the results directory, a runs directory or one run file), and the
    skipped files with why; each skipped file is named on stderr when ``warn``. A missing path is a UsageError."""
    path = runs_dir(results)
    if not path.exists():
        raise UsageError(f"--results {results}: no such directory or file; give the results directory (default results/)")
    docs, skipped = read_run_files(path)
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


def load_run_table(results: Path = RESULTS_DIR, warn: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """(every record of every valid run file under ``results``, one row each, with run context; the files skipped, each
    with why). A file that does not follow the schema is skipped and named on stderr (``warn``). Rows are sorted so the
    table does not depend on file-system order."""
    rows: list[dict[str, Any]] = []
    docs, skipped = read_runs(results, warn)
    for path, doc in docs:
        run = doc["run"]
        micro = next((r for r in doc["records"] if r["mode"] == "microbench" and r["status"] == "ok"), None)
        cols = device_columns(run)
        sheet = run.get("datasheet_peaks") or {}  # what the records' mfu and mbu were measured against, recorded once
        eager = run["engine"].get("enforce_eager", True)
        base = {
            "run_file": path.name,
            "started_utc": run["started_utc"],
            **cols,
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
            "datasheet_tflops": sheet["flops_per_s"] / 1e12 if sheet.get("flops_per_s") else None,
            "datasheet_gb_per_s": sheet["bytes_per_s"] / 1e9 if sheet.get("bytes_per_s") else None,
        }
        for rec in doc["records"]:
            if rec["mode"] in ("microbench", "ops"):
                continue
            row = {**base, **{c: rec.get(c) for c in RECORD_COLUMNS}}
            # the peak this record's MFU is against: the datasheet's where it has one, else the run's microbenchmark
            row["peak_tflops"] = base["datasheet_tflops"] if rec.get("mfu") is not None else base["measured_tflops"]
            for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
                if isinstance(rec.get(key), dict):
                    row[f"{key}_p50"] = rec[key]["p50"]
                    row[f"{key}_p90"] = rec[key]["p90"]
                    row[f"{key}_p99"] = rec[key]["p99"]
            if isinstance(rec.get("slo"), dict):
                row.update({f"slo_{k}": v for k, v in rec["slo"].items()})  # slo_tpot_ms, slo_ttft_ms, slo_percentile
            if rec.get("request_rate") == "inf":
                row["request_rate"] = float("inf")
            rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        sort_cols = ["device_name", "model", "engine", "mode", "input_len", "output_len", "batch_size", "concurrency", "run_file"]
        df = df.sort_values(sort_cols, na_position="first", kind="mergesort").reset_index(drop=True)
    return df, skipped


