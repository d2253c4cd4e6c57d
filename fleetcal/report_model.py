"""The report's serving-model tables: the per-operator breakdown of DeepSeek's decode and prefill steps as the
model sees them, and the sensitivity of the backtest fleet to each assumption (a tornado plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from estimator.backtest import deployment_traffic, load_deployments
from estimator.fleet import Traffic, roofline_fleet, service_of
from estimator.hardware import get_gpu
from estimator.kernels import kernels_for
from estimator.serving import load_arch
from estimator.sizing import sensitivity
from fleetcal.report_files import round_floats, save_plot


def _deepseek() -> tuple[object, Traffic]:
    d = load_deployments()[0]
    return d, deployment_traffic(d)


def step_breakdown(ops: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per operator of one decode and one prefill step of DeepSeek's deployment, as the model sizes it."""
    d, traffic = _deepseek()
    sizing, _ = roofline_fleet(d.model, get_gpu(d.gpu), traffic, ops, peak=False)
    rows = []
    for phase, st in zip(("decode", "prefill"), sizing.steps or ()):
        total = sum(st.breakdown_ms.values())
        rows += [{"phase": phase, "operator": k, "ms": v, "share": v / total if total else 0.0, "bound": st.op_bounds.get(k, ""),
                  "efficiency_source": st.op_sources.get(k, "")} for k, v in st.breakdown_ms.items()]  # fmt: skip
    return pd.DataFrame(rows)


def _short(source: str) -> str:
    """A source as the README's operator table shows it: its first clause, without the record paths."""
    return source.split(" (")[0].split(";")[0]


def operator_table_wide(breakdown: pd.DataFrame) -> pd.DataFrame:
    """One line per operator: decode and prefill milliseconds and bounds, and the efficiency source of each phase."""
    rows = []
    for op in dict.fromkeys(breakdown["operator"]):
        line: dict[str, Any] = {"operator": op}
        for phase in ("decode", "prefill"):
            r = breakdown[(breakdown["operator"] == op) & (breakdown["phase"] == phase)]
            line[f"{phase} ms"] = f"{r['ms'].iloc[0]:.3g}" if not r.empty else ""
            line[f"{phase} bound"] = r["bound"].iloc[0] if not r.empty and r["ms"].iloc[0] else ""
        srcs = [_short(s) for s in breakdown.loc[breakdown["operator"] == op, "efficiency_source"] if s]
        line["efficiency source"] = " / ".join(dict.fromkeys(srcs))
        rows.append(line)
    return pd.DataFrame(rows)


def sensitivity_table(ops: pd.DataFrame) -> pd.DataFrame:
    """The backtest's daily-mean fleet at each end of every assumption's range (the rest central)."""
    d, traffic = _deepseek()
    gpu = get_gpu(d.gpu)
    arch = load_arch(d.model)
    kernels, _ = kernels_for(gpu, ops, arch.fp8_block_scaled)
    out = traffic.output_tokens_per_s
    rows = sensitivity(arch, gpu, kernels, out, out * traffic.input_tokens_per_output_token, service_of(traffic))
    return pd.DataFrame(rows)[["assumption", "low", "high", "gpus_at_low", "gpus_at_high", "central_gpus", "swing"]]


def kernels_before_after(ops: pd.DataFrame, gpus: tuple[str, ...]) -> pd.DataFrame:
    """The article's traffic at the peak on each GPU: the serving model on published kernel figures only
    (before any GPU was measured) and with the operators measured here swapped in (after)."""
    rows = []
    for name in gpus:
        gpu = get_gpu(name)
        before, _ = roofline_fleet("deepseek-v3", gpu, Traffic(), ops, peak=True, published_only=True)
        after, source = roofline_fleet("deepseek-v3", gpu, Traffic(), ops, peak=True)
        rows.append({"gpu": gpu.name, "published_kernels_gpus": before.gpus, "with_measured_kernels_gpus": after.gpus,
                     "change_pct": (after.gpus / before.gpus - 1) * 100, "kernels": source})  # fmt: skip
    return pd.DataFrame(rows)


def tornado_plot(sens: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    s = sens[sens["swing"] > 0].iloc[::-1]
    if not s.empty:
        base = float(s["central_gpus"].iloc[0])
        for i, (_, r) in enumerate(s.iterrows()):
            lo, hi = sorted((r["gpus_at_low"], r["gpus_at_high"]))
            ax.barh(i, hi - lo, left=lo, color="tab:blue")
            ax.text(hi, i, f"  {r['low']:g} .. {r['high']:g}", va="center", fontsize=7)
        ax.axvline(base, color="black", linewidth=1, label=f"central: {base:,.0f} GPUs")
        ax.axvline(1814, color="red", linestyle="--", label="DeepSeek's published 1,814 H800")
        ax.set_yticks(range(len(s)), s["assumption"])
        ax.legend(fontsize=8, loc="lower right")
    ax.set(xlabel="H800 for DeepSeek's day-6 traffic (daily mean)", title="What moves the serving model's fleet: each assumption over its range")
    save_plot(fig, path, sens)
    plt.close(fig)


def readme_lines(breakdown: pd.DataFrame, sens: pd.DataFrame, before_after: pd.DataFrame) -> list[str]:
    lines = []
    if not before_after.empty:
        lines += ["### Measured kernels against published ones: the fleet before and after", "",
                  "The `roofline` fleet for the article's traffic (peak, whole instances) on published kernel figures only, and with the "
                  "operators measured on a GPU of the same architecture swapped in (GEMMs, prefill attention, norms; `estimator/kernels.py`). "
                  "The backtest above shows the same pair as `roofline (published kernels)` and `roofline`.", "",
                  round_floats(before_after, 3).to_markdown(index=False), ""]  # fmt: skip
    lines += ["### The serving model's DeepSeek steps, by operator", ""]
    if not breakdown.empty:
        wide = operator_table_wide(breakdown)
        lines += ["Milliseconds per operator of one decode step (one GPU of an EP144 instance, the batch the model finds at "
                  "DeepSeek's 20 tok/s per user and 4,989-token KV) and one prefill step (16,384 uncached tokens per GPU of an "
                  "EP32 instance, DeepSeek's published prefill batch), each operator at its own precision's peak and kernel efficiency, "
                  "with what bounds it and where its efficiency comes from; two micro-batches, so every weight is read twice, and "
                  "communication hidden stage by stage (`estimator/serving.py`, `exposed_per_moe_layer`). "
                  "Full table: `results/tables/step_breakdown.csv`.", "", wide.to_markdown(index=False), ""]  # fmt: skip
    if not sens.empty:
        lines += ["### Sensitivity: what to measure first", "",
                  "The backtest's daily-mean H800 fleet with each assumption at the ends of its range (`estimator/data/kernels.toml`), "
                  "the others central; largest swing first. Plot: `results/plots/sensitivity.png`.", "",
                  round_floats(sens, 3).to_markdown(index=False), ""]  # fmt: skip
    return lines
