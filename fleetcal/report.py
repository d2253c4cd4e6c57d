"""``fleetcal report``: tables, plots and the README results section, regenerated from results/runs.

Deterministic: rows are sorted, floats rounded, no timestamps are written, and PNGs carry no
creation metadata, so running it twice gives identical files. Each plot's data is also written
as CSV beside it, which the tests compare.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from estimator.backtest import backtest
from estimator.calibration import PhaseFit, calibrate, calibration_table, load_runs, measured_utilization, utilization_table
from estimator.fleet import SCENARIOS, project
from estimator.operators import gemm_curve, load_ops, operator_table
from fleetcal.report_cpu import cpu_step_tables, cpu_steps_plot
from fleetcal.report_cpu import readme_lines as cpu_readme_lines
from fleetcal.report_model import kernels_before_after, readme_lines, sensitivity_table, step_breakdown, tornado_plot
from fleetcal.report_ops import compiled_speedup, engine_table, gpu_section

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
KEY_START, KEY_END = "<!-- keytable:start -->", "<!-- keytable:end -->"
CROSS_START, CROSS_END = "<!-- crosscheck:start -->", "<!-- crosscheck:end -->"
FLEET_GPUS = ("H100", "A100", "H800", "H200", "B200", "H20")
MEASUREMENT_COLUMNS = [
    "device_name", "model", "engine", "mode", "batch_size", "concurrency", "input_len", "output_len", "status",
    "output_tokens_per_s", "total_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_step_ms",
    "ttft_ms_p50", "tpot_ms_p50", "itl_ms_p50", "e2el_ms_p50", "output_tokens_per_s_per_user",
    "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak", "run_file",
]  # fmt: skip


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=ROOT / "results", help="results directory: reads runs/, writes tables/ and plots/")
    p.add_argument("--readme", type=Path, default=README, help="README whose results section is rewritten in place")


def _round(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: v if pd.isna(v) else float(f"{v:.{digits}g}"))
    return out


def _write_table(df: pd.DataFrame, tables: Path, name: str) -> None:
    df = _round(df)
    df.to_csv(tables / f"{name}.csv", index=False, lineterminator="\n")
    (tables / f"{name}.md").write_text(df.to_markdown(index=False) + "\n" if not df.empty else "(no data)\n")


def build_tables(results: Path) -> tuple[dict[str, pd.DataFrame], list[PhaseFit]]:
    """Every table of the report, and the calibration fits they were made with (the plots reuse them)."""
    runs = load_runs(results / "runs")
    fits = calibrate(runs)
    measured = measured_utilization(runs)
    out: dict[str, pd.DataFrame] = {}
    out["measurements"] = runs.reindex(columns=MEASUREMENT_COLUMNS) if not runs.empty else pd.DataFrame(columns=MEASUREMENT_COLUMNS)
    out["utilization"] = utilization_table(runs)
    ops = load_ops(results / "runs")
    fleet = pd.DataFrame(project("deepseek-v3", FLEET_GPUS, SCENARIOS, runs=runs, fits=fits, measured=measured, ops=ops))
    out["fleet"] = fleet[["scenario", "gpu", "gpus", "utilization", "how"]]
    out["backtest"] = backtest(fits, measured, ops)
    out["calibration"] = calibration_table(fits)
    res = [
        {"device_name": f.device_name, "engine": f.engine, "phase": f.phase, "configuration": lbl, "measured_ms": m * 1000, "predicted_ms": p * 1000}
        for f in fits
        for lbl, m, p in f.residuals
    ]
    out["calibration_residuals"] = pd.DataFrame(res)
    out["operators"] = operator_table(ops)
    out["gemm_curve"] = gemm_curve(ops)
    out["engines"] = engine_table(runs)
    out["compiled_speedup"] = compiled_speedup(out["engines"])
    out["step_breakdown"] = step_breakdown(ops)
    out["sensitivity"] = sensitivity_table(ops)
    out["kernels_before_after"] = kernels_before_after(ops, FLEET_GPUS)
    out["cpu_steps"], out["cpu_overheads"] = cpu_step_tables(runs, ops)
    out["_measured"] = pd.DataFrame([measured] if measured else [])
    out["_runs"] = runs
    return out, fits


# --- plots -----------------------------------------------------------------------------------


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _save(fig: Any, path: Path, data: pd.DataFrame) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _round(data).to_csv(path.with_suffix(".csv"), index=False, lineterminator="\n")


def build_plots(t: dict[str, pd.DataFrame], fits: list[PhaseFit], plots: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "fleetcal", "font.size": 9})
    runs = t["_runs"]
    ok = runs[runs["status"] == "ok"] if not runs.empty else runs

    # 1. throughput against batch size, with the fitted roofline and the bare roofline bound
    fig, ax = plt.subplots(figsize=(11, 5))
    rows = []
    if not ok.empty:
        dec = ok[ok["mode"].isin(["throughput", "decode"])]
        for (dev, eng, mode, model), g in dec.groupby(["device_name", "engine", "mode", "model"], sort=True):
            g = g.sort_values("batch_size")
            y = g["decode_tokens_per_s"] if mode == "decode" else g["output_tokens_per_s"]
            ax.plot(g["batch_size"], y, marker="o", label=f"{eng} {mode} ({model}, {dev})")
            rows += [{"series": f"{eng} {mode}", "device_name": dev, "model": model, "batch_size": b, "tokens_per_s": v} for b, v in zip(g["batch_size"], y)]
        for f in (f for f in fits if f.phase == "decode" and f.engine == "vllm"):
            b, bound = _roofline_curve(f, ok)
            if b:
                ax.plot(b, bound["fitted"], "--", color="black", label=f"roofline fitted to {f.engine} decode ({f.device_name})")
                ax.plot(b, bound["peak"], ":", color="gray", label=f"roofline bound at 100% of measured peaks ({f.device_name})")
                rows += [{"series": "roofline fitted", "device_name": f.device_name, "model": "", "batch_size": x, "tokens_per_s": y} for x, y in zip(b, bound["fitted"])]
                rows += [{"series": "roofline bound", "device_name": f.device_name, "model": "", "batch_size": x, "tokens_per_s": y} for x, y in zip(b, bound["peak"])]
    ax.set(xscale="log", yscale="log", xlabel="batch size (sequences)", ylabel="output tokens/s (decode: decode tokens/s)", title="Throughput against batch size")
    _legend(ax, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, plots / "throughput_vs_batch.png", pd.DataFrame(rows))
    plt.close(fig)

    # 2. MFU and MBU against batch size, with the article's 50%
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    util = t["utilization"]
    rows = []
    if not util.empty:
        u = util[util["mode"].isin(["throughput", "decode", "prefill"])]
        for (dev, eng, mode), g in u.groupby(["device_name", "engine", "mode"], sort=True):
            g = g.groupby("size", as_index=False)[["mfu", "mbu"]].mean()
            for ax, col in zip(axes, ("mfu", "mbu")):
                ax.plot(g["size"], g[col] * 100, marker="o", label=f"{eng} {mode} ({dev})")
            rows += [{"device_name": dev, "engine": eng, "mode": mode, "batch_size": s, "mfu": a, "mbu": b} for s, a, b in zip(g["size"], g["mfu"], g["mbu"])]
    for ax, name in zip(axes, ("MFU", "MBU")):
        ax.axhline(50, color="red", linestyle="--", label="article's assumed 50%")
        ax.set(xscale="log", xlabel="batch size (sequences)", ylabel=f"{name} (% of peak)", title=f"{name} against batch size")
    fig.suptitle("Utilization (GPUs: of the datasheet peak; CPUs: of the run's own microbenchmark peak)", fontsize=9)
    _legend(axes[0], fontsize=7)
    _save(fig, plots / "utilization_vs_batch.png", pd.DataFrame(rows))
    plt.close(fig)

    # 3. fleet size by scenario, H100 and A100, log scale
    fleet = t["fleet"]
    fl = fleet[fleet["gpu"].isin(["H100", "A100"])].dropna(subset=["gpus"])
    fig, ax = plt.subplots(figsize=(7, 4))
    scen = [s for s in SCENARIOS if s in set(fl["scenario"])]
    for k, gpu in enumerate(("H100", "A100")):
        g = fl[fl["gpu"] == gpu].set_index("scenario").reindex(scen)
        xs = [i + (k - 0.5) * 0.38 for i in range(len(scen))]
        bars = ax.bar(xs, g["gpus"], width=0.38, label=gpu)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if pd.notna(v) else "" for v in g["gpus"]], fontsize=7)
    util = fleet[fleet["gpu"] == "H100"].set_index("scenario")["utilization"]
    ax.set_xticks(range(len(scen)), [f"{s}\n(MFU {util[s]:.1%})" if pd.notna(util.get(s)) else s for s in scen])
    missing = [s for s in SCENARIOS if s not in scen]
    note = f"\n{', '.join(missing)}: this model not measured on these GPUs" if missing else ""
    ax.set(yscale="log", ylabel="GPUs needed (log scale)", xlabel="scenario (MFU: assumed, measured, or implied by the roofline fleet)")
    ax.set_title(f"DeepSeek-V3 fleet for the article's traffic, by scenario{note}", fontsize=9)
    _legend(ax)
    _save(fig, plots / "fleet_by_scenario.png", fl[["scenario", "gpu", "gpus"]])
    plt.close(fig)

    # 4. throughput per device against tokens/s per user (serving runs)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    rows = []
    if not ok.empty:
        sv = ok[ok["mode"] == "serve"]
        for (dev, eng, model), g in sv.groupby(["device_name", "engine", "model"], sort=True):
            g = g.sort_values("concurrency")
            per_dev = g["output_tokens_per_s"] / g["num_gpus"].fillna(1)
            ax.plot(g["output_tokens_per_s_per_user"], per_dev, marker="o", label=f"{eng} ({model}, {dev})")
            for c, x, y in zip(g["concurrency"], g["output_tokens_per_s_per_user"], per_dev):
                ax.annotate(f"c={int(c)}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
                rows.append({"device_name": dev, "engine": eng, "model": model, "concurrency": c, "tokens_per_s_per_user": x, "output_tokens_per_s_per_device": y})
    ax.set(xlabel="output tokens/s per user (interactivity)", ylabel="output tokens/s per device", title="Serving: throughput against interactivity")
    _legend(ax, fontsize=7)
    _save(fig, plots / "serving_tradeoff.png", pd.DataFrame(rows))
    plt.close(fig)

    # 5. measured against predicted (calibration)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    res = t["calibration_residuals"]
    if not res.empty:
        for (dev, eng, phase), g in res.groupby(["device_name", "engine", "phase"], sort=True):
            ax.scatter(g["measured_ms"], g["predicted_ms"], label=f"{eng} {phase} ({dev})", s=18)
        lo, hi = res[["measured_ms", "predicted_ms"]].min().min(), res[["measured_ms", "predicted_ms"]].max().max()
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", label="predicted = measured")
        _legend(ax, fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="measured time (ms per step or per prefill batch)", ylabel="roofline prediction (ms)", title="Calibration: measured against predicted")
    _save(fig, plots / "calibration.png", res)
    plt.close(fig)

    # 6. sensitivity of the serving model's fleet (tornado)
    tornado_plot(t["sensitivity"], plots / "sensitivity.png", _save)

    # 7. the CPU step model: predicted against measured vLLM steps
    cpu_steps_plot(t["cpu_steps"], plots / "cpu_steps.png", _save)
    plt.close("all")


def _roofline_curve(fit: Any, ok: pd.DataFrame) -> tuple[list[int], dict[str, list[float]]]:
    """Decode tokens/s against batch for the fitted efficiencies and for 100% of the peaks."""
    from estimator.models import get_model
    from estimator.roofline import Efficiency, decode_step

    d = ok[(ok["mode"] == "decode") & (ok["device_name"] == fit.device_name) & (ok["engine"] == fit.engine)]
    if d.empty:
        return [], {}
    first = d.iloc[0]
    spec = get_model(first["model_key"])
    ctx = float(first["input_len"]) + float(first["output_len"]) / 2
    batches = sorted({int(b) for b in d["batch_size"]})
    full = Efficiency(1.0, 1.0, 0.0, "peak")
    fitted = [b / decode_step(spec, b, ctx, fit.peaks, fit.efficiency).seconds for b in batches]
    peak = [b / decode_step(spec, b, ctx, fit.peaks, full).seconds for b in batches]
    return batches, {"fitted": fitted, "peak": peak}


# --- README ----------------------------------------------------------------------------------


def readme_section(t: dict[str, pd.DataFrame]) -> str:
    """The README's results section: utilization beside 50%, fleet projections, backtest, calibration."""
    lines = [START, "", "_Generated by `fleetcal report` from `results/runs/`; do not edit by hand._", ""]
    util = t["utilization"]
    lines += ["### Measured utilization against the article's 50%", ""]
    if util.empty:
        lines += ["No measurements yet.", ""]
    else:
        u = util[util["mode"].isin(["throughput", "decode", "prefill", "serve"])].copy()
        summary = u.groupby(["device_name", "engine", "mode"], as_index=False).agg(
            sizes=("size", lambda s: ",".join(str(int(v)) for v in sorted(set(s)))),
            best_tokens_per_s=("tokens_per_s", "max"),
            mfu_max=("mfu", "max"),
            mbu_max=("mbu", "max"),
        )
        summary["article_utilization"] = 0.5
        lines += [_round(summary, 3).to_markdown(index=False), ""]
        lines += ["`best_tokens_per_s` is prefill tokens/s for prefill, decode tokens/s for decode and output tokens/s otherwise. MFU/MBU are against the datasheet peak for catalogued GPUs and against the run's own microbenchmark peaks otherwise (CPUs). Full table: `results/tables/utilization.md`.", ""]
    m = t["_measured"]
    if not m.empty:
        r = m.iloc[0]
        lines += [f"Highest measured MFU, used by the `measured` scenario: **{r['utilization']:.1%}** ({r['engine']} {r['mode']} at size {r['size']}, {r['model']} on {r['device_name']}, against the {r['against']}).", ""]
    lines += ["### Fleet for the article's traffic (DeepSeek-V3, 1e8 visits x 10 questions x 1,000 tokens a day)", ""]
    f = t["fleet"]
    wide = f.pivot(index="scenario", columns="gpu", values="gpus").reindex(index=list(SCENARIOS), columns=list(FLEET_GPUS))
    wide = wide.map(lambda v: "n/a" if pd.isna(v) else f"{int(v):,}")
    lines += [wide.reset_index().to_markdown(index=False), ""]
    lines += ["How each scenario is computed (H100 column):", ""]
    for _, row in f[f["gpu"] == "H100"].iterrows():
        lines.append(f"- **{row['scenario']}**: {row['how']}")
    lines += ["", "### Backtest against DeepSeek's published fleet (1,814 H800 on average, 2,224 at the peak)", ""]
    b = t["backtest"][["method", "predicted_gpus", "published_gpus", "error_pct", "how"]]
    lines += [b.to_markdown(index=False), ""]
    lines += readme_lines(t["step_breakdown"], t["sensitivity"], t["kernels_before_after"], _round)
    lines += gpu_section(t["operators"], t["engines"], t["compiled_speedup"], _round)
    lines += cpu_readme_lines(t["cpu_steps"], t["cpu_overheads"], _round)
    cal = t["calibration"]
    lines += ["### Roofline calibration", ""]
    lines += [cal.to_markdown(index=False) if not cal.empty else "No prefill/decode measurements to fit yet.", ""]
    lines += ["Plots: `results/plots/` (throughput_vs_batch, utilization_vs_batch, fleet_by_scenario, serving_tradeoff, calibration, sensitivity, cpu_steps).", "", END]
    return "\n".join(lines)


