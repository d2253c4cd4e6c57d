"""The record schema: what a results document (``results/runs/*.json``) must hold, and reading one.

Part of ``core`` (imports nothing above it): ``bench`` writes documents of this schema, the
estimator and the report read them. Schema:
``{"schema_version", "run": {...}, "records": [...]}``; each record is one of the typed models
of ``core/records.py``, parsed by ``parse_record`` on the way in and on the way out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import Enum
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from core.errors import SchemaError
from core.records import KINDS, MODELS, PERCENTILES, Latency, MicrobenchRecord, Mode, Operator, Record, SloBound, Status

SCHEMA_VERSION = 1  # what bench writes
READABLE_VERSIONS = (1,)  # what readers take: every version of the committed runs (a new one adds its reader here)
MODES = tuple(m.value for m in Mode)
STATUSES = tuple(s.value for s in Status)
REQUIRED_RUN_KEYS = ("started_utc", "git_commit", "versions", "device", "model", "engine", "args")


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


@cache
def kinds_of(model: type[Record]) -> dict[str, str]:
    """Every key a record of ``model`` may hold, in field order, with the kind of its value (core/records.py's KINDS,
    or mode, status, operator, latency, slo)."""
    return {f.name: f.metadata["kind"] for f in fields(model)}


@cache
def _nested(model: type[Record]) -> tuple[tuple[str, str], ...]:
    """The fields of ``model`` a table row spreads over several columns: latencies and SLO bounds."""
    return tuple((k, kind) for k, kind in kinds_of(model).items() if kind in ("latency", "slo"))


def table_fields(*models: type[Record], own: bool = False) -> list[str]:
    """The table columns of ``models`` in field order, each once; ``own``: without the fields every record has."""
    base = set(kinds_of(Record)) if own else set()
    names = (f.name for m in models for f in fields(m) if f.metadata.get("table") and f.name not in base)
    return list(dict.fromkeys(names))


def role_fields(role: str, *models: type[Record]) -> tuple[str, ...]:
    """The fields of ``models`` (default: all) with ``role`` ('utilization', 'duration')."""
    chosen = models or tuple(MODELS.values())
    return tuple(dict.fromkeys(f.name for m in chosen for f in fields(m) if f.metadata.get("role") == role))


def flat_fields(*models: type[Record]) -> list[str]:
    """Every column ``table_row`` can give for records of ``models``: the table fields, each latency's percentiles, the
    SLO's bounds."""
    extra = []
    for f in (f for m in models for f in fields(m)):
        if f.metadata.get("kind") == "latency":
            extra += [f"{f.name}_{p}" for p in PERCENTILES]
        elif f.metadata.get("kind") == "slo":
            extra += [f"slo_{b.name}" for b in fields(SloBound)]
    return list(dict.fromkeys(table_fields(*models) + extra))


def table_row(rec: Record, columns: list[str]) -> dict[str, Any]:
    """``rec`` as a table row: ``columns`` (None where its model has no such field; enums as their values), then each
    latency's percentiles as ``<key>_p50`` ... and an SLO bound as ``slo_tpot_ms``, ``slo_ttft_ms``, ``slo_percentile``."""
    row = {c: getattr(rec, c, None) for c in columns}
    row = {c: v.value if isinstance(v, Enum) else v for c, v in row.items()}
    for name, kind in _nested(type(rec)):
        value = getattr(rec, name)
        if kind == "latency" and value is not None:
            row.update({f"{name}_{p}": getattr(value, p) for p in PERCENTILES})
        elif kind == "slo" and value is not None:
            row.update({f"slo_{k}": v for k, v in vars(value).items()})
    return row


ENUMS = {"mode": Mode, "status": Status, "operator": Operator}


def _value(where: str, key: str, kind: str, value: Any) -> Any:
    """``value`` of field ``key`` checked against its kind and turned into its type (enums, latencies, SLO bounds)."""
    if value is None:
        return None
    if kind in ENUMS:
        try:
            return ENUMS[kind](value)
        except ValueError:
            choices = ", ".join(e.value for e in ENUMS[kind])
            raise SchemaError(f"{where}: unknown {key} {value!r}; one of {choices}") from None
    if kind == "latency":
        if not isinstance(value, dict) or set(value) != {"mean", "p50", "p90", "p99"}:
            raise SchemaError(f"{where}: {key} must hold mean, p50, p90, p99")
        return Latency(**value)
    if kind == "slo":
        if not isinstance(value, dict) or set(value) != {"tpot_ms", "ttft_ms", "percentile"}:
            raise SchemaError(f"{where}: {key} must hold tpot_ms, ttft_ms, percentile")
        return SloBound(**value)
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, KINDS[kind]):
        raise SchemaError(f"{where}: {key} must be {'a number' if kind in ('num', 'int', 'rate') else f'a {kind}'}, got {value!r}")
    if kind == "rate" and isinstance(value, str) and value != "inf":
        raise SchemaError(f"{where}: {key} must be a number of requests/s or 'inf', got {value!r}")
    return value


