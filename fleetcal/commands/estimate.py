"""``fleetcal estimate``: GPUs needed per scenario and GPU type."""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from core.args import add_results_args
from core.deployments import reference_deployment
from core.errors import UsageError
from core.hardware import add_gpu_file_arg, get_gpu, use_gpu_files
from estimator.article import ArticleInputs, article_estimate, tokens_per_s
from estimator.calibration import PhaseFit, calibrate, calibration_table, residuals_table
from estimator.fleet import SCENARIOS, article_inputs, default_request, price_notes, project
from estimator.operators import load_ops
from estimator.percentile import TRAFFIC_KINDS
from estimator.runs import load_runs
from estimator.traffic import KV_DTYPES, MAX_TOKENS, Request, bounded
from estimator.utilization import measured_utilization, utilization_table
from fleetcal.commands.plan import add_price_arg
from fleetcal.commands.traffic_args import add_traffic_args, read_trace, trace_lengths, traffic_from_args

ARTICLE_ONLY = ("daily_visits", "questions_per_visit", "tokens_per_reply", "params_per_token", "utilization", "precision")
REQUEST_KEYS = ("input_len", "output_len", "cached_fraction", "peak_to_average", "tokens_per_s_per_user", "ttft_ms", "kv_dtype",
                "mtp_tokens")  # fmt: skip
_REF = reference_deployment()


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    p.add_argument("--gpu", action="append", help="catalogued GPU, repeatable; default: H100 and A100")
    p.add_argument("--model", default="deepseek-v3", help="catalogued model or config directory (every scenario)")
    p.add_argument("--config", type=Path, help="TOML or JSON file of request, SLO and article inputs (names as the flags, with _)")
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
    add_price_arg(p)
    g = p.add_argument_group("the requests (defaults: the article's volume served as DeepSeek's day-6 requests were)")
    g.add_argument("--daily-visits", type=float, help="visits a day (default 1e8, the article's)")
    g.add_argument("--questions-per-visit", type=float, help="default 10, the article's")
    g.add_argument("--tokens-per-reply", type=float, help="default 1,000, the article's: with the two above, the output tokens a day")
    g.add_argument("--input-len", type=float, help=f"prompt tokens per request, token-weighted (default {_REF.input_len:,.0f}: DeepSeek's)")
    g.add_argument("--output-len", type=float, help=f"reply tokens per request, token-weighted (default {_REF.output_len:,.0f}: DeepSeek)")
    g.add_argument("--cached-fraction", "--cache-hit-rate", dest="cached_fraction", type=float,
                   help=f"share of each prompt served from the prefix cache (default {_REF.cache_hit_rate:.4g}; --cache-hit-rate: "
                        "the older name)")  # fmt: skip
    g.add_argument("--peak-to-average", type=float, help=f"peak over daily-mean rate (default {_REF.peak_to_average:.4g})")
    g.add_argument("--tokens-per-s-per-user", "--tokens-per-user", dest="tokens_per_s_per_user", type=float,
                   help=f"per-user speed, 1000 / TPOT (default {_REF.tokens_per_s_per_user:g})")  # fmt: skip
    g.add_argument("--ttft-ms", type=float, help="time-to-first-token limit, ms (default: none; 0: none)")
    g.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV-cache dtype (default bf16)")
    g.add_argument("--mtp-tokens", type=int, help="tokens drafted per decode step (default: the model's MTP modules, DeepSeek-V3: 1)")
    add_traffic_args(p)
    a = p.add_argument_group("the article's own assumptions")
    a.add_argument("--params-per-token", type=float, default=None, help="default: the model's published total (DeepSeek-V3: 671e9)")
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
    known = set(REQUEST_KEYS) | set(ARTICLE_ONLY)
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown settings {', '.join(unknown)}; use any of {', '.join(sorted(known))}")
    return data