def key_table(t: dict[str, pd.DataFrame]) -> str:
    """The README's key table: GPUs for the article's traffic per scenario, H100 and A100, with MFU."""
    f = t["fleet"]
    rows = []
    for sc in SCENARIOS:
        r = f[f["scenario"] == sc].set_index("gpu")
        if r.empty:
            continue
        cell = {g: ("n/a" if pd.isna(r.loc[g, "gpus"]) else f"{int(r.loc[g, 'gpus']):,}") for g in ("H100", "A100") if g in r.index}
        util = r.loc["H100", "utilization"] if "H100" in r.index else None
        rows.append({"scenario": sc, "H100": cell.get("H100"), "A100": cell.get("A100"), "MFU (H100)": "n/a" if util is None or pd.isna(util) else f"{util:.1%}"})
    body = pd.DataFrame(rows).to_markdown(index=False) if rows else "No projections yet."
    return "\n".join([KEY_START, body, KEY_END])


def crosscheck_block(results: Path) -> str | None:
    """The cross-check against vLLM's own benchmark, from results/crosscheck.json, if it was run."""
    path = results / "crosscheck.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    w = doc["workload"]
    table = pd.DataFrame(doc["rows"]).to_markdown(index=False, floatfmt=".3f")
    head = (f"From `results/crosscheck.json` ({doc['started_utc']}, commit {str(doc['git_commit'])[:7]}, {doc['device']['name']} "
            f"with {doc['device']['cores']} cores): {w['num_prompts']} prompts, {w['input_len']} in / {w['output_len']} out, {w['sampling']}.")  # fmt: skip
    return "\n".join([CROSS_START, head, "", table, CROSS_END])


