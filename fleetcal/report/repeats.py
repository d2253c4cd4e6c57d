"""Repeated configurations (``fleetcal bench --repeats N``): the mean of each rate and its 95% confidence interval.

The interval is mean ± t(0.975, n − 1) × s / √n, with s the sample standard deviation over the n
repeats (Student's t; the quantiles below are the standard two-sided 95% values for 1 to 29 degrees
of freedom). Repeats run one after another in one invocation, so the interval speaks of the noise
within a run, not between machines or days.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from fleetcal.report.files import round_floats

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045)  # fmt: skip
KEYS = ["device_name", "engine", "model", "mode", "batch_size", "concurrency", "request_rate", "input_len", "output_len", "run_file"]
RATES = ("output_tokens_per_s", "decode_tokens_per_s", "prefill_tokens_per_s")
COLUMNS = [*KEYS, "repeats", "rate", "mean", "ci95_low", "ci95_high", "ci95_half_width_pct"]


def ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half width of the 95% interval); the half width is nan for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T_975[min(n - 1, len(T_975)) - 1] * s / math.sqrt(n)


def paired_ratio(rounds: list[dict], by: str, ours: str, reference: str, value: str) -> tuple[float, float, float]:
    """``ours`` over ``reference`` (told apart by the field ``by``) in ``value``, measured back to back in each ``round``:
    the geometric mean of the per-round ratios and its 95% interval (Student's, over the logs) as (mean, low, high).
    Used by the cross-checks against vLLM's own benchmarks."""
    by_round: dict[Any, dict[str, float]] = {}
    for r in rounds:
        by_round.setdefault(r["round"], {})[r[by]] = r[value]
    mean, half = ci95([math.log(b[ours] / b[reference]) for b in by_round.values()])
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def repeats_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per repeated configuration and rate: how many repeats, the mean and its interval."""
    if runs.empty or "repeat" not in runs or runs["repeat"].isna().all():
        return pd.DataFrame(columns=COLUMNS)
    rep = runs[(runs["status"] == "ok") & runs["repeat"].notna()]
    rows = []
    for key, g in rep.groupby(KEYS, dropna=False, sort=True):
        for rate in RATES:
            values = [float(v) for v in g[rate] if pd.notna(v)]
            if not values:
                continue
            mean, half = ci95(values)
            rows.append({**dict(zip(KEYS, key)), "repeats": len(values), "rate": rate, "mean": mean, "ci95_low": mean - half,
                         "ci95_high": mean + half, "ci95_half_width_pct": 100 * half / mean if mean else math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def readme_lines(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    cols = [
        "device_name",
        "engine",
        "mode",
        "batch_size",
        "concurrency",
        "input_len",
        "output_len",
        "rate",
        "repeats",
        "mean",
        "ci95_low",
        "ci95_high",
        "ci95_half_width_pct",
    ]
    return [
        "### Repeated configurations: mean and 95% interval",
        "",
        "Each configuration measured `--repeats` times in one invocation (Student's t over the repeats; all rows: "
        "`results/tables/repeats.md`).",
        "",
        round_floats(table[cols], 3).to_markdown(index=False),
        "",
    ]
