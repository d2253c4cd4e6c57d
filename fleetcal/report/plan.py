"""How ``fleetcal plan`` shows a plan: one row per GPU type (demand beside capacity, what limited the batch, the interval
and why it is one-sided where it is, the cost or "no price"), and the frontier of per-user speed against throughput with
each chosen option's capacity starred (the same quantity as the table's capacity column)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from estimator.plan_search import Choice
from estimator.provisioning import usd_per_day, usd_per_million_output_tokens
from estimator.traffic import Request
from fleetcal.report.files import save_plot

FRONTIER_PNG = "plan_frontier.png"


def plan_row(c: Choice, r: Request, price: float | None, lo_hi: tuple[float, float, float] | None, one_sided: list[str]) -> dict[str, Any]:
    """One GPU type's plan: GPUs, interval, layout, demand and capacity per GPU, latencies, what limited it, cost."""
    o, p = c.option, c.option.point
    usd_day = usd_per_day(o.gpus, price) if price is not None else None
    demand = r.peak_requests_per_s / o.gpus
    return {
        "gpu": o.gpu, "gpus": o.gpus, "gpus_p5": lo_hi[0] if lo_hi else None, "gpus_p95": lo_hi[1] if lo_hi else None,
        "mode": o.mode, "weight_dtype": o.weight_dtype, "layout": o.layout, "batch_per_gpu": p.batch_per_gpu,
        "requests_per_s_per_gpu": demand, "capacity_requests_per_s_per_gpu": o.requests_per_s_per_gpu,
        "output_tokens_per_s_per_gpu": demand * r.output_len, "capacity_output_tokens_per_s_per_gpu": p.output_tokens_per_s_per_gpu,
        "tokens_per_s_per_user": p.tokens_per_s_per_user, "ttft_ms": p.ttft_ms, "tpot_ms": p.tpot_ms, "limited_by": str(o.limited_by),
        "usd_per_gpu_hour": price, "usd_per_day": usd_day,
        "usd_per_million_output_tokens": usd_per_million_output_tokens(usd_day, r.peak_requests_per_s * r.output_len) if usd_day else None,
        "infeasible_draws": lo_hi[2] if lo_hi else None, "one_sided_assumptions": one_sided,
    }  # fmt: skip


TEXT_COLUMNS = ["gpu", "gpus", "interval", "mode", "weight_dtype", "layout", "batch_per_gpu", "requests_per_s_per_gpu",
                "capacity_requests_per_s_per_gpu", "output_tokens_per_s_per_gpu", "capacity_output_tokens_per_s_per_gpu",
                "tokens_per_s_per_user", "ttft_ms", "tpot_ms", "limited_by", "usd_per_day", "usd_per_million_output_tokens"]  # fmt: skip


def _money(v: Any) -> str:
    return "no price" if v is None or pd.isna(v) else f"{v:,.2f}"


def _interval_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Where the count is one end of its interval: which assumptions' ranges end at their central value, so draw one way."""
    notes = []
    for row in rows:
        lo, hi, n = row["gpus_p5"], row["gpus_p95"], row["gpus"]
        if lo is None or lo == hi or not (n == lo or n == hi):
            continue
        end = "5th" if n == lo else "95th"
        names = ", ".join(row["one_sided_assumptions"]) or "none: the other draws all move the count the same way"
        notes.append(f"{row['gpu']}: {n} GPUs is the interval's {end} percentile: the ranges of {names} end at their central value, "
                     "so their draws can only move the count one way")  # fmt: skip
    return notes


def text(out: dict[str, Any], samples: int, seed: int) -> list[str]:
    """The plan as printed: the request, one row per GPU type with its interval, failures, the cheapest mix."""
    r = out["request"]
    lines = [
        f"{r['model']}: {r['input_len']:g} in / {r['output_len']:g} out, {r['peak_requests_per_s']:g} requests/s at the peak, TTFT <= "
        f"{r['ttft_ms']:g} ms, TPOT <= {r['tpot_ms']:g} ms; serving model (kernels.toml, measured kernels of results/); whole instances; "
        "capacity: what one GPU of the chosen option carries at full load, beside the demand per GPU"
    ]
    df = pd.DataFrame(out["rows"])
    df["interval"] = [f"{lo:.0f}-{hi:.0f}" if pd.notna(lo) else "" for lo, hi in zip(df["gpus_p5"], df["gpus_p95"])]
    for col in ("usd_per_day", "usd_per_million_output_tokens", "usd_per_day_hourly"):
        if col in df:
            df[col] = [_money(v) for v in df[col]]
    cols = TEXT_COLUMNS + [c for c in ("spare_gpus", "gpus_with_spares", "gpu_hours_per_day", "usd_per_day_hourly") if c in df]
    with pd.option_context("display.width", 320, "display.max_colwidth", 70, "display.float_format", "{:,.1f}".format):
        lines += df[cols].to_string(index=False).splitlines()
    if samples:
        lines.append(f"interval: 5th-95th percentile of GPUs over {samples} draws of every ranged assumption (seed {seed}), layout and "
                     "mode kept")  # fmt: skip
        lines += _interval_notes(out["rows"])
    lines += [f"{gpu}: no layout meets the limits ({why})" for gpu, why in out["failed"].items()]
    if out["cheapest_mix"]:
        m = out["cheapest_mix"]
        lines.append("cheapest mix: " + " + ".join(f"{r:g} requests/s on {g}" for g, r in m["split"]) + f", ${m['usd_per_day']:,.0f} a day")
    return lines


def frontier_plot(front: pd.DataFrame, rows: list[dict[str, Any]], tpot_ms: float | None, path: Path) -> None:
    """The aggregated frontier of each GPU type and each chosen option's capacity (a star), with the TPOT limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {gpu: f"C{i}" for i, gpu in enumerate(sorted({*front.get("gpu", []), *(r["gpu"] for r in rows)}))}
    for gpu, g in front.groupby("gpu", sort=True):
        g = g.sort_values("tokens_per_s_per_user")
        ax.plot(g["tokens_per_s_per_user"], g["output_tokens_per_s_per_gpu"], marker=".", color=colors[gpu],
                label=f"{gpu}: aggregated, frontier over layouts")  # fmt: skip
    for r in rows:  # the chosen option's capacity; disaggregated: the decode pool's output over both pools' GPUs at full load
        xy = (r["tokens_per_s_per_user"], r["capacity_output_tokens_per_s_per_gpu"])
        ax.scatter([xy[0]], [xy[1]], marker="*", s=120, zorder=3, color=colors[r["gpu"]])
        ax.annotate(f" {r['gpu']}: {r['gpus']} GPUs, {r['mode']}, capacity", xy, fontsize=7)
    if tpot_ms:
        ax.axvline(1000 / tpot_ms, color="red", linestyle="--", label=f"TPOT limit: {1000 / tpot_ms:.0f} tok/s per user")
    ax.set(xlabel="output tokens/s per user", ylabel="output tokens/s per GPU (capacity)",
           title="Speed per user against throughput per GPU (Pareto frontier)")  # fmt: skip
    ax.legend(fontsize=7)
    save_plot(fig, path, front)
    plt.close(fig)
