"""``fleetcal report``: tables, plots and the generated blocks of the README and docs/, regenerated from results/runs.

Deterministic: rows are sorted, floats rounded, no timestamps are written, and PNGs carry no
creation metadata, so running it twice gives identical files. Each plot's data is also written
as CSV beside it, which the tests compare. Every file is written atomically (fleetcal/report/files.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UsageError
from core.paths import README, RESULTS_DIR
from estimator.backtest import backtest
from estimator.calibration import PhaseFit, calibrate, calibration_table, residuals_table
from estimator.fleet import SCENARIOS, price_notes, project
from estimator.operators import gemm_curve, load_ops, operator_table
from estimator.runs import load_run_table, run_columns
from estimator.sim.measured import load_comparison
from estimator.utilization import ARTICLE_UTILIZATION, measured_utilization, utilization_table
from estimator.validation import load_rows, summary, validate
from fleetcal.commands.models import MODELS_END, MODELS_START, docs_block
from fleetcal.commands.plan import PLAN_END, PLAN_START, readme_block
from fleetcal.peers.side_by_side import PEER_END, PEER_START, peer_block
from fleetcal.report.commands_page import COMMANDS_END, COMMANDS_START, commands_block
from fleetcal.report.cpu import cpu_step_tables
from fleetcal.report.cpu import readme_lines as cpu_readme_lines
from fleetcal.report.crosscheck import CROSS_END, CROSS_START, SERVE_CROSS_END, SERVE_CROSS_START, crosscheck_block, crosscheck_serve_block
from fleetcal.report.files import check_writable, generated_pages, rewrite_pages, round_floats, write_table
from fleetcal.report.model import (
    BACKTEST_END,
    BACKTEST_START,
    backtest_paragraph,
    kernels_before_after,
    readme_lines,
    sensitivity_table,
    step_breakdown,
)
from fleetcal.report.ops import compiled_speedup, engine_table, gpu_section
from fleetcal.report.plots import build_plots
from fleetcal.report.repeats import readme_lines as repeats_readme_lines
from fleetcal.report.repeats import repeats_table
from fleetcal.report.serving import readme_lines as serving_readme_lines
from fleetcal.report.serving import serving_table
from fleetcal.report.sim_check import SIMCHECK_END, SIMCHECK_START, simcheck_block

START, END = "<!-- results:start -->", "<!-- results:end -->"
KEY_START, KEY_END = "<!-- keytable:start -->", "<!-- keytable:end -->"
FLEET_MODEL = "deepseek-v3"  # the article's model: the fleet every table projects
FLEET_GPUS = ("H100", "A100", "H800", "H200", "B200", "H20")
MEASUREMENT_COLUMNS = run_columns(
    "device_name", "model", "engine", "mode", "batch_size", "concurrency", "input_len", "output_len", "status",
    "output_tokens_per_s", "total_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_step_ms",
    "ttft_ms_p50", "tpot_ms_p50", "itl_ms_p50", "e2el_ms_p50", "output_tokens_per_s_per_user",
    "mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak", "run_file",
)  # fmt: skip


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="results directory: reads runs/, writes tables/ and plots/")
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="also rewrite the generated blocks of the README and docs/ pages (key table, results, backtest, cross-checks, plan example, "
             "commands); without it only tables/ and plots/ of --results are written",
    )
    p.add_argument("--readme", type=Path, help="README whose generated blocks are rewritten (implies --write-docs; default: the project's)")
    p.add_argument(
        "--docs", type=Path, help="folder of pages whose generated blocks are rewritten (implies --write-docs; default: the README's docs/)"
    )


@dataclass(frozen=True)
class Report:
    """Everything the report writes, computed once: the tables (each written as CSV and markdown) and what they came from."""

    tables: dict[str, pd.DataFrame]
    runs: pd.DataFrame
    fits: list[PhaseFit]
    measured: dict[str, Any] | None
    skipped: list[str]


def build_report(results: Path) -> Report:
    """Every table of the report from the runs under ``results``."""
    runs, skipped = load_run_table(results, warn=False)  # named once it is clear the report is written
    fits = calibrate(runs)
    measured = measured_utilization(runs)
    ops = load_ops(results, warn=False)
    t: dict[str, pd.DataFrame] = {}
    t["measurements"] = runs.reindex(columns=MEASUREMENT_COLUMNS) if not runs.empty else pd.DataFrame(columns=MEASUREMENT_COLUMNS)
    t["utilization"] = utilization_table(runs)
    fleet = pd.DataFrame(project(FLEET_MODEL, FLEET_GPUS, SCENARIOS, runs=runs, measured=measured, ops=ops))
    t["fleet"] = fleet[["scenario", "gpu", "gpus", "utilization", "usd_per_day", "usd_per_million_output_tokens", "how", "price_source"]]
    t["backtest"] = backtest(measured, ops)
    t["validation"] = validate(load_rows()[0], ops).drop(columns=["how"])
    t["calibration"] = calibration_table(fits)
    t["calibration_residuals"] = residuals_table(fits)
    t["operators"] = operator_table(ops)
    t["gemm_curve"] = gemm_curve(ops)
    t["engines"] = engine_table(runs)
    t["compiled_speedup"] = compiled_speedup(t["engines"])
    t["step_breakdown"] = step_breakdown(ops)
    t["sensitivity"] = sensitivity_table(ops)
    t["kernels_before_after"] = kernels_before_after(ops, FLEET_GPUS)
    t["cpu_steps"], t["cpu_overheads"] = cpu_step_tables(runs, ops)
    t["serving"] = serving_table(runs)
    t["repeats"] = repeats_table(runs)
    t["sim_vs_serve"] = load_comparison(results)
    return Report(t, runs, fits, measured, skipped)


# --- README ----------------------------------------------------------------------------------


def _utilization_lines(util: pd.DataFrame, m: dict[str, Any] | None) -> list[str]:
    """Measured utilization beside the article's 50%, and the figure the measured scenario uses."""
    lines = ["### Measured utilization against the article's 50%", ""]
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
        summary["article_utilization"] = ARTICLE_UTILIZATION
        lines += [round_floats(summary, 3).to_markdown(index=False), ""]
        lines += [
            "`best_tokens_per_s` is prefill tokens/s for prefill, decode tokens/s for decode and output tokens/s otherwise. MFU/MBU are "
            "against the datasheet peak for catalogued GPUs and against the run's own microbenchmark peaks otherwise (CPUs). Full table: "
            "`results/tables/utilization.md`.",
            "",
        ]
    if m:
        speed = f", {m['tokens_per_s_per_user']:g} tok/s per user" if m.get("tokens_per_s_per_user") else ""
        lines += [
            f"Measured utilization the `measured` scenario uses, counted as the article's formula counts (2 × parameters × output tokens/s "
            f"over the peak): **{m['utilization']:.1%}** ({m['engine']} {m['mode']} at size {m['size']}{speed}, {m['model']} on "
            f"{m['device_name']}, "
            f"against the {m['against']}; the most relevant run: GPU before CPU, at the per-user target before not).",
            "",
        ]
    return lines


