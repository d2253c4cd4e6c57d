"""``fleetcal plan``: the fewest GPUs of each kind, laid out how, that serve a request rate at given prompt and reply
lengths within TTFT and TPOT limits; each count with a 90% interval over the model's assumptions, its cost, the
hourly fleet of a demand curve, spares for failures, the cheapest mix of GPU types, and the frontier of per-user
speed against throughput as a plot (estimator/planning.py, estimator/plan_search.py)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from core.args import add_results_args
from core.dtypes import SERVING_WEIGHT_DTYPES
from core.errors import UsageError
from core.hardware import add_gpu_file_arg, get_gpu, use_gpu_files
from core.models import get_model
from estimator.operators import load_ops
from estimator.plan_search import MODES, Choice, cheapest_mix, frontier, interval, nearest_reason, search
from estimator.planning import Option, Workload
from estimator.provisioning import hourly_fleet, spare_gpus
from estimator.traffic import KV_DTYPES
from fleetcal.report.files import save_plot

SECONDS_PER_DAY = 86400


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    p.add_argument("--gpu", action="append", required=True, help="catalogued GPU; repeat to compare (e.g. --gpu H100 --gpu A100-80GB)")
    p.add_argument("--input-len", type=int, required=True, help="prompt tokens per request")
    p.add_argument("--output-len", type=int, required=True, help="reply tokens per request")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--request-rate", type=float, help="requests per second (with --traffic-profile: the daily mean)")
    rate.add_argument("--requests-per-day", type=float, help="requests per day (the mean rate, or spread by --traffic-profile)")
    p.add_argument("--ttft-ms", type=float, required=True, help="time-to-first-token limit, ms (queueing not counted)")
    speed = p.add_mutually_exclusive_group(required=True)
    speed.add_argument("--tpot-ms", type=float, help="time-per-output-token limit, ms")
    speed.add_argument("--tokens-per-user", type=float, help="per-user speed limit, tokens/s (1000 / TPOT)")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both", help="aggregated, disaggregated, or the better of both (default)")
    p.add_argument(
        "--weight-dtype", choices=sorted(SERVING_WEIGHT_DTYPES), help="default: the model's serving dtype, and FP8 where the GPU has it"
    )
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default="bf16")
    p.add_argument("--cached-fraction", type=float, default=0.0, help="share of each prompt served from the prefix cache")
    p.add_argument("--samples", type=int, default=200, help="draws of the assumptions for the 90%% interval (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of those draws")
    p.add_argument("--traffic-profile", type=Path, help="24 hourly shares of the day's requests (one per line, or hour,share CSV)")
    p.add_argument("--scale-up-hours", type=int, default=0, help="hours before added GPUs serve: each hour provisioned for the next ones")
    p.add_argument("--gpu-failures-per-year", type=float, help="failures per GPU per year (with --repair-hours: N+k spare instances)")
    p.add_argument("--repair-hours", type=float, help="hours a failed GPU keeps its instance down")
    p.add_argument(
        "--plot", type=Path, default=Path("plan_frontier.png"), help="PNG of the speed/throughput frontier (its data as CSV beside it)"
    )
    add_results_args(p, "results directory whose measured GPU kernels the model uses")
    add_gpu_file_arg(p)


def _check(args: argparse.Namespace) -> None:
    for name in ("input_len", "output_len", "request_rate", "requests_per_day", "ttft_ms", "tpot_ms", "tokens_per_user", "repair_hours"):
        v = getattr(args, name)
        if v is not None and not (0 < v < 1e12 and math.isfinite(v)):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {v:g}")
    if args.gpu_failures_per_year is not None and not 0 <= args.gpu_failures_per_year < 1e3:
        raise UsageError("--gpu-failures-per-year must be 0 or more (e.g. 0.1: one failure per GPU every ten years)")
    if (args.gpu_failures_per_year is None) != (args.repair_hours is None):
        raise UsageError("give --gpu-failures-per-year and --repair-hours together")
    if not 0 <= args.cached_fraction < 1:
        raise UsageError("--cached-fraction must be in [0, 1)")
    if not 0 <= args.samples <= 10000:
        raise UsageError("--samples must be 0 to 10,000")
    if not 0 <= args.scale_up_hours < 24:
        raise UsageError("--scale-up-hours must be 0 to 23")
    if args.plot.suffix.lower() != ".png" or not args.plot.parent.is_dir():
        raise UsageError(f"--plot {args.plot}: give a .png path in an existing directory")


def read_profile(path: Path) -> list[float]:
    """24 hourly shares (normalised to sum 1) from one number per line or an hour,share CSV (the last column)."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as exc:
        raise UsageError(f"--traffic-profile {path}: cannot be read ({exc.strerror})") from exc
    values = []
    for ln in lines:
        try:
            values.append(float(ln.split(",")[-1]))
        except ValueError:
            if values:  # a header is allowed only first
                raise UsageError(f"--traffic-profile {path}: {ln!r} is not a number; give 24 hourly shares") from None
    if len(values) != 24 or any(not (v >= 0 and math.isfinite(v)) for v in values) or sum(values) <= 0:
        raise UsageError(f"--traffic-profile {path}: give 24 non-negative hourly shares, not all zero (found {len(values)} values)")
    return [v / sum(values) for v in values]


