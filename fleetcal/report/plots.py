"""The report's plots, one function each; every plot's data is written as CSV beside it (what the tests compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first: no display here)
import pandas as pd  # noqa: E402

from core.models import get_model  # noqa: E402
from estimator.calibration import PhaseFit  # noqa: E402
from estimator.fleet import SCENARIOS  # noqa: E402
from estimator.pooled_fit import Efficiency, decode_step  # noqa: E402
from estimator.utilization import ARTICLE_UTILIZATION  # noqa: E402
from fleetcal.report.files import save_plot  # noqa: E402

FLEET_PLOT_GPUS = ("H100", "A100")


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _save(fig: Any, path: Path, data: pd.DataFrame) -> None:
    save_plot(fig, path, data)
    plt.close(fig)


def _roofline_curve(fit: PhaseFit, ok: pd.DataFrame) -> tuple[list[int], dict[str, list[float]]]:
    """Decode tokens/s against batch for the fitted efficiencies and for 100% of the peaks."""
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


def throughput_vs_batch(ok: pd.DataFrame, fits: list[PhaseFit], path: Path) -> None:
    """Throughput against batch size, with the fitted roofline and the bare roofline bound."""
    fig, ax = plt.subplots(figsize=(11, 5))
    rows = []
    if not ok.empty:
        dec = ok[ok["mode"].isin(["throughput", "decode"])]
        for (dev, eng, mode, model), g in dec.groupby(["device_name", "engine", "mode", "model"], sort=True):
            g = g.sort_values("batch_size")
            y = g["decode_tokens_per_s"] if mode == "decode" else g["output_tokens_per_s"]
            ax.plot(g["batch_size"], y, marker="o", label=f"{eng} {mode} ({model}, {dev})")
            rows += [
                {"series": f"{eng} {mode}", "device_name": dev, "model": model, "batch_size": b, "tokens_per_s": v}
                for b, v in zip(g["batch_size"], y)
            ]
        for f in (f for f in fits if f.phase == "decode" and f.engine == "vllm"):
            b, bound = _roofline_curve(f, ok)
            if b:
                ax.plot(b, bound["fitted"], "--", color="black", label=f"roofline fitted to {f.engine} decode ({f.device_name})")
                ax.plot(b, bound["peak"], ":", color="gray", label=f"roofline bound at 100% of measured peaks ({f.device_name})")
                rows += [
                    {"series": "roofline fitted", "device_name": f.device_name, "model": "", "batch_size": x, "tokens_per_s": y}
                    for x, y in zip(b, bound["fitted"])
                ]
                rows += [
                    {"series": "roofline bound", "device_name": f.device_name, "model": "", "batch_size": x, "tokens_per_s": y}
                    for x, y in zip(b, bound["peak"])
                ]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size (sequences)",
        ylabel="output tokens/s (decode: decode tokens/s)",
        title="Throughput against batch size",
    )
    _legend(ax, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path, pd.DataFrame(rows))


def utilization_vs_batch(util: pd.DataFrame, path: Path) -> None:
    """MFU and MBU against batch size, with the article's 50%."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    rows = []
    if not util.empty:
        u = util[util["mode"].isin(["throughput", "decode", "prefill"])]
        for (dev, eng, mode), g in u.groupby(["device_name", "engine", "mode"], sort=True):
            g = g.groupby("size", as_index=False)[["mfu", "mbu"]].mean()
            for ax, col in zip(axes, ("mfu", "mbu")):
                ax.plot(g["size"], g[col] * 100, marker="o", label=f"{eng} {mode} ({dev})")
            rows += [
                {"device_name": dev, "engine": eng, "mode": mode, "batch_size": s, "mfu": a, "mbu": b}
                for s, a, b in zip(g["size"], g["mfu"], g["mbu"])
            ]
    for ax, name in zip(axes, ("MFU", "MBU")):
        ax.axhline(ARTICLE_UTILIZATION * 100, color="red", linestyle="--", label=f"article's assumed {ARTICLE_UTILIZATION:.0%}")
        ax.set(xscale="log", xlabel="batch size (sequences)", ylabel=f"{name} (% of peak)", title=f"{name} against batch size")
    fig.suptitle("Utilization (GPUs: of the datasheet peak; CPUs: of the run's own microbenchmark peak)", fontsize=9)
    _legend(axes[0], fontsize=7)
    _save(fig, path, pd.DataFrame(rows))


def fleet_by_scenario(fleet: pd.DataFrame, path: Path) -> None:
    """Fleet size by scenario, H100 and A100, log scale."""
    fl = fleet[fleet["gpu"].isin(FLEET_PLOT_GPUS)].dropna(subset=["gpus"])
    fig, ax = plt.subplots(figsize=(7, 4))
    scen = [s for s in SCENARIOS if s in set(fl["scenario"])]
    for k, gpu in enumerate(FLEET_PLOT_GPUS):
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
    _save(fig, path, fl[["scenario", "gpu", "gpus"]])


def calibration(res: pd.DataFrame, path: Path) -> None:
    """Measured against predicted times of the calibration."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if not res.empty:
        for (dev, eng, phase), g in res.groupby(["device_name", "engine", "phase"], sort=True):
            ax.scatter(g["measured_ms"], g["predicted_ms"], label=f"{eng} {phase} ({dev})", s=18)
        lo, hi = res[["measured_ms", "predicted_ms"]].min().min(), res[["measured_ms", "predicted_ms"]].max().max()
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", label="predicted = measured")
        _legend(ax, fontsize=7)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="measured time (ms per step or per prefill batch)",
        ylabel="roofline prediction (ms)",
        title="Calibration: measured against predicted",
    )
    _save(fig, path, res)


def build_plots(tables: dict[str, pd.DataFrame], runs: pd.DataFrame, fits: list[PhaseFit], plots: Path) -> None:
    """Every plot of the report into ``plots``."""
    from fleetcal.report.cpu import cpu_steps_plot
    from fleetcal.report.model import tornado_plot
    from fleetcal.report.serving import pareto_plot

    plt.rcParams.update({"svg.hashsalt": "fleetcal", "font.size": 9})
    ok = runs[runs["status"] == "ok"] if not runs.empty else runs
    throughput_vs_batch(ok, fits, plots / "throughput_vs_batch.png")
    utilization_vs_batch(tables["utilization"], plots / "utilization_vs_batch.png")
    fleet_by_scenario(tables["fleet"], plots / "fleet_by_scenario.png")
    pareto_plot(tables["serving"], plots / "serving_tradeoff.png")
    calibration(tables["calibration_residuals"], plots / "calibration.png")
    tornado_plot(tables["sensitivity"], plots / "sensitivity.png")
    cpu_steps_plot(tables["cpu_steps"], plots / "cpu_steps.png")
    plt.close("all")
