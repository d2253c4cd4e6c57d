"""Measurement records: one JSON document per ``fleetcal bench`` invocation, written atomically.

The schema lives in ``core.schema`` (typed models in ``core.records``), read by every reader; every record is
checked against its model when it is added or changed, so a key a model does not know (or one it needs) fails the
writer's tests instead of a later reader. The file is rewritten after every configuration through a
temporary file and ``os.replace``, so a killed sweep leaves a valid document holding every configuration it finished.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.schema import SCHEMA_VERSION, config_key, parse_record


def safe_name(text: str) -> str:
    """A file-name-safe form of a model or device name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


@dataclass
class RunFile:
    """A results document on disk, kept valid after every added record."""

    path: Path
    run: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "run": self.run, "records": self.records}

    def save(self) -> None:
        """Write the whole document atomically (temporary file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(self.document(), f, indent=1, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def add(self, record: dict[str, Any]) -> None:
        """Append (or replace, by configuration) one record and save at once; a SchemaError where the record does not
        follow its mode's model (core/records.py)."""
        parse_record(record, f"{record.get('mode')} record")
        key = config_key(record)
        self.records = [r for r in self.records if config_key(r) != key]
        self.records.append(record)
        self.save()

    def update(self, record: dict[str, Any], **changes: Any) -> None:
        """Add ``changes`` to a record already in the file (whether an SLO probe met the SLO), checked again, and save."""
        record.update(changes)
        parse_record(record, f"{record.get('mode')} record")
        self.save()

    def done_keys(self) -> set[tuple]:
        """Configurations already measured (suspect ones too: measuring again would not make them plausible)."""
        return {config_key(r) for r in self.records if r.get("status") in ("ok", "suspect")}


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