def _fleet_lines(f: pd.DataFrame) -> list[str]:
    """The article's fleet per scenario and GPU, its cost, and how each scenario is computed."""
    lines = ["### Fleet for the article's traffic (DeepSeek-V3, 1e8 visits x 10 questions x 1,000 tokens a day)", ""]
    wide = f.pivot(index="scenario", columns="gpu", values="gpus").reindex(index=list(SCENARIOS), columns=list(FLEET_GPUS))
    wide = wide.map(lambda v: "n/a" if pd.isna(v) else f"{int(v):,}")
    lines += [wide.reset_index().to_markdown(index=False), ""]
    cost = f.pivot(index="scenario", columns="gpu", values="usd_per_day").reindex(index=list(SCENARIOS), columns=list(FLEET_GPUS))
    lines += ["Dollars a day for those GPUs rented around the clock (per million output tokens in `results/tables/fleet.csv`):", ""]
    lines += [cost.map(lambda v: "n/a" if pd.isna(v) else f"{v:,.0f}").reset_index().to_markdown(index=False), ""]
    lines += [f"- {note}" for note in price_notes(FLEET_GPUS)] + [""]
    lines += ["How each scenario is computed (H100 column):", ""]
    for _, row in f[f["gpu"] == "H100"].iterrows():
        lines.append(f"- **{row['scenario']}**: {row['how']}")
    return lines


def readme_section(r: Report) -> str:
    """The README's results section: utilization beside 50%, fleet projections, backtest, calibration."""
    t = r.tables
    lines = [START, "", "_Generated by `fleetcal report --write-docs` from `results/runs/`; do not edit by hand._", ""]
    lines += _utilization_lines(t["utilization"], r.measured) + _fleet_lines(t["fleet"])
    lines += ["", "### Backtest against DeepSeek's published fleet (1,814 H800 on average, 2,224 at the peak)", ""]
    b = t["backtest"][["method", "predicted_gpus", "published_gpus", "error_pct", "how"]]
    lines += [b.to_markdown(index=False), ""]
    lines += validation_lines(t["validation"])
    lines += readme_lines(t["step_breakdown"], t["sensitivity"], t["kernels_before_after"])
    lines += gpu_section(t["operators"], t["engines"], t["compiled_speedup"])
    lines += cpu_readme_lines(t["cpu_steps"], t["cpu_overheads"])
    lines += serving_readme_lines(t["serving"])
    lines += repeats_readme_lines(t["repeats"])
    cal = t["calibration"]
    lines += ["### Roofline calibration", ""]
    lines += [cal.to_markdown(index=False) if not cal.empty else "No prefill/decode measurements to fit yet.", ""]
    if r.skipped:
        lines += ["Run files skipped (they do not follow the record schema):", "", *[f"- {line}" for line in r.skipped], ""]
    lines += [
        "Plots: `results/plots/` (throughput_vs_batch, utilization_vs_batch, fleet_by_scenario, serving_tradeoff, calibration, "
        "sensitivity, cpu_steps).",
        "",
        END,
    ]
    return "\n".join(lines)


