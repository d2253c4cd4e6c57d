"""``fleetcal estimate``: GPUs needed per scenario and GPU type."""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from core.args import add_results_args
from core.errors import UsageError
from core.hardware import add_gpu_file_arg, get_gpu, use_gpu_files
from estimator.article import ArticleInputs, article_estimate
from estimator.calibration import PhaseFit, calibrate, calibration_table, residuals_table
from estimator.fleet import SCENARIOS, Traffic, price_notes, project
from estimator.operators import load_ops
from estimator.runs import load_runs
from estimator.utilization import measured_utilization, utilization_table

ARTICLE_ONLY = ("params_per_token", "utilization", "precision")
FLAG_NOTES = {
    "ttft_ms": " (no target)",
    "decode_context_len": "; prefill's prompts follow from it: r / (r + 0.5) of it, r the input tokens per output token",
}


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    p.add_argument("--gpu", action="append", help="catalogued GPU, repeatable; default: H100 and A100")
    p.add_argument("--model", default="deepseek-v3", help="catalogued model or config directory (roofline, active, direct)")
    p.add_argument("--config", type=Path, help="TOML or JSON file of traffic, SLO and article inputs (names as the flags, with _)")
    add_results_args(p)
    add_gpu_file_arg(p)
    p.add_argument(
        "--run", type=Path, help="one results file whose measured utilization the 'measured' scenario uses (default: the best in --results)"
    )
    p.add_argument(
        "--calibration",
        action="store_true",
        help="also print each run's MFU/MBU beside 50%%, the roofline fit, its residuals and held-out errors",
    )
    p.add_argument(
        "--gpu-hour-usd",
        type=float,
        default=None,
        help="price of one GPU-hour for every GPU (default: the catalog's dated price, where it has one)",
    )
    g = p.add_argument_group("traffic and SLO (defaults: the article's traffic, DeepSeek's published ratios)")
    for f in fields(Traffic):
        if f.type in ("float", "int"):
            g.add_argument(
                "--" + f.name.replace("_", "-"), type=float, default=None, help=f"default {f.default:g}{FLAG_NOTES.get(f.name, '')}"
            )
    g.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default bf16)")
    a = p.add_argument_group("the article's own assumptions")
    a.add_argument("--params-per-token", type=float, default=None, help="default 671e9 (total parameters)")
    a.add_argument("--utilization", type=float, default=None, help="default 0.5")
    a.add_argument("--precision", default=None, help="default fp8 (A100: its INT8 peak)")


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({exc})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: must hold a table of settings")
    known = {f.name for f in fields(Traffic)} | set(ARTICLE_ONLY)
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown settings {', '.join(unknown)}; use any of {', '.join(sorted(known))}")
    return data


def validate_args(args: argparse.Namespace) -> tuple[Traffic, ArticleInputs, tuple[str, ...], tuple[str, ...]]:
    settings: dict[str, Any] = _read_config(args.config) if args.config else {}
    for name in [f.name for f in fields(Traffic)] + list(ARTICLE_ONLY):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    traffic_kw = {k: v for k, v in settings.items() if k not in ARTICLE_ONLY}
    try:
        traffic = Traffic(**traffic_kw)
    except TypeError as exc:
        raise UsageError(f"bad traffic setting: {exc}") from exc
    article = traffic.article_inputs(**{k: settings[k] for k in ARTICLE_ONLY if k in settings})
    gpus = tuple(dict.fromkeys(get_gpu(g).name for g in (args.gpu or ["H100", "A100"])))  # H100 and h100 are one GPU
    if any(not get_gpu(g).peak_tflops for g in gpus):
        raise UsageError("a GPU without peaks")
    scenarios = tuple(dict.fromkeys(args.scenario or SCENARIOS))
    if args.gpu_hour_usd is not None and not 0 < args.gpu_hour_usd <= 1e4:  # nan fails both comparisons
        raise UsageError(f"--gpu-hour-usd must be a price in dollars, above 0 and at most 10000; got {args.gpu_hour_usd}")
    return traffic, article, gpus, scenarios


