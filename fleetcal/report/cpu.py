"""The CPU step model in the report: every measured vLLM step against the operator sum, per CPU."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from estimator.cpu_steps import FIT_MAX_BATCH, UndeterminedError
from estimator.cpu_validation import REFERENCE_MODEL, validate
from fleetcal.report.files import round_floats, save_plot

STEP_COLUMNS = [
    "device_name", "session", "model", "phase", "input_len", "output_len", "batch", "role", "measured_ms", "predicted_ms", "error",
    "gemm_ms", "attention_ms", "elementwise_ms", "sampling_ms", "overhead_ms", "run_file",
]


OVERHEAD_COLUMNS = [
    "device_name", "session", "per_step_ms", "per_sequence_ms", "fitted_on", "undetermined", "decode_attention_timed", "held_out",
    "held_out_median_abs_error",
]


def _decode_attention_timing(ops: pd.DataFrame, files: set[str]) -> str:
    """How a session's vLLM decode-attention cases were timed: over a cycled KV cache, or one cache read again and again."""
    impls = set(
        ops.loc[
            ops["run_file"].isin(files) & (ops["operator"] == "attention_decode") & ops["impl"].fillna("").str.startswith("vllm"), "impl"
        ]
    )
    return "; ".join(sorted("KV cycled" if i.endswith("KV cycled") else "one cache (hot)" for i in impls))


def cpu_step_tables(runs: pd.DataFrame, ops: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every step against its prediction, per session: the fitted overheads, how decode attention was timed, the held-out
    error) for each CPU with vLLM-kernel operator curves."""
    steps, overheads = [], []
    cpus = sorted(set(ops.loc[ops["impl"].fillna("").str.startswith("vllm") & ops["device_name"].str.contains(r"\[cpu-"), "device_name"]))
    for dev in cpus:
        try:
            v = validate(runs, ops, dev)
        except UndeterminedError:
            continue
        df = v.steps
        steps.append(df.assign(device_name=dev))
        for name, o in sorted(v.overheads.items()):
            held = df.loc[(df["session"] == name) & (df["role"] == "held out"), "error"].abs()
            overheads.append({"device_name": dev, "session": name, "per_step_ms": o.per_step * 1e3, "per_sequence_ms": o.per_sequence * 1e3,
                              "fitted_on": o.fitted_on, "undetermined": "; ".join(o.undetermined),
                              "decode_attention_timed": _decode_attention_timing(ops, v.session_files[name]),
                              "held_out": len(held), "held_out_median_abs_error": held.median()})  # fmt: skip
    table = pd.concat(steps, ignore_index=True)[STEP_COLUMNS] if steps else pd.DataFrame(columns=STEP_COLUMNS)
    return table, pd.DataFrame(overheads, columns=OVERHEAD_COLUMNS)


def step_summary(steps: pd.DataFrame) -> pd.DataFrame:
    """Median and largest |error| per device, model, phase and role."""
    if steps.empty:
        return pd.DataFrame(columns=["device_name", "model", "phase", "role", "configurations", "median_abs_error", "max_abs_error"])
    s = steps.assign(abs_error=steps["error"].abs())
    return s.groupby(["device_name", "model", "phase", "role"], as_index=False).agg(
        configurations=("abs_error", "size"), median_abs_error=("abs_error", "median"), max_abs_error=("abs_error", "max")
    )


def readme_lines(steps: pd.DataFrame, overheads: pd.DataFrame) -> list[str]:
    """The README's CPU step-model section: held-out error, the fitted overheads, and where the time goes."""
    lines = ["### CPU: vLLM steps predicted from operator curves", ""]
    if steps.empty:
        return lines + ["No CPU has vLLM-kernel operator curves and measured steps yet (`scripts/measure_cpu_steps.sh`).", ""]
    held = steps[steps["role"] == "held out"]
    for dev, g in held.groupby("device_name"):
        lines.append(
            f"- **{dev}**: median |error| over {len(g)} held-out steps **{g['error'].abs().median():.1%}** "
            f"(decode {g.loc[g['phase'] == 'decode', 'error'].abs().median():.1%}, prefill "
            f"{g.loc[g['phase'] == 'prefill', 'error'].abs().median():.1%})."
        )
    lines += ["", round_floats(step_summary(steps), 3).to_markdown(index=False), ""]
    lines += [
        f"Each step is the sum of its operators, read off curves timed with vLLM's own CPU kernels at the model's shapes "
        f"on the engine's thread count, plus an engine overhead (per step and per sequence) fitted on {REFERENCE_MODEL}'s decode at "
        f"batches up to {FIT_MAX_BATCH} only; everything else is held out. Each measuring session (run files less than an hour "
        "apart) is predicted from its own operator curves and overheads only: this machine's speed drifts between sessions. Per "
        "session: the fitted "
        f"overheads (a term not at least twice its standard error is named undetermined, with its estimate and 2 standard errors), how its "
        f"decode-attention curve was timed (over a KV cache cycled through memory, as a step reads it, or, before that fix, one cache read "
        f"again and again, which stays hot and times 1.5-2.3x too fast), and its held-out error:",
        "",
    ]
    lines += [round_floats(overheads, 3).to_markdown(index=False), ""]
    show = held[held["phase"] == "decode"].sort_values(["device_name", "session", "model", "input_len", "batch"])
    cols = [c for c in STEP_COLUMNS if c not in ("phase", "output_len", "role", "run_file")]
    lines += ["Held-out decode steps, where the time goes (ms):", "", round_floats(show[cols], 3).to_markdown(index=False), ""]
    return lines + ["All steps, prefill included: `results/tables/cpu_steps.md`; plot `results/plots/cpu_steps.png`.", ""]


def cpu_steps_plot(steps: pd.DataFrame, path: Path) -> None:
    """Predicted against measured step time, log-log, fitted and held-out apart, one marker per model."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for (model, role), g in steps.groupby(["model", "role"]):
        ax.scatter(g["measured_ms"], g["predicted_ms"], label=f"{model} ({role})", marker="o" if role == "fitted" else "^", s=22)
    if not steps.empty:
        lo, hi = steps[["measured_ms", "predicted_ms"]].min().min() * 0.8, steps[["measured_ms", "predicted_ms"]].max().max() * 1.25
        for f, style in ((1.0, "-"), (1.15, ":"), (1 / 1.15, ":")):
            ax.plot([lo, hi], [lo * f, hi * f], style, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("measured step, ms (decode step, or prefill to first token)")
    ax.set_ylabel("operator sum + fitted overhead, ms")
    ax.set_title("CPU step model: predicted against measured (±15% dotted)")
    save_plot(fig, path, steps)
