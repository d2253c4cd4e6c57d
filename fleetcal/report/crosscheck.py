"""The cross-checks against vLLM's own benchmarks (results/crosscheck*.json) as the blocks docs/crosscheck.md shows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

CROSS_START, CROSS_END = "<!-- crosscheck:start -->", "<!-- crosscheck:end -->"
SERVE_CROSS_START, SERVE_CROSS_END = "<!-- crosscheck-serve:start -->", "<!-- crosscheck-serve:end -->"


def crosscheck_block(results: Path) -> str | None:
    """The cross-check against vLLM's own benchmark, from results/crosscheck.json, if it was run."""
    path = results / "crosscheck.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    w = doc["workload"]
    table = pd.DataFrame(doc["rows"]).to_markdown(index=False, floatfmt=".3f")
    head = (
        f"From `results/crosscheck.json` ({doc['started_utc']}, commit {str(doc['git_commit'])[:7]}, {doc['device']['name']} "
        f"with {doc['device']['cores']} cores): {w['num_prompts']} prompts, {w['input_len']} in / {w['output_len']} out, {w['sampling']}"
        + (f"; {w['rounds']} rounds, {doc['method']}." if "rounds" in w else ".")
    )
    return "\n".join([CROSS_START, head, "", table, CROSS_END])


def crosscheck_serve_block(results: Path) -> str | None:
    """The serving client's cross-check against vLLM's bench serve, from results/crosscheck_serve.json, if it was run."""
    path = results / "crosscheck_serve.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    w, sm = doc["workload"], doc["summary"]
    table = pd.DataFrame(doc["rounds"]).to_markdown(index=False, floatfmt=".2f")
    head = (
        f"From `results/crosscheck_serve.json` ({doc['started_utc']}, commit {str(doc['git_commit'])[:7]}, {doc['device']['name']} "
        f"with {doc['device']['cores']} cores): {w['rounds']} rounds of {w['num_prompts']} prompts at concurrency {w['concurrency']}, "
        f"{w['input_len']} in / {w['output_len']} out, {w['sampling']}, one server. fleetcal over vLLM, "
        f"{sm.get('method', 'medians over rounds')}: output tok/s "
        f"{_ratio(sm, 'output_tokens_per_s')}, TPOT p50 {_ratio(sm, 'tpot_p50')}, TTFT p50 {_ratio(sm, 'ttft_p50')}."
    )
    return "\n".join([SERVE_CROSS_START, head, "", table, SERVE_CROSS_END])


def _ratio(summary: dict, name: str) -> str:
    """A cross-check ratio in bold, with its 95% interval over rounds where the summary has one."""
    ci = summary.get(f"{name}_ratio_ci95")
    return f"**{summary[f'{name}_ratio']:.3f}**" + (f" (95% interval {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