def main(args: argparse.Namespace) -> int:
    use_gpu_files(args.gpu_file)
    traffic, article, gpus, scenarios = validate_args(args)
    if args.run is not None and not args.run.is_file():
        raise UsageError(f"--run {args.run}: no such results file")
    runs = load_runs(args.results)
    fits = calibrate(runs)
    measured = measured_utilization(load_runs(args.run) if args.run else runs, traffic.tokens_per_s_per_user)
    ops = load_ops(args.results if args.results.is_dir() else args.results.parent, warn=False)
    rows = project(args.model, gpus, scenarios, traffic, article, runs=runs, measured=measured, ops=ops, gpu_hour_usd=args.gpu_hour_usd)
    art = article_estimate(article, gpus)
    by_scenario: dict[str, dict[str, int | None]] = {}
    for r in rows:
        by_scenario.setdefault(r["scenario"], {})[r["gpu"]] = r["gpus"]
    doc = {
        "demand_ops_per_s": art["demand_ops_per_s"],
        "demand_ops_per_s_exact": art["demand_ops_per_s_exact"],
        "rounding": art["rounding"],
        "scenarios": list(scenarios),
        "gpus": by_scenario[scenarios[0]],
        "gpus_by_scenario": by_scenario,
        "rows": rows,
        "model": args.model,
        "traffic": traffic.__dict__,
        "article_inputs": article.__dict__,
        "measured_utilization": measured,
    }
    if args.calibration:
        doc["calibration"] = calibration_report(runs, fits)
    if args.json:
        print(json.dumps(doc, default=str))
        return 0
    if args.calibration:
        print(format_calibration(doc["calibration"]))
    print(f"article demand: {art['demand_ops_per_s_exact']:.4e} ops/s, published as {art['demand_ops_per_s']:.1e} ({art['rounding']})")
    for name, d in art["details"].items():
        print(f"  article: {name} {d['gpus']:,} GPUs ({d['gpus_exact']:.2f} at {d['peak_tflops_used']:g} TFLOPS, truncated)")
    print(format_rows(rows, args.gpu_hour_usd))
    return 0


def format_rows(rows: list[dict[str, Any]], gpu_hour_usd: float | None = None) -> str:
    """Scenarios x GPUs as a table, with how each number came about."""
    df = pd.DataFrame(rows)
    wide = df.pivot(index="scenario", columns="gpu", values="gpus")
    wide = wide.reindex(index=list(dict.fromkeys(df["scenario"])), columns=list(dict.fromkeys(df["gpu"])))
    lines = [wide.to_string(na_rep="n/a", float_format=lambda v: f"{v:,.0f}"), ""]
    cost = df.pivot(index="scenario", columns="gpu", values="usd_per_day").reindex(index=wide.index, columns=wide.columns)
    if cost.notna().any().any():
        lines += ["USD per day (those GPUs rented 24 h):", cost.to_string(na_rep="n/a", float_format=lambda v: f"{v:,.0f}"), ""]
        lines += [f"  {note}" for note in price_notes(tuple(wide.columns), gpu_hour_usd)] + [""]
    for sc, group in df.groupby("scenario", sort=False):
        hows = list(dict.fromkeys(group["how"]))
        if len(hows) == 1:
            lines.append(f"  {sc}: {hows[0]}")
        else:
            lines += [f"  {sc} ({g}): {h}" for g, h in zip(group["gpu"], group["how"])]
    return "\n".join(lines)


def calibration_report(runs: pd.DataFrame, fits: list[PhaseFit]) -> dict[str, Any]:
    """Utilization of every measured configuration, the fits, and each fit's residuals (error = predicted / measured - 1)."""
    res = residuals_table(fits)
    if not res.empty:
        res["error"] = (res["predicted_ms"] / res["measured_ms"] - 1).round(4)
        res[["measured_ms", "predicted_ms"]] = res[["measured_ms", "predicted_ms"]].round(4)
    return {
        "utilization": utilization_table(runs).to_dict(orient="records"),
        "fits": calibration_table(fits).to_dict(orient="records"),
        "residuals": res.to_dict(orient="records"),
    }


def format_calibration(cal: dict[str, Any]) -> str:
    pd.set_option("display.width", 200)
    util = pd.DataFrame(cal["utilization"])
    lines = ["== measured utilization (MFU, MBU) beside the article's 50% =="]
    lines.append(util.to_string(index=False) if not util.empty else "no measurements")
    lines += ["", "== roofline fit: time = overhead + max(FLOPs / (c x peak), bytes / (m x bandwidth)) =="]
    fits = pd.DataFrame(cal["fits"])
    lines.append(fits.to_string(index=False) if not fits.empty else "nothing to fit: measure prefill and decode")
    res = pd.DataFrame(cal["residuals"])
    if not res.empty:
        lines += ["", "== residuals (error = predicted / measured - 1) ==", res.to_string(index=False)]
    return "\n".join(lines) + "\n"