def _replace_block(text: str, start: str, end: str, block: str) -> tuple[str, bool]:
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text), True
    return text, False


def rewrite_readme(readme: Path, section: str, key: str | None = None, cross: str | None = None) -> None:
    text = readme.read_text() if readme.exists() else ""
    text, found = _replace_block(text, START, END, section)
    if not found:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + section + "\n"
    if key is not None:
        text, _ = _replace_block(text, KEY_START, KEY_END, key)
    if cross is not None:
        text, _ = _replace_block(text, CROSS_START, CROSS_END, cross)
    readme.write_text(text)


def run_report(results: Path, readme: Path | None) -> dict[str, pd.DataFrame]:
    tables, plots = results / "tables", results / "plots"
    tables.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    t, fits = build_tables(results)
    for name, df in t.items():
        if not name.startswith("_"):
            _write_table(df, tables, name)
    build_plots(t, fits, plots)
    if readme is not None:
        rewrite_readme(readme, readme_section(t), key_table(t), crosscheck_block(results))
    return t


def main(args: argparse.Namespace) -> int:
    if not (args.results / "runs").is_dir():
        from fleetcal.common import UsageError

        raise UsageError(f"--results {args.results}: no runs/ directory inside; give the results directory")
    t = run_report(args.results, args.readme)
    for skipped in t["_runs"].attrs.get("skipped", []):
        print(f"report: skipped {skipped}", file=sys.stderr)
    print(f"report: {len(t['_runs'])} records -> {args.results / 'tables'}, {args.results / 'plots'}, {args.readme}")
    return 0
