"""The record schema: what a results document (``results/runs/*.json``) must hold, and reading one.

Part of ``core`` (imports nothing above it): ``bench`` writes documents of this schema, the
estimator and the report read them. Schema:
``{"schema_version", "run": {...}, "records": [...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import SchemaError

SCHEMA_VERSION = 1
MODES = ("throughput", "prefill", "decode", "serve", "microbench", "ops")
STATUSES = ("ok", "failed", "suspect")  # suspect: kept with its raw figures and a reason, never used
REQUIRED_RUN_KEYS = ("started_utc", "git_commit", "versions", "device", "model", "engine", "args")
REQUIRED_RECORD_KEYS = ("mode", "status", "input_len", "output_len", "num_prompts")
LATENCY_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")



def config_key(record: dict[str, Any]) -> tuple:
    """Identity of a measured configuration, used by ``--resume`` to find what is missing."""
    return (
        record.get("mode"),
        record.get("batch_size"),
        record.get("concurrency"),
        record.get("input_len"),
        record.get("output_len"),
        record.get("operator"),
        json.dumps(record.get("shape"), sort_keys=True) if record.get("shape") is not None else None,
        record.get("dtype") if record.get("mode") == "ops" else None,
        record.get("request_rate"),
        record.get("repeat"),
    )



def validate_document(doc: dict[str, Any]) -> None:
    """Raise ``SchemaError`` unless ``doc`` follows the record schema."""
    if not isinstance(doc, dict):
        raise SchemaError("a results document must be a JSON object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(f"schema_version must be {SCHEMA_VERSION}")
    run = doc.get("run")
    if not isinstance(run, dict):
        raise SchemaError("'run' must be an object")
    for key in REQUIRED_RUN_KEYS:
        if key not in run:
            raise SchemaError(f"run lacks {key!r}")
    if not isinstance(run["device"], dict) or run["device"].get("kind") not in ("cpu", "cuda"):
        raise SchemaError("run.device.kind must be 'cpu' or 'cuda'")
    records = doc.get("records")
    if not isinstance(records, list):
        raise SchemaError("'records' must be a list")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise SchemaError(f"record {i} must be an object")
        for key in REQUIRED_RECORD_KEYS:
            if key not in rec:
                raise SchemaError(f"record {i} lacks {key!r}")
        if rec["mode"] not in MODES:
            raise SchemaError(f"record {i}: unknown mode {rec['mode']!r}")
        if rec["status"] not in STATUSES:
            raise SchemaError(f"record {i}: status must be one of {', '.join(STATUSES)}")
        if rec["status"] == "failed" and not rec.get("error"):
            raise SchemaError(f"record {i}: a failed record needs an 'error'")
        if rec["status"] == "suspect" and not rec.get("reason"):
            raise SchemaError(f"record {i}: a suspect record needs a 'reason'")
        if rec["status"] == "ok" and rec["mode"] not in ("microbench", "ops"):
            for key in ("output_tokens_per_s", "total_tokens_per_s", "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak"):
                if key not in rec:
                    raise SchemaError(f"record {i} lacks {key!r}")
        if rec["mode"] == "serve" and rec["status"] == "ok":
            for key in LATENCY_KEYS:
                stats = rec.get(key)
                if not isinstance(stats, dict) or set(stats) != {"mean", "p50", "p90", "p99"}:
                    raise SchemaError(f"record {i}: {key} must hold mean, p50, p90, p99")


def load_document(path: Path) -> dict[str, Any]:
    """Read and validate one results file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read results file {path}: {exc}") from exc
    validate_document(doc)
    return doc


def read_run_files(results: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Valid run documents of a runs directory (or that one file) in name order, and the skipped files with why."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    results = Path(results)
    paths = [results] if results.is_file() else sorted(results.glob("*.json"))
    for path in paths:
        try:
            docs.append((path, load_document(path)))
        except SchemaError as exc:
            skipped.append(f"{path.name}: {exc}")
    return docs, skipped