def validation_lines(v: pd.DataFrame) -> list[str]:
    """The README's validation summary: the gated median and worst, and the median by source and kind of row."""
    s = summary(v)
    g = v[v["gate"]].assign(abs_error_pct=lambda d: d["error_pct"].abs())
    by = g.groupby(["source", "kind", "gpu"], as_index=False).agg(rows=("id", "size"), median_abs_error_pct=("abs_error_pct", "median"),
                                                                 median_signed_error_pct=("error_pct", "median"))  # fmt: skip
    return ["### Validation against published end-to-end throughput (`fleetcal validate`)", "",
            f"Over {s['rows']} gated rows of `core/data/validation.toml` (published figures, none fitted): median absolute error "
            f"**{s['median_abs_error_pct']:.1f}%** (signed {s['median_signed_error_pct']:+.1f}%), worst {s['worst_abs_error_pct']:.1f}% "
            f"({s['worst_row']}). By source, kind of row and GPU:", "",
            by.round(1).to_markdown(index=False), "", "Every row: `results/tables/validation.md`.", ""]  # fmt: skip


def key_table(r: Report) -> str:
    """The README's key table: GPUs for the article's traffic per scenario, H100 and A100, with MFU."""
    f = r.tables["fleet"]
    rows = []
    for sc in SCENARIOS:
        g_rows = f[f["scenario"] == sc].set_index("gpu")
        if g_rows.empty:
            continue
        cell = {
            g: ("n/a" if pd.isna(g_rows.loc[g, "gpus"]) else f"{int(g_rows.loc[g, 'gpus']):,}")
            for g in ("H100", "A100")
            if g in g_rows.index
        }
        util = g_rows.loc["H100", "utilization"] if "H100" in g_rows.index else None
        rows.append(
            {
                "scenario": sc,
                "H100": cell.get("H100"),
                "A100": cell.get("A100"),
                "MFU (H100)": "n/a" if util is None or pd.isna(util) else f"{util:.1%}",
            }
        )
    body = pd.DataFrame(rows).to_markdown(index=False) if rows else "No projections yet."
    return "\n".join([KEY_START, body, KEY_END])


def page_blocks(r: Report, results: Path) -> dict[tuple[str, str], str | None]:
    """Every generated block of the README and docs/ pages, by its markers (None: nothing to put there)."""
    return {
        (START, END): readme_section(r),
        (KEY_START, KEY_END): key_table(r),
        (CROSS_START, CROSS_END): crosscheck_block(results),
        (SERVE_CROSS_START, SERVE_CROSS_END): crosscheck_serve_block(results),
        (BACKTEST_START, BACKTEST_END): backtest_paragraph(r.tables["backtest"], r.tables["validation"]),
        (PLAN_START, PLAN_END): readme_block(results),  # also draws the example's plot into results/plots
        (MODELS_START, MODELS_END): docs_block(),
        (PEER_START, PEER_END): peer_block(r.tables["validation"], results / "peer"),
        (COMMANDS_START, COMMANDS_END): commands_block(),
        (SIMCHECK_START, SIMCHECK_END): simcheck_block(r.tables["sim_vs_serve"]),
    }


def run_report(results: Path, readme: Path | None, docs: Path | None = None) -> Report:
    """Compute everything first, then write: tables and plots under ``results``, and only where ``readme`` is given the
    generated blocks of it and of the pages in ``docs`` (each file atomically)."""
    check_writable(results, readme)
    r = build_report(results)
    if r.runs.empty and r.skipped:  # writing now would replace the README's results with "no measurements"
        raise UsageError(f"--results {results}: no usable run file ({'; '.join(r.skipped)}); nothing written")
    for line in r.skipped:
        print(f"fleetcal: skipped run file {line}", file=sys.stderr)
    tables, plots = results / "tables", results / "plots"
    tables.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    for name, df in r.tables.items():
        write_table(df, tables, name)
    build_plots(r.tables, r.runs, r.fits, plots)
    blocks = page_blocks(r, results)
    if readme is not None:
        rewrite_pages(generated_pages(readme, docs), blocks, append=(START, END))
    return r


def main(args: argparse.Namespace) -> int:
    if not (args.results / "runs").is_dir():
        raise UsageError(f"--results {args.results}: no runs/ directory inside; give the results directory")
    pages = args.write_docs or args.readme is not None or args.docs is not None  # naming a page to rewrite asks for it
    readme = (args.readme or README) if pages else None
    docs = (args.docs if args.docs is not None else readme.parent / "docs") if readme is not None else None
    r = run_report(args.results, readme, docs)
    where = f", {readme} and {docs}" if readme is not None else " (README and docs/ left alone; --write-docs rewrites their blocks)"
    print(f"report: {len(r.runs)} records -> {args.results / 'tables'}, {args.results / 'plots'}{where}")
    return 0