def parse_record(rec: Any, where: str = "record") -> Record:
    """The typed model of one record (its mode's); a SchemaError naming ``where`` for a key the model does not have,
    a key it needs, a value of the wrong kind, a failed record without its error or a suspect one without its reason."""
    if not isinstance(rec, dict):
        raise SchemaError(f"{where} must be an object")
    if rec.get("mode") not in MODES:
        raise SchemaError(f"{where}: unknown mode {rec.get('mode')!r}")
    model = MODELS[Mode(rec["mode"])]
    kinds = kinds_of(model)
    unknown = [k for k in rec if k not in kinds]
    if unknown:
        raise SchemaError(f"{where}: {rec['mode']} records have no {', '.join(map(repr, unknown))} (core/records.py lists their keys)")
    if rec.get("status") not in STATUSES:
        raise SchemaError(f"{where}: status must be one of {', '.join(STATUSES)}")
    for key in model.REQUIRED + (model.REQUIRED_WHEN_OK if rec["status"] == "ok" else ()):
        if key not in rec:
            raise SchemaError(f"{where} lacks {key!r}")
    if rec["status"] == "failed" and not rec.get("error"):
        raise SchemaError(f"{where}: a failed record needs an 'error'")
    if rec["status"] == "suspect" and not rec.get("reason"):
        raise SchemaError(f"{where}: a suspect record needs a 'reason'")
    # a float where a number goes (most values) needs no check: the rest are checked and typed by _value
    record = model(**{k: v if type(v) is float and kinds[k] == "num" else _value(where, k, kinds[k], v) for k, v in rec.items()})
    if isinstance(record, MicrobenchRecord) and record.ok and (record.peak_tflops is None or record.memory_bandwidth_gb_per_s is None):
        raise SchemaError(f"{where}: a microbenchmark needs its matmul peak and copy bandwidth")
    return record


@dataclass(frozen=True)
class RunDocument:
    """One valid results file: its path, the run header (what is common to its records) and the typed records."""

    path: Path
    run: dict[str, Any]
    records: tuple[Record, ...]

    @property
    def microbench(self) -> MicrobenchRecord | None:
        """The run's usable microbenchmark (its measured peaks), if it has one."""
        return next((r for r in self.records if isinstance(r, MicrobenchRecord) and r.ok), None)


def parse_document(doc: Any) -> tuple[dict[str, Any], tuple[Record, ...]]:
    """(the run header, the typed records) of a results document; SchemaError unless it follows the record schema."""
    if not isinstance(doc, dict):
        raise SchemaError("a results document must be a JSON object")
    if doc.get("schema_version") not in READABLE_VERSIONS:
        raise SchemaError(f"schema_version must be {' or '.join(map(str, READABLE_VERSIONS))}")
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
    return run, tuple(parse_record(rec, f"record {i}") for i, rec in enumerate(records))


def validate_document(doc: dict[str, Any]) -> None:
    """Raise ``SchemaError`` unless ``doc`` follows the record schema."""
    parse_document(doc)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read results file {path}: {exc}") from exc


def load_document(path: Path) -> dict[str, Any]:
    """Read and validate one results file (as JSON: what ``--resume`` continues writing)."""
    doc = _read(path)
    validate_document(doc)
    return doc


def read_run_files(results: Path, kind: str | None = None) -> tuple[list[RunDocument], list[str]]:
    """Valid run documents of a runs directory (or that one file) in name order, and the skipped files with why; ``kind``
    ("cpu", "cuda"): only the documents of runs on that kind of device, the others' records left unparsed (a GPU's
    prediction reads no CPU run: nine in ten committed records are the CPU's)."""
    docs: list[RunDocument] = []
    skipped: list[str] = []
    results = Path(results)
    paths = [results] if results.is_file() else sorted(results.glob("*.json"))
    for path in paths:
        stat = path.stat()
        if kind is not None and _device_kind(path, stat.st_mtime_ns, stat.st_size) not in (kind, None):
            continue
        doc = _parsed(path, stat.st_mtime_ns, stat.st_size)
        if isinstance(doc, RunDocument):
            docs.append(doc)
        else:
            skipped.append(f"{path.name}: {doc}")
    return docs, skipped


@lru_cache(maxsize=1024)
def _device_kind(path: Path, mtime_ns: int, size: int) -> str | None:
    """The kind of device a results file's run names (run.device.kind), None where the file does not say (it is then
    parsed, and skipped with why)."""
    try:
        device = _read(path).get("run", {}).get("device", {})
    except (SchemaError, AttributeError):
        return None
    return device.get("kind") if isinstance(device, dict) else None


@lru_cache(maxsize=1024)
def _parsed(path: Path, mtime_ns: int, size: int) -> RunDocument | str:
    """One file's typed document, or why it is none; read once per process while the file is unchanged (estimate
    reads the runs for their records and again for their operator cases)."""
    try:
        return RunDocument(path, *parse_document(_read(path)))
    except SchemaError as exc:
        return str(exc)