def _row(c: Choice, w: Workload, price: float | None, lo_hi: tuple[float, float, float] | None) -> dict[str, Any]:
    o, p = c.option, c.option.point
    usd_day = o.gpus * price * 24 if price else None
    return {
        "gpu": o.gpu,
        "gpus": o.gpus,
        "gpus_p5": lo_hi[0] if lo_hi else None,
        "gpus_p95": lo_hi[1] if lo_hi else None,
        "mode": o.mode,
        "weight_dtype": o.weight_dtype,
        "layout": o.layout,
        "batch_per_gpu": p.batch_per_gpu,
        "output_tokens_per_s_per_gpu": w.request_rate * w.output_len / o.gpus,
        "capacity_output_tokens_per_s_per_gpu": p.output_tokens_per_s_per_gpu,
        "tokens_per_s_per_user": p.tokens_per_s_per_user,
        "ttft_ms": p.ttft_ms,
        "tpot_ms": p.tpot_ms,
        "limited_by": o.limited_by,
        "usd_per_day": usd_day,
        "usd_per_million_output_tokens": usd_day / (w.request_rate * w.output_len * SECONDS_PER_DAY / 1e6) if usd_day else None,
        "infeasible_draws": lo_hi[2] if lo_hi else None,
    }


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Every GPU's best option, its interval and extras; raises UsageError when no GPU serves the workload."""
    _check(args)
    shares = read_profile(args.traffic_profile) if args.traffic_profile else None
    mean_rate = args.request_rate if args.request_rate is not None else args.requests_per_day / SECONDS_PER_DAY
    hourly = [mean_rate * 24 * s for s in shares] if shares else None
    peak = max(hourly) if hourly else mean_rate
    tpot = args.tpot_ms or 1000 / args.tokens_per_user
    w = Workload(args.input_len, args.output_len, peak, args.ttft_ms, tpot, args.cached_fraction, args.kv_dtype)
    gpus = [get_gpu(g) for g in dict.fromkeys(args.gpu)]
    spec = get_model(args.model)
    if spec.max_context and args.input_len + args.output_len > spec.max_context:
        raise UsageError(
            f"--input-len + --output-len = {args.input_len + args.output_len:,} exceeds {spec.name}'s context of {spec.max_context:,} "
            "tokens"
        )
    ops = load_ops(args.results, warn=False)
    modes = MODES if args.mode == "both" else (args.mode,)
    rows, failed, fronts, priced = [], {}, [], []
    for gpu in gpus:
        choice, reasons = search(args.model, gpu, w, ops, modes, args.weight_dtype)
        fronts.append(frontier(args.model, gpu, w, ops, args.weight_dtype))
        if choice is None:
            failed[gpu.name] = nearest_reason(reasons)
            continue
        row = _row(choice, w, gpu.usd_per_gpu_hour, interval(choice, args.samples, args.seed) if args.samples else None)
        _extras(row, choice.option, args, w, hourly, gpu.usd_per_gpu_hour)
        rows.append(row)
        if gpu.usd_per_gpu_hour:
            priced.append((choice.option, gpu.usd_per_gpu_hour))
    if not rows:
        what = "; ".join(f"{g}: {r}" for g, r in failed.items())
        raise UsageError(f"no layout of {args.model} meets TTFT {args.ttft_ms:g} ms and TPOT {tpot:g} ms on {', '.join(failed)} ({what})")
    mix = cheapest_mix(priced, peak) if len(priced) > 1 else None
    return {"workload": w.__dict__ | {"mean_request_rate": mean_rate}, "rows": rows, "failed": failed,
            "cheapest_mix": {"usd_per_day": mix[0], "split": mix[1]} if mix else None,
            "frontier": pd.concat(fronts, ignore_index=True) if fronts else pd.DataFrame()}  # fmt: skip


def _extras(row: dict[str, Any], o: Option, args: argparse.Namespace, w: Workload, hourly: list[float] | None, price: float | None) -> None:
    """Spares and the hourly fleet beside a GPU's row."""
    if args.gpu_failures_per_year is not None:
        k = spare_gpus(o, w.request_rate, args.gpu_failures_per_year, args.repair_hours)
        row["spare_gpus"], row["gpus_with_spares"] = k, row["gpus"] + k
    if hourly:
        fleet = hourly_fleet(o.pools, hourly, args.scale_up_hours)
        row["hourly_gpus"], row["gpu_hours_per_day"] = fleet, sum(fleet)
        row["usd_per_day_hourly"] = sum(fleet) * price if price else None


