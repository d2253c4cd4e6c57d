"""Serving workloads: what each request of a serve configuration asks for, and the record of it.

- **random** (default): prompts of random token ids, exactly ``input_len`` long, outputs forced to
  ``output_len`` (EOS ignored). With ``range_ratio`` r, both lengths are drawn uniformly from the
  integers in [L(1 - r), L(1 + r)], vLLM's ``--random-range-ratio``.
- **shared prefix**: the first round(``prefix_fraction`` x ``input_len``) tokens of every prompt are the
  same; with prefix caching on, the server can reuse their KV cache, so ``prefix_fraction`` is the
  target cache-hit fraction. What the server achieved is read from its Prometheus counters
  (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``, in tokens) before and after the
  measured requests. vLLM caches whole blocks only (128 tokens on the CPU, 16 on a GPU), so a prefix
  shorter than a block gets no hits.
- **dataset**: prompts (text) from a file, vLLM's two formats: JSONL with a ``"prompt"`` and optionally
  ``"output_tokens"`` per line (its custom dataset), or ShareGPT (a JSON list, or JSONL, of
  ``{"conversations": [{"value": prompt}, {"value": reply}, ...]}``). A request's output length is its
  ``output_tokens`` or its reply's token count, else ``--output-lens``. Prompts are drawn in a seeded
  order, cycling when more requests than entries are needed.
- **trace**: a request trace's lengths and arrival times (core/traces.py: Azure's CSV or Mooncake's JSON lines, the two
  bundled by name), which carry no text: the i-th request's prompt is random token ids of the trace's i-th prompt length,
  its reply forced to the trace's i-th reply length (EOS ignored), as vLLM's benchmarks replay length-only traces. It is
  sent at the trace's i-th arrival time scaled so that the trace's mean rate becomes the configuration's rate
  (core/traces.scaled_arrivals, what the simulator replays), or (``trace_arrivals`` gamma) at vLLM's gamma arrivals of that
  rate. The first ``n`` requests of the trace are replayed; one longer than ``max_len`` (the engine's context) is not
  sent, the others keep their times. Warm-up requests take the lengths of the trace's last requests.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.bench_serve import arrival_offsets
from core.errors import UsageError
from core.traces import Trace, scaled_arrivals

TRACE_ARRIVALS = ("recorded", "gamma")


@dataclass(frozen=True)
class Request:
    prompt: list[int] | str  # token ids, or text the server tokenizes
    prompt_len: int  # tokens, as this workload's tokenizer counts them
    output_len: int


@dataclass(frozen=True)
class Entry:
    """One usable prompt of a dataset file."""

    text: str
    prompt_len: int
    output_len: int  # the file's, else --output-lens


@dataclass(frozen=True)
class Dataset:
    path: str
    sha256: str
    entries: tuple[Entry, ...]
    skipped_too_long: int  # entries longer than the context, left out

    @property
    def mean_prompt_len(self) -> float:
        return round(sum(e.prompt_len for e in self.entries) / len(self.entries), 1)

    @property
    def mean_output_len(self) -> float:
        return round(sum(e.output_len for e in self.entries) / len(self.entries), 1)


def _prompt_and_reply(obj: Any, where: str) -> tuple[str, str | int | None]:
    """The prompt and the reply (text) or the output length (int) of one entry, in either format."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    if "conversations" in obj:
        turns = obj["conversations"]
        if not (isinstance(turns, list) and turns and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns)):
            raise ValueError(f'{where}: "conversations" must be a list of {{"value": text}} turns')
        return turns[0]["value"], turns[1]["value"] if len(turns) > 1 else None
    if not isinstance(obj.get("prompt"), str):
        raise ValueError(f'{where}: no "prompt" text and no "conversations" (use vLLM\'s custom JSONL or ShareGPT format)')
    out = obj.get("output_tokens")
    if out is not None and not (isinstance(out, int) and out > 0):
        raise ValueError(f'{where}: "output_tokens" must be a positive whole number')
    return obj["prompt"], out


