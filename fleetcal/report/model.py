"""The report's serving-model tables: the per-operator breakdown of DeepSeek's decode and prefill steps as the
model sees them, and the sensitivity of the backtest fleet to each assumption (a tornado plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.deployments import load_deployments
from core.hardware import get_gpu
from estimator.arch import load_arch
from estimator.fleet import article_inputs as article
from estimator.fleet import default_request, roofline_fleet
from estimator.kernels import kernels_for
from estimator.planning import Rejection
from estimator.sizing import Sizing, deployment_layouts, sensitivity
from estimator.traffic import Request
from fleetcal.report.files import round_floats, save_plot

BACKTEST_START, BACKTEST_END = "<!-- backtest:start -->", "<!-- backtest:end -->"


def _deepseek() -> tuple[object, Request]:
    d = load_deployments()[0]
    return d, Request.of_deployment(d)


def _sized(s: Sizing | Rejection) -> Sizing:
    if isinstance(s, Rejection):  # the report's own scenarios: a figure that cannot be sized is a bug, said in one line
        raise ValueError(f"the report's serving-model fleet cannot be sized: {s.text}")
    return s


def step_breakdown(ops: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per operator of one decode and one prefill step of DeepSeek's deployment, as the model sizes it."""
    d, request = _deepseek()
    sizing = _sized(roofline_fleet(d.model, get_gpu(d.gpu), request, ops, peak=False))
    rows = []
    for phase, st in zip(("decode", "prefill"), sizing.steps):
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
    d, request = _deepseek()
    gpu = get_gpu(d.gpu)
    arch = load_arch(d.model)
    kernels, _ = kernels_for(gpu, ops, arch.fp8_block_scaled)
    layouts = deployment_layouts(d.model)
    assert layouts is not None, "the reference deployment publishes its layouts (core/data/deployments.toml)"
    rows = sensitivity(arch, gpu, kernels, request, layouts)
    return pd.DataFrame(rows)[["assumption", "low", "high", "gpus_at_low", "gpus_at_high", "central_gpus", "swing"]]


def kernels_before_after(ops: pd.DataFrame, gpus: tuple[str, ...]) -> pd.DataFrame:
    """The article's traffic at the peak on each GPU: the serving model on published kernel figures only
    (before any GPU was measured) and with the operators measured here swapped in (after)."""
    rows = []
    for name in gpus:
        gpu = get_gpu(name)
        request = default_request("deepseek-v3", article("deepseek-v3"))
        before = _sized(roofline_fleet("deepseek-v3", gpu, request, ops, peak=True, published_only=True))
        after = _sized(roofline_fleet("deepseek-v3", gpu, request, ops, peak=True))
        rows.append({"gpu": gpu.name, "published_kernels_gpus": before.gpus, "with_measured_kernels_gpus": after.gpus,
                     "change_pct": (after.gpus / before.gpus - 1) * 100, "kernels": after.kernels_source})  # fmt: skip
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
    ax.set(
        xlabel="H800 for DeepSeek's day-6 traffic (daily mean)",
        title="What moves the serving model's fleet: each assumption over its range",
    )
    save_plot(fig, path, sens)
    plt.close(fig)


def readme_lines(breakdown: pd.DataFrame, sens: pd.DataFrame, before_after: pd.DataFrame) -> list[str]:
    lines = []
    if not before_after.empty:
        lines += [
            "### Measured kernels against published ones: the fleet before and after",
            "",
            "The `roofline` fleet for the article's traffic (peak, whole instances) on published kernel figures only, and with the "
            "operators measured on a GPU of the same architecture swapped in (GEMMs, prefill attention, norms; `estimator/kernels.py`). "
            "The backtest above shows the same pair as `roofline (published kernels)` and `roofline`.",
            "",
            round_floats(before_after, 3).to_markdown(index=False),
            "",
        ]
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
                  "The backtest's daily-mean H800 fleet with each assumption at the ends of its range (`core/data/kernels.toml`), "
                  "the others central; largest swing first. Plot: `results/plots/sensitivity.png`.", "",
                  round_floats(sens, 3).to_markdown(index=False), ""]  # fmt: skip
    return lines