def frontier_plot(front: pd.DataFrame, rows: list[dict[str, Any]], tpot_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {gpu: f"C{i}" for i, gpu in enumerate(sorted({*front.get("gpu", []), *(r["gpu"] for r in rows)}))}
    for gpu, g in front.groupby("gpu", sort=True):
        g = g.sort_values("tokens_per_s_per_user")
        ax.plot(
            g["tokens_per_s_per_user"],
            g["output_tokens_per_s_per_gpu"],
            marker=".",
            color=colors[gpu],
            label=f"{gpu}: aggregated, frontier over layouts",
        )
    for r in rows:  # the chosen option; disaggregated: decode pool's output over both pools' GPUs at full load
        ax.scatter(
            [r["tokens_per_s_per_user"]], [r["capacity_output_tokens_per_s_per_gpu"]], marker="*", s=120, zorder=3, color=colors[r["gpu"]]
        )
        ax.annotate(
            f" {r['gpu']}: {r['gpus']} GPUs, {r['mode']}",
            (r["tokens_per_s_per_user"], r["capacity_output_tokens_per_s_per_gpu"]),
            fontsize=7,
        )
    ax.axvline(1000 / tpot_ms, color="red", linestyle="--", label=f"TPOT limit: {1000 / tpot_ms:.0f} tok/s per user")
    ax.set(
        xlabel="output tokens/s per user",
        ylabel="output tokens/s per GPU",
        title="Speed per user against throughput per GPU (Pareto frontier)",
    )
    ax.legend(fontsize=7)
    save_plot(fig, path, front)
    plt.close(fig)


TEXT_COLUMNS = ["gpu", "gpus", "interval", "mode", "weight_dtype", "layout", "batch_per_gpu", "output_tokens_per_s_per_gpu",
                "tokens_per_s_per_user", "ttft_ms", "tpot_ms", "usd_per_day", "usd_per_million_output_tokens"]  # fmt: skip


def text(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The plan as printed: the workload, one row per GPU type with its interval, failures, the cheapest mix."""
    w = out["workload"]
    lines = [
        f"{args.model}: {w['input_len']} in / {w['output_len']} out, {w['request_rate']:g} requests/s at the peak, TTFT <= "
        f"{w['ttft_ms']:g} ms, "
        f"TPOT <= {w['tpot_ms']:g} ms; serving model (kernels.toml, measured kernels of results/); whole instances"
    ]
    df = pd.DataFrame(out["rows"])
    df["interval"] = [f"{lo:.0f}-{hi:.0f}" if pd.notna(lo) else "" for lo, hi in zip(df["gpus_p5"], df["gpus_p95"])]
    cols = TEXT_COLUMNS + [c for c in ("spare_gpus", "gpus_with_spares", "gpu_hours_per_day", "usd_per_day_hourly") if c in df]
    with pd.option_context("display.width", 250, "display.max_colwidth", 70, "display.float_format", "{:,.1f}".format):
        lines += df[cols].to_string(index=False).splitlines()
    if args.samples:
        lines.append(
            f"interval: 5th-95th percentile of GPUs over {args.samples} draws of every ranged assumption (seed {args.seed}), layout and "
            "mode kept"
        )
    lines += [f"{gpu}: no layout meets the limits ({why})" for gpu, why in out["failed"].items()]
    if out["cheapest_mix"]:
        m = out["cheapest_mix"]
        lines.append("cheapest mix: " + " + ".join(f"{r:g} requests/s on {g}" for g, r in m["split"]) + f", ${m['usd_per_day']:,.0f} a day")
    return lines


def main(args: argparse.Namespace) -> int:
    use_gpu_files(args.gpu_file)
    out = plan(args)
    frontier_plot(out["frontier"], out["rows"], out["workload"]["tpot_ms"], args.plot)
    if args.json:
        print(json.dumps({**out, "frontier": out["frontier"].to_dict(orient="records"), "plot": str(args.plot)}, default=str))
        return 0
    print("\n".join(text(out, args)))
    print(f"plot: {args.plot} (data: {args.plot.with_suffix('.csv')})")
    return 0


EXAMPLE = ["--model", "llama-3.1-70b", "--gpu", "H100", "--gpu", "A100-80GB", "--input-len", "1000", "--output-len", "1000",
           "--request-rate", "50", "--ttft-ms", "2000", "--tpot-ms", "50"]  # fmt: skip
PLAN_START, PLAN_END = "<!-- plan:start -->", "<!-- plan:end -->"


def readme_block(results: Path) -> str:
    """The README's worked planning example: the command, its output, and its plot in results/plots/."""
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    plot = results / "plots" / "plan_frontier.png"
    args = parser.parse_args([*EXAMPLE, "--plot", str(plot), "--results", str(results)])
    out = plan(args)
    frontier_plot(out["frontier"], out["rows"], out["workload"]["tpot_ms"], plot)
    return "\n".join([PLAN_START, "```", "$ fleetcal plan " + " ".join(EXAMPLE), *text(out, args), "```", "",
                      "![per-user speed against throughput](results/plots/plan_frontier.png)", PLAN_END])  # fmt: skip