def _raw_entries(text: str) -> list[tuple[str, str | int | None]]:
    """Every entry of a dataset file's text, or a ValueError naming the line (JSONL) or the entry (a JSON list)."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {exc.lineno}: not valid JSON ({exc.msg})") from exc
        return [_prompt_and_reply(obj, f"entry {i}") for i, obj in enumerate(items, 1)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {n}: not valid JSON ({exc.msg})") from exc
        out.append(_prompt_and_reply(obj, f"line {n}"))
    return out


@lru_cache(maxsize=4)
def _counted(path: str, tokenizer_dir: str, default_output_len: int) -> tuple[str, tuple[Entry, ...]]:
    """(SHA-256, every entry with its token counts) of a dataset file, read and tokenized once whatever the context."""
    try:
        data = Path(path).read_bytes()
        raw = _raw_entries(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--dataset {path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    except ValueError as exc:
        raise UsageError(f"--dataset {path} {exc}") from exc
    tok = load_tokenizer(tokenizer_dir)
    entries = []
    for prompt, reply in raw:
        n_in = len(tok(prompt).input_ids)
        n_out = reply if isinstance(reply, int) else default_output_len if reply is None else len(tok(reply).input_ids)
        if n_in and n_out:  # else nothing to send or nothing to generate
            entries.append(Entry(prompt, n_in, n_out))
    return hashlib.sha256(data).hexdigest(), tuple(entries)


def load_dataset(path: str, tokenizer_dir: str, max_len: int | None, default_output_len: int) -> Dataset:
    """The dataset's entries with their token counts (an entry without an output length gets ``default_output_len``);
    entries whose prompt + output exceed ``max_len`` left out. A missing, unreadable or malformed file is a UsageError
    naming the file and the line."""
    sha, counted = _counted(path, tokenizer_dir, default_output_len)
    entries = tuple(e for e in counted if max_len is None or e.prompt_len + e.output_len <= max_len)
    if not entries:
        raise UsageError(f"--dataset {path}: no usable entry (empty, or every prompt + reply is longer than {max_len} tokens)")
    return Dataset(path, sha, entries, len(counted) - len(entries))


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """A tokenizer from a local directory (nothing is fetched); a UsageError when there is none there."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--tokenizer {path}: no tokenizer there ({str(exc).splitlines()[0][:200]}); give a local model or tokenizer directory"
        ) from exc