def _request(model: str, article: ArticleInputs, given: dict[str, Any]) -> Request:
    """The request from the flags (and --config), the rest from the article's volume served as DeepSeek's day-6 requests."""
    base = default_request(model, article)
    out_len = float(given.get("output_len", base.output_len))
    speed = given.get("tokens_per_s_per_user")
    ttft = given.get("ttft_ms")
    if ttft is not None and ttft < 0:
        raise UsageError(f"--ttft-ms must be at least 0 (0: no limit), got {ttft:g}")
    if speed is not None:
        bounded("--tokens-per-s-per-user", speed, 0, 1e6, lo_open=True)
    kw = {k: given[k] for k in ("input_len", "cached_fraction", "peak_to_average", "kv_dtype", "mtp_tokens") if k in given}
    try:
        return replace(base, output_len=bounded("--output-len", out_len, 1, MAX_TOKENS), requests_per_s=tokens_per_s(article) / out_len,
                       tpot_ms=1000 / speed if speed else base.tpot_ms, ttft_ms=ttft or None, **kw)  # fmt: skip
    except TypeError as exc:
        raise UsageError(f"bad request setting: {exc}") from exc


def validate_args(args: argparse.Namespace) -> tuple[Request, ArticleInputs, tuple[str, ...], tuple[str, ...]]:
    """The request and the article's inputs from the flags and --config, the GPUs (resolved, one each) and the scenarios."""
    settings: dict[str, Any] = _read_config(args.config) if args.config else {}
    for name in (*REQUEST_KEYS, *ARTICLE_ONLY):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if args.traffic is not None and args.traffic not in TRAFFIC_KINDS:  # a trace: its lengths, its prefix hashes for cache hits
        given = [k for k in ("input_len", "output_len", "cached_fraction") if k in settings]
        if given:
            raise UsageError(f"--traffic {args.traffic} gives the lengths and cache hits: drop {', '.join(given)}")
        settings["input_len"], settings["output_len"] = trace_lengths(read_trace(args.traffic))
        settings["cached_fraction"] = 0.0
    article = article_inputs(args.model, **{k: settings[k] for k in ARTICLE_ONLY if k in settings})
    request = _request(args.model, article, {k: settings[k] for k in REQUEST_KEYS if k in settings})
    gpus = tuple(dict.fromkeys(get_gpu(g).name for g in (args.gpu or ["H100", "A100"])))  # H100 and h100 are one GPU
    scenarios = tuple(dict.fromkeys(args.scenario or SCENARIOS))
    return request, article, gpus, scenarios


def main(args: argparse.Namespace) -> int:
    use_gpu_files(args.gpu_file)
    request, article, gpus, scenarios = validate_args(args)
    traffic = traffic_from_args(args)
    if args.run is not None and not args.run.is_file():
        raise UsageError(f"--run {args.run}: no such results file")
    runs = load_runs(args.results)
    fits = calibrate(runs)
    measured = measured_utilization(load_runs(args.run) if args.run else runs, request.tokens_per_s_per_user or 0.0)
    ops = load_ops(args.results if args.results.is_dir() else args.results.parent, warn=False)
    rows = project(args.model, gpus, scenarios, request, article, runs=runs, measured=measured, ops=ops, prices=args.gpu_hour_usd,
                   traffic=traffic)
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
        "request": request.as_dict(),
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


def format_rows(rows: list[dict[str, Any]], prices: dict[str, float] | None = None) -> str:
    """Scenarios x GPUs as a table, with how each number came about."""
    df = pd.DataFrame(rows)
    wide = df.pivot(index="scenario", columns="gpu", values="gpus")
    wide = wide.reindex(index=list(dict.fromkeys(df["scenario"])), columns=list(dict.fromkeys(df["gpu"])))
    lines = [wide.to_string(na_rep="n/a", float_format=lambda v: f"{v:,.0f}"), ""]
    cost = df.pivot(index="scenario", columns="gpu", values="usd_per_day").reindex(index=wide.index, columns=wide.columns)
    if cost.notna().any().any():
        lines += ["USD per day (those GPUs rented 24 h):", cost.to_string(na_rep="n/a", float_format=lambda v: f"{v:,.0f}"), ""]
        lines += [f"  {note}" for note in price_notes(tuple(wide.columns), prices)] + [""]
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