def backtest_paragraph(b: pd.DataFrame, v: pd.DataFrame) -> str:
    """The README's backtest summary above the quick start, every figure read from the backtest and validation tables."""
    d = load_deployments()[0]
    row = b.set_index("method")
    err = row["error_pct"]
    rl, pub = row.loc["roofline"], row.loc["published per-node throughput"]
    val = v.set_index("id")["error_pct"]
    profile = v.set_index("id").loc["deepseek-profile-prefill-ep32-4k", "published"]
    uncached_node = pub["prefill_uncached_tokens_per_s_per_gpu"] * d.gpus_per_node
    return "\n".join(
        [
            BACKTEST_START,
            f"The backtest against DeepSeek's published {d.gpus_average:,.0f} {d.gpu} (daily mean) shows that no single scenario is right: "
            f"the article's errors largely cancel ({err['article']:+.0f}%), fixing only the parameter count is far worse "
            f"({err['active']:+.0f}%), "
            f"and the serving model, built from kernel-level figures only, is optimistic ({err['roofline']:+.0f}%; "
            f"{err['roofline peak']:+.0f}% "
            f"against the {d.nodes_peak * d.gpus_per_node:,.0f} GPUs of the peak). It finds DeepSeek's {d.tokens_per_s_per_user:g} tok/s "
            "per user at "
            f"{rl['decode_batch_per_gpu']:.0f} sequences per GPU and {rl['decode_tokens_per_s_per_gpu']:,.0f} output tok/s per GPU where "
            "DeepSeek "
            f"averaged {pub['decode_tokens_per_s_per_gpu']:,.0f}, and {rl['prefill_uncached_tokens_per_s_per_gpu']:,.0f} uncached prompt "
            "tok/s per GPU "
            f"where DeepSeek averaged {pub['prefill_uncached_tokens_per_s_per_gpu']:,.0f}: its published rates are "
            f"{pub['decode_tokens_per_s_per_gpu'] / rl['decode_tokens_per_s_per_gpu']:.0%} of the decode capacity and "
            f"{pub['prefill_uncached_tokens_per_s_per_gpu'] / rl['prefill_uncached_tokens_per_s_per_gpu']:.0%} of the prefill capacity "
            "the model "
            "finds. Nothing in it was fitted to that deployment.",
            "",
            "Where the gap is: on steady-state profiles of full nodes (`fleetcal validate`) the model is "
            f"{val['deepseek-profile-prefill-ep32-4k']:+.0f}% on DeepSeek's own EP32 prefill profile, "
            f"{val['sglang-deepseek-prefill-ep32-4k-perfect-eplb']:+.0f}% on SGLang's with perfectly balanced experts and "
            f"{val['sglang-deepseek-prefill-ep32-4k-default-eplb']:+.0f}% with its default balancer, "
            f"{val['sglang-deepseek-decode-ep72-b256-2k']:+.0f}% on SGLang's 256-sequence decode and "
            f"{val['deepseek-profile-decode-ep128-b128-4k']:+.0f}% on DeepSeek's 128-sequence one. The most uncertain operator is "
            "prefill's expert-parallel dispatch and combine (DeepEP's normal kernels over RDMA, 16,384 tokens per GPU in two "
            "micro-batches): "
            "the model takes DeepEP's published bandwidth, measured with the communication kernels running alone, not beside the GEMMs "
            "they are overlapped with (`core/data/kernels.toml`). A kernel "
            "timeline of one EP32 prefill step (each micro-batch's dispatch and combine beside its attention and expert GEMMs) would "
            "settle it. "
            f"The rest of the gap is not a kernel: DeepSeek's production prefill ran at {uncached_node / profile:.0%} of its own profiled "
            f"capacity ({uncached_node:,.0f} against {profile:,.0f} uncached input tok/s per node). How full its GPUs ran on average "
            "(queues kept short for latency, load between scaling steps, imbalance its balancers left) was not published, and the model "
            "does not guess it.",
            BACKTEST_END,
        ]
    )
