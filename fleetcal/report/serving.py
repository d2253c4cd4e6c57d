"""Serving: output tokens/s per device against tokens/s per user, the Pareto frontier, and the SLO searches.

The per-user rate is vLLM's interactivity, 1000 / mean TPOT (ms), everywhere. A point is on the
frontier when no other point of the same device, engine, model, workload and lengths gives both more tokens/s per
device and more tokens/s per user.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from fleetcal.report.files import round_floats, save_plot

SERVING_COLUMNS = [
    "device_name", "engine", "model", "workload", "input_len", "output_len", "concurrency", "request_rate", "burstiness",
    "output_tokens_per_s_per_device", "tokens_per_s_per_user", "steady_output_tokens_per_s", "ttft_ms_p90", "tpot_ms_p90",
    "tpot_ms_p50", "tpot_ms_p99", "ttft_ms_p50", "ttft_ms_p99", "goodput_requests_per_s", "prefix_cache_hit_rate", "slo_tpot_ms",
    "slo_ttft_ms", "slo_percentile", "slo_met", "search_step", "on_frontier", "run_file",
]


GROUP = ["device_name", "engine", "model", "workload", "input_len", "output_len"]  # points that may share a frontier


def frontier(points: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for the points no other point beats on both ``x`` and ``y`` (ties kept)."""
    on = []
    for _, p in points.iterrows():
        on.append(not ((points[x] >= p[x]) & (points[y] >= p[y]) & ((points[x] > p[x]) | (points[y] > p[y]))).any())
    return pd.Series(on, index=points.index, dtype=bool)


def serving_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every successful serve record with its per-device and per-user rates, frontier points marked."""
    if runs.empty:
        return pd.DataFrame(columns=SERVING_COLUMNS)
    sv = runs[(runs["status"] == "ok") & (runs["mode"] == "serve")].copy()
    if sv.empty:
        return pd.DataFrame(columns=SERVING_COLUMNS)
    sv["output_tokens_per_s_per_device"] = sv["output_tokens_per_s"] / sv["num_gpus"].fillna(1)
    sv["tokens_per_s_per_user"] = sv["interactivity_tokens_per_s"]
    sv["workload"] = sv["workload"].fillna("random") if "workload" in sv else "random"  # records before workloads: random prompts
    sv = sv.reindex(columns=[c for c in SERVING_COLUMNS if c != "on_frontier"] + ["on_frontier"])
    groups = [frontier(g, "tokens_per_s_per_user", "output_tokens_per_s_per_device") for _, g in sv.groupby(GROUP, sort=True)]
    sv["on_frontier"] = pd.concat(groups) if groups else False
    sv = sv.sort_values([*GROUP, "concurrency", "request_rate", "run_file"], na_position="last", kind="mergesort")
    return sv[SERVING_COLUMNS].reset_index(drop=True)


def pareto_plot(serving: pd.DataFrame, path: Path) -> None:
    """Output tokens/s per device against tokens/s per user (1000 / TPOT), every serve point, the frontier drawn
    as the edge of what is attainable: at a per-user rate up to a frontier point's, its throughput."""
    fig, ax = plt.subplots(figsize=(11.5, 4.5))
    cycle = plt.get_cmap("tab20").colors
    for k, ((dev, eng, model, work, i, o), g) in enumerate(serving.groupby(GROUP, sort=True)):
        work, color = f"{work}, in {int(i)} out {int(o)}", cycle[k % len(cycle)]
        closed, opened = g[g["concurrency"].notna()], g[g["concurrency"].isna()]
        ax.scatter(
            closed["tokens_per_s_per_user"],
            closed["output_tokens_per_s_per_device"],
            s=18,
            color=color,
            label=f"{eng} concurrency ({model}, {work}, {dev})",
        )
        if not opened.empty:
            ax.scatter(
                opened["tokens_per_s_per_user"],
                opened["output_tokens_per_s_per_device"],
                s=22,
                marker="^",
                color=color,
                label=f"{eng} request rate ({model}, {work}, {dev})",
            )
        for _, r in g.iterrows():
            tag = f"c={int(r['concurrency'])}" if pd.notna(r["concurrency"]) else f"r={r['request_rate']:g}"
            ax.annotate(
                tag,
                (r["tokens_per_s_per_user"], r["output_tokens_per_s_per_device"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=6,
            )
        f = g[g["on_frontier"]].sort_values("tokens_per_s_per_user")
        ax.step(f["tokens_per_s_per_user"], f["output_tokens_per_s_per_device"], where="pre", color=color, lw=0.9)
    ax.set(
        xlabel="tokens/s per user (1000 / mean TPOT)",
        ylabel="output tokens/s per device",
        title="Serving: throughput against interactivity; lines: the frontier of each group",
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_plot(fig, path, serving)
    plt.close(fig)


def readme_lines(serving: pd.DataFrame) -> list[str]:
    """The README's serving section: the frontier per device and model, and each SLO search's probes and outcome."""
    lines = ["### Serving: throughput against tokens/s per user", ""]
    if serving.empty:
        return lines + ["No serving runs yet (`fleetcal bench --mode serve`).", ""]
    front = serving[serving["on_frontier"]]
    cols = [
        "device_name", "model", "workload", "input_len", "output_len", "concurrency", "request_rate", "tokens_per_s_per_user",
        "output_tokens_per_s_per_device", "tpot_ms_p90", "prefix_cache_hit_rate", "run_file",
    ]
    lines += [
        "Points on the frontier (no other point of the same device, model, workload and input/output lengths is faster both per user and "
        "per device); "
        "tokens/s per user is 1000 / mean TPOT. Every point: `results/tables/serving.md`; plot `results/plots/serving_tradeoff.png`.",
        "",
        round_floats(front[cols], 3).astype(object).where(front[cols].notna(), "").to_markdown(index=False),
        "",
    ]
    probes = serving[serving["search_step"].notna()].sort_values(["run_file", "input_len", "output_len", "search_step"])
    for (run, i, o), g in probes.groupby(["run_file", "input_len", "output_len"], sort=True):
        first = g.iloc[0]
        pct = int(first["slo_percentile"]) if pd.notna(first["slo_percentile"]) else 90
        bounds = " and ".join(
            f"{name} p{pct} <= {first[col]:g} ms"
            for name, col in (("TPOT", "slo_tpot_ms"), ("TTFT", "slo_ttft_ms"))
            if pd.notna(first[col])
        )
        met = g[g["slo_met"] == True]  # noqa: E712  (a column of True, False and missing)
        best = int(met["concurrency"].max()) if not met.empty else 0
        steps = ", ".join(
            f"{int(r['concurrency'])} {'met' if r['slo_met'] == True else 'missed'} (TPOT p{pct} {r[f'tpot_ms_p{pct}']:.1f} ms, "  # noqa: E712
            f"TTFT p{pct} {r[f'ttft_ms_p{pct}']:.1f} ms)"
            for _, r in g.iterrows()
        )
        lines += [
            f"- SLO search ({bounds}; {run}, in {int(i)} out {int(o)}): highest concurrency meeting it **{best}**; probes in order: "
            f"{steps}."
        ]
    return lines + ([""] if not probes.empty else [])