@dataclass(frozen=True)
class Workload:
    """How the requests of each serve configuration are made (one workload per plan)."""

    range_ratio: float = 0.0
    prefix_fraction: float = 0.0
    dataset: Dataset | None = None
    trace: Trace | None = None
    trace_arrivals: str = "recorded"
    max_len: int | None = None  # a trace's requests longer than this (prompt + reply) are not sent

    def __post_init__(self) -> None:
        if not 0 <= self.range_ratio < 1:
            raise UsageError("--range-ratio must be in [0, 1) (0: every request exactly --input-lens and --output-lens long)")
        if not 0 <= self.prefix_fraction < 1:
            raise UsageError("--prefix-fraction must be in [0, 1) (the share of each prompt that all prompts have in common)")
        if self.dataset is not None and (self.range_ratio or self.prefix_fraction):
            raise UsageError("--dataset gives the prompts: drop --range-ratio and --prefix-fraction")
        if self.trace is not None and (self.dataset is not None or self.range_ratio or self.prefix_fraction):
            raise UsageError("--trace gives the lengths: drop --dataset, --range-ratio and --prefix-fraction")
        if self.trace_arrivals not in TRACE_ARRIVALS:
            raise UsageError(f"--trace-arrivals must be one of {', '.join(TRACE_ARRIVALS)}, got {self.trace_arrivals!r}")

    @property
    def kind(self) -> str:
        return "trace" if self.trace else "dataset" if self.dataset else "shared_prefix" if self.prefix_fraction else "random"

    def label(self) -> str:
        """Short, for tables: which points may share a frontier."""
        if self.trace:
            return f"trace {self.trace.name}, {self.trace_arrivals} arrivals"
        if self.dataset:
            return f"dataset {Path(self.dataset.path).name}"
        parts = [f"prefix {self.prefix_fraction:.0%}"] if self.prefix_fraction else ["random"]
        return ", ".join(parts + ([f"range {self.range_ratio:g}"] if self.range_ratio else []))

    def record(self) -> dict[str, Any]:
        """The workload as the run header keeps it."""
        rec: dict[str, Any] = {
            "kind": self.kind,
            "label": self.label(),
            "range_ratio": self.range_ratio,
            "prefix_fraction": self.prefix_fraction,
        }
        if self.trace:
            t = self.trace
            rec["trace"] = {"name": t.name, "requests": len(t.arrival_s), "recorded_rate_per_s": round(t.rate_per_s, 6),
                            "arrivals": self.trace_arrivals, "max_len": self.max_len}  # fmt: skip
        if self.dataset:
            d = self.dataset
            rec["dataset"] = {
                "file": Path(d.path).name,
                "sha256": d.sha256,
                "entries": len(d.entries),
                "skipped_too_long": d.skipped_too_long,
                "mean_prompt_tokens": d.mean_prompt_len,
                "mean_output_tokens": d.mean_output_len,
            }
        return rec

    def requests(self, n: int, input_len: int, output_len: int, vocab_size: int, seed: int, salt: str = "") -> list[Request]:
        """``n`` requests of this workload at nominal lengths ``input_len`` and ``output_len``; seeded, no global RNG.

        The shared prefix depends on the seed and the input length only; everything else also on ``salt`` (the
        configuration), so that with prefix caching on no prompt of one configuration is cached by another."""
        rng = random.Random(f"{seed}/{input_len}/{salt}")
        if self.dataset:
            order = list(self.dataset.entries)
            rng.shuffle(order)
            return [Request(e.text, e.prompt_len, e.output_len) for e in (order[i % len(order)] for i in range(n))]
        low = min(1000, vocab_size // 4)  # clear of the special tokens at the start of most vocabularies
        prefix_len = round(self.prefix_fraction * input_len)
        prefix_rng = random.Random(f"{seed}/{input_len}/prefix")
        prefix = [prefix_rng.randrange(low, vocab_size - 1) for _ in range(prefix_len)]
        out = []
        for _ in range(n):
            n_in, n_out = (
                (_draw(rng, input_len, self.range_ratio), _draw(rng, output_len, self.range_ratio))
                if self.range_ratio
                else (input_len, output_len)
            )
            suffix = [rng.randrange(low, vocab_size - 1) for _ in range(max(n_in - prefix_len, 1))]
            out.append(Request(prefix + suffix, prefix_len + len(suffix), n_out))
        return out

    def trace_schedule(self, n: int, warmup: int, rate_per_s: float, burstiness: float, vocab_size: int, seed: int,
                       salt: str = "") -> tuple[list[Request], list[Request], list[float]]:  # fmt: skip
        """(warm-up requests, the trace's first ``n`` requests that fit ``max_len``, their send times): module docstring."""
        assert self.trace is not None
        t, rng = self.trace, random.Random(f"{seed}/trace/{salt}")
        low = min(1000, vocab_size // 4)
        times = (scaled_arrivals(t, rate_per_s, n) if self.trace_arrivals == "recorded" else
                 arrival_offsets(min(n, len(t.arrival_s)), rate_per_s, burstiness, seed))  # fmt: skip

        def req(i: int) -> Request:
            n_in, n_out = int(t.input_tokens[i]), int(t.output_tokens[i])
            return Request([rng.randrange(low, vocab_size - 1) for _ in range(n_in)], n_in, n_out)

        last = [i for i in range(len(t.arrival_s) - 1, -1, -1) if self._fits(i)][:warmup]
        sent = self._sent(n)  # times holds the trace's first n (all of it when shorter), as _sent counts them
        return [req(i) for i in last], [req(i) for i in sent], [float(times[i]) for i in sent]

    def _fits(self, i: int) -> bool:
        """Whether the trace's i-th request (prompt + reply) fits ``max_len``."""
        assert self.trace is not None
        return self.max_len is None or int(self.trace.input_tokens[i] + self.trace.output_tokens[i]) <= self.max_len

    def _sent(self, n: int) -> list[int]:
        """The requests a replay of the trace's first ``n`` sends: those that fit ``max_len``."""
        assert self.trace is not None
        return [i for i in range(min(n, len(self.trace.arrival_s))) if self._fits(i)]

    def trace_mean_lengths(self, n: int) -> tuple[int, int]:
        """Mean (prompt, reply) tokens of the requests a replay of the trace's first ``n`` sends (trace_schedule's, not the
        whole trace's means: Azure's first 30 average 744 and 94 against the hour's 1,155 and 211)."""
        assert self.trace is not None
        keep = self._sent(n)
        return round(float(self.trace.input_tokens[keep].mean())), round(float(self.trace.output_tokens[keep].mean()))

    def longest(self, input_len: int, output_len: int) -> int:
        """The most tokens (prompt + output) one request of a configuration can take."""
        if self.trace:
            longest = int(np.max(self.trace.input_tokens + self.trace.output_tokens))
            return min(longest, self.max_len) if self.max_len else longest
        if self.dataset:
            return max(e.prompt_len + e.output_len for e in self.dataset.entries)
        r = self.range_ratio
        return max(math.ceil(input_len * (1 + r)), round(self.prefix_fraction * input_len) + 1) + math.ceil(output_len * (1 + r))


def _draw(rng: random.Random, length: int, ratio: float) -> int:
    """A length uniform over the integers in [floor(L(1 - r)), ceil(L(1 + r))], at least 1 (vLLM's sampling)."""
    return max(rng.randint(math.floor(length * (1 - ratio)), math.ceil(length * (1 + ratio))), 1)
