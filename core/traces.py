"""Production request traces: arrival times, prompt and reply lengths, and (Mooncake) the prompt's block hashes.

Two formats are read, each as its publisher wrote it (gzip-compressed or not):
- Azure LLM inference trace 2023 (CSV): ``TIMESTAMP`` (wall clock), ``ContextTokens``, ``GeneratedTokens``.
- Mooncake FAST'25 traces (JSON lines): ``timestamp`` (ms from the start), ``input_length``, ``output_length`` and
  optionally ``hash_ids``, one id per 512-token block of the prompt (equal ids: equal prefix blocks).

The two conversation traces are bundled in ``core/data/traces/`` with their licences and attribution (README.md there) and
are named ``azure-conv`` and ``mooncake-conv``. A file that cannot be read as a trace is refused in one line naming it.
Part of ``core`` (imports nothing above it).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UsageError
from core.paths import DATA_DIR

TRACE_DIR = DATA_DIR / "traces"
BUNDLED = {
    "azure-conv": TRACE_DIR / "azure_llm_2023_conv.csv.gz",  # CC-BY 4.0, Azure/AzurePublicDataset (Patel et al., ISCA 2024)
    "mooncake-conv": TRACE_DIR / "mooncake_fast25_conversation.jsonl.gz",  # Apache-2.0, kvcache-ai/Mooncake (Qin et al., FAST 2025)
}
MOONCAKE_BLOCK_TOKENS = 512  # tokens per hash id: Mooncake FAST25-release/README.md ("block size 512")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")


@dataclass(frozen=True)
class Trace:
    """One trace's requests in arrival order."""

    name: str
    arrival_s: np.ndarray  # seconds from the first request, non-decreasing
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: tuple[tuple[int, ...], ...] | None = None  # per request, one id per hash block of its prompt
    hash_block_tokens: int = MOONCAKE_BLOCK_TOKENS

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def hash_unit_tokens(self) -> int:
        """Prompt tokens per hash id, the unit the simulated prefix cache hashes; 0 when the trace carries no hash ids."""
        return self.hash_block_tokens if self.hash_ids is not None else 0

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate: (requests - 1) over the span between the first and the last arrival."""
        return (len(self.arrival_s) - 1) / self.span_s if self.span_s > 0 else float("inf")


def trace_path(name_or_path: str | Path) -> Path:
    """A bundled trace's file by name, or the path given."""
    return BUNDLED.get(str(name_or_path), Path(name_or_path))


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise UsageError(f"trace {path}: cannot be read ({type(exc).__name__}: {exc})") from None


def _numbers(path: Path, values: list, what: str) -> np.ndarray:
    """The column as floats; a value that is not a number is refused, naming its request."""
    try:
        return np.array([float(v) for v in values])
    except (TypeError, ValueError):
        bad = next(i for i, v in enumerate(values) if not _is_number(v))
        raise UsageError(f"trace {path}: {what} of request {bad + 1} is {values[bad]!r}, not a number") from None


def _lengths(path: Path, values: list, what: str) -> np.ndarray:
    arr = _numbers(path, values, what)
    wrong = ~np.isfinite(arr) | (arr < 1) | (arr != np.round(arr))
    if np.any(wrong):
        bad = int(np.flatnonzero(wrong)[0])
        raise UsageError(f"trace {path}: {what} of request {bad + 1} is {values[bad]!r}, not a whole number of tokens >= 1")
    return arr.astype(np.int64)


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _arrivals(path: Path, t: np.ndarray) -> np.ndarray:
    """Seconds from the first request; timestamps must be non-negative and non-decreasing."""
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        bad = int(np.flatnonzero(~np.isfinite(t) | (t < 0))[0])
        raise UsageError(f"trace {path}: timestamp of request {bad + 1} is negative or not finite")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        raise UsageError(f"trace {path}: timestamps go back in time at request {int(back[0]) + 2}; a trace must be in arrival order")
    return t - t[0]


def _azure(path: Path, text: str) -> Trace:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise UsageError(f"trace {path}: empty, no requests")
    missing = [c for c in AZURE_COLUMNS if c not in rows[0]]
    if missing:
        raise UsageError(f"trace {path}: missing column(s) {', '.join(missing)} (an Azure trace has {', '.join(AZURE_COLUMNS)})")
    try:
        stamps = np.array([r["TIMESTAMP"].strip().replace(" ", "T") for r in rows], dtype="datetime64[ns]")
    except ValueError as exc:
        raise UsageError(f"trace {path}: a TIMESTAMP is not a date and time ({exc})") from None
    t = _arrivals(path, (stamps - np.datetime64("1970-01-01T00:00:00", "ns")).astype(np.int64) / 1e9)
    return Trace(path.name, t, _lengths(path, [r["ContextTokens"] for r in rows], "ContextTokens"),
                 _lengths(path, [r["GeneratedTokens"] for r in rows], "GeneratedTokens"))  # fmt: skip


def _mooncake(path: Path, text: str) -> Trace:
    rows = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UsageError(f"trace {path}: line {i + 1} is not JSON") from None
    missing = [k for k in MOONCAKE_KEYS if not all(isinstance(r, dict) and k in r for r in rows)]
    if missing:
        raise UsageError(f"trace {path}: missing key(s) {', '.join(missing)} (a Mooncake trace has {', '.join(MOONCAKE_KEYS)} per line)")
    t = _arrivals(path, _numbers(path, [r["timestamp"] for r in rows], "timestamp") / 1000.0)
    hashes = tuple(tuple(int(h) for h in r["hash_ids"]) for r in rows) if all("hash_ids" in r for r in rows) else None
    return Trace(path.name, t, _lengths(path, [r["input_length"] for r in rows], "input_length"),
                 _lengths(path, [r["output_length"] for r in rows], "output_length"), hashes)  # fmt: skip


def load_trace(name_or_path: str | Path) -> Trace:
    """Read a trace (a bundled name or a file); a bad file is a UsageError naming it and what is wrong."""
    path = trace_path(name_or_path)
    if not path.is_file():
        raise UsageError(f"trace {name_or_path}: no such file (bundled traces: {', '.join(BUNDLED)})")
    text = _text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first:
        raise UsageError(f"trace {path}: empty, no requests")
    trace = _mooncake(path, text) if first.lstrip().startswith("{") else _azure(path, text)
    if len(trace.arrival_s) == 0:
        raise UsageError(f"trace {path}: empty, no requests")
    return trace


def scaled_arrivals(trace: Trace, rate_per_s: float | None, n: int) -> np.ndarray:
    """The first ``n`` arrival times (s from the first), scaled so that their own mean rate ((n - 1) over the span from the
    first to the last of them; a trace's rate drifts over its hours) becomes ``rate_per_s`` (as recorded when None): when
    a replay at that rate sends each request, for the serving client and the simulator alike."""
    t = trace.arrival_s[: min(n, len(trace.arrival_s))]
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    scale = (len(t) - 1) / span / rate_per_s if rate_per_s is not None and span > 0 else 1.0
    return t * scale
