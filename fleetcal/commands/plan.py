"""``fleetcal plan``: the fewest GPUs of each kind, laid out how, that serve a request rate at given prompt and reply
lengths within TTFT and TPOT limits; each count with a 90% interval over the model's assumptions, its capacity beside
the demand and what limited it, its cost, the hourly fleet of a demand curve, spares for failures, the cheapest mix of
GPU types, and the frontier of per-user speed against throughput (estimator/plan_search.py; fleetcal/report/plan.py).
Files are written only where asked: ``--plot DIR`` and ``--csv FILE``."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.args import add_results_args
from core.dtypes import SERVING_WEIGHT_DTYPES
from core.errors import UsageError
from core.hardware import Device, add_gpu_file_arg, get_gpu, use_gpu_files
from core.models import get_model
from estimator.article import SECONDS_PER_DAY
from estimator.fleet import gpu_price, parse_gpu_prices
from estimator.kernels import one_sided_ranges
from estimator.operators import load_ops
from estimator.percentile import Traffic
from estimator.plan_search import MODES, Choice, cheapest_mix, frontier, interval, nearest_reason, options
from estimator.planning import Rejection
from estimator.provisioning import hourly_fleet, spare_gpus
from estimator.traffic import KV_DTYPES, Request, bounded
from fleetcal.commands.plan_traffic import percentile_row, text_lines
from fleetcal.commands.traffic_args import add_traffic_args, trace_lengths, traffic_from_args
from fleetcal.report.files import write_csv
from fleetcal.report.plan import FRONTIER_PNG, frontier_plot, plan_row, text

MAX_GPU_TYPES = 16


def _prices(text: str) -> dict[str, float]:
    try:
        return parse_gpu_prices(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_price_arg(p: argparse.ArgumentParser) -> None:
    """--gpu-hour-usd: one price for every GPU, or GPU=price pairs; the catalog's dated price elsewhere."""
    p.add_argument("--gpu-hour-usd", type=_prices, help="dollars per GPU-hour: one price for every GPU (2.5) or per GPU type "
                   "(H100=2.5,A100-80GB=1.2); default: the catalog's dated price, where it has one")  # fmt: skip


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    p.add_argument("--gpu", action="append", required=True, help="catalogued GPU; repeat to compare (e.g. --gpu H100 --gpu A100-80GB)")
    p.add_argument("--input-len", type=int, help="prompt tokens per request (a --traffic trace gives its own)")
    p.add_argument("--output-len", type=int, help="reply tokens per request (a --traffic trace gives its own)")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--requests-per-s", "--request-rate", dest="requests_per_s", type=float,
                      help="requests/s, the daily mean (the peak without --traffic-profile; a --traffic trace is time-scaled to the "
                           "peak); --request-rate: the older name")  # fmt: skip
    rate.add_argument("--requests-per-day", type=float, help="requests per day (the mean rate, or spread by --traffic-profile)")
    p.add_argument("--ttft-ms", type=float, required=True,
                   help="time-to-first-token limit, ms (queueing not counted at steady state; counted, at a percentile, with --traffic)")
    speed = p.add_mutually_exclusive_group(required=True)
    speed.add_argument("--tpot-ms", type=float, help="time-per-output-token limit, ms")
    speed.add_argument("--tokens-per-s-per-user", "--tokens-per-user", dest="tokens_per_s_per_user", type=float,
                       help="per-user speed limit, tokens/s (1000 / TPOT)")  # fmt: skip
    p.add_argument("--mode", choices=(*MODES, "both"), default="both", help="aggregated, disaggregated, or the better of both (default)")
    p.add_argument(
        "--weight-dtype", choices=sorted(SERVING_WEIGHT_DTYPES),
        help="default: the model's own formats, FP8 where the GPU has it, its FP4 format where it has FP4 tensor cores",
    )
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default="bf16", help="KV-cache precision")
    p.add_argument("--cached-fraction", type=float, default=0.0, help="share of each prompt served from the prefix cache")
    p.add_argument("--mtp-tokens", type=int, help="tokens drafted per decode step (default: the model's MTP modules; none for most)")
    p.add_argument("--samples", type=int, default=200, help="draws of the assumptions for the 90%% interval (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of those draws (and of the simulated traffic with --traffic)")
    p.add_argument("--traffic-profile", type=Path, help="24 hourly shares of the day's requests (one per line, or hour,share CSV)")
    p.add_argument("--scale-up-hours", type=int, default=0, help="hours before added GPUs serve: each hour provisioned for the next ones")
    p.add_argument("--gpu-failures-per-year", type=float, help="failures per GPU per year (with --repair-hours: N+k spare instances)")
    p.add_argument("--repair-hours", type=float, help="hours a failed GPU keeps its instance down")
    add_price_arg(p)
    p.add_argument("--plot", type=Path, help=f"directory to write the speed/throughput frontier to ({FRONTIER_PNG} and its data as CSV)")
    p.add_argument("--csv", type=Path, help="file to write the plan's rows to, as CSV")
    add_results_args(p, "results directory whose measured GPU kernels the model uses")
    add_gpu_file_arg(p)
    add_traffic_args(p)


@dataclass(frozen=True)
class PlanInputs:
    """What ``plan`` runs on, validated at the edge: the request, the GPU types (one each), the search and its extras."""

    request: Request
    gpus: tuple[Device, ...]
    modes: tuple[str, ...]
    weight_dtype: str | None
    samples: int
    seed: int
    hourly: tuple[float, ...] | None  # requests/s hour by hour (with --traffic-profile)
    scale_up_hours: int
    failures: tuple[float, float] | None  # (failures per GPU-year, repair hours)
    prices: dict[str, float] | None
    results: Path
    traffic: Traffic | None = None  # size by simulated percentiles under this traffic (fleetcal/commands/plan_traffic.py)


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


def _check_outputs(args: argparse.Namespace) -> None:
    if args.plot is not None and not args.plot.is_dir():
        raise UsageError(f"--plot {args.plot}: give an existing directory to write {FRONTIER_PNG} and its CSV to")
    if args.csv is not None and (args.csv.suffix.lower() != ".csv" or not args.csv.parent.is_dir()):
        raise UsageError(f"--csv {args.csv}: give a .csv path in an existing directory")


def validate_args(args: argparse.Namespace) -> PlanInputs:
    """The flags as a PlanInputs; one UsageError naming the flag and its bound otherwise."""
    _check_outputs(args)
    mean = args.requests_per_s if args.requests_per_s is not None else bounded("--requests-per-day", args.requests_per_day, 0, 1e14,
                                                                               lo_open=True) / SECONDS_PER_DAY  # fmt: skip
    bounded("--requests-per-s", mean, 0, 1e9, lo_open=True)
    shares = read_profile(args.traffic_profile) if args.traffic_profile else None
    if args.tokens_per_s_per_user is not None:
        bounded("--tokens-per-s-per-user", args.tokens_per_s_per_user, 0, 1e6, lo_open=True)
    bounded("--samples", args.samples, 0, 10_000)
    bounded("--seed", args.seed, 0, 2**32 - 1)
    bounded("--scale-up-hours", args.scale_up_hours, 0, 23)
    if (args.gpu_failures_per_year is None) != (args.repair_hours is None):
        raise UsageError("give --gpu-failures-per-year and --repair-hours together")
    if args.gpu_failures_per_year is not None:
        bounded("--gpu-failures-per-year", args.gpu_failures_per_year, 0, 1000)
        bounded("--repair-hours", args.repair_hours, 0, 8760, lo_open=True)
    spec = get_model(args.model)
    traffic = traffic_from_args(args, args.seed)
    input_len, output_len = _lengths(args, traffic)
    tpot = args.tpot_ms if args.tpot_ms is not None else 1000 / args.tokens_per_s_per_user
    mtp = spec.shapes.mtp_modules if args.mtp_tokens is None else args.mtp_tokens
    request = Request(args.model, input_len, output_len, mean, max(shares) * 24 if shares else 1.0, args.ttft_ms, tpot,
                      args.cached_fraction, args.kv_dtype, mtp)  # fmt: skip
    if spec.max_context and request.full_len > spec.max_context:
        raise UsageError(f"--input-len + --output-len = {request.full_len:,.0f} exceeds {spec.name}'s context of {spec.max_context:,} "
                         "tokens")  # fmt: skip
    if mtp and not spec.shapes.mtp_modules:
        raise UsageError(f"--mtp-tokens {mtp}: {spec.name} has no multi-token-prediction module to draft with; give 0")
    gpus = tuple({g.name: g for g in map(get_gpu, args.gpu)}.values())  # H100 and h100-sxm are one GPU
    if len(gpus) > MAX_GPU_TYPES:
        raise UsageError(f"--gpu: at most {MAX_GPU_TYPES} GPU types in one plan, got {len(gpus)}")
    hourly = tuple(mean * 24 * s for s in shares) if shares else None
    failures = (args.gpu_failures_per_year, args.repair_hours) if args.gpu_failures_per_year is not None else None
    modes = MODES if args.mode == "both" else (args.mode,)
    return PlanInputs(request, gpus, modes, args.weight_dtype, args.samples, args.seed, hourly, args.scale_up_hours, failures,
                      args.gpu_hour_usd, args.results, traffic)  # fmt: skip


def _lengths(args: argparse.Namespace, traffic: Traffic | None) -> tuple[float, float]:
    """(prompt, reply) tokens: the flags', or a trace's means (the steady-state first guess; the simulation replays its own)."""
    if traffic is not None and traffic.trace is not None:
        given = [f for f, v in (("--input-len", args.input_len), ("--output-len", args.output_len)) if v is not None]
        if given or args.cached_fraction:
            raise UsageError(f"--traffic {args.traffic} gives the lengths (and its prefix hashes the cache hits): drop "
                             f"{', '.join(given + (['--cached-fraction'] if args.cached_fraction else []))}")  # fmt: skip
        return trace_lengths(traffic.trace)
    missing = [f for f, v in (("--input-len", args.input_len), ("--output-len", args.output_len)) if v is None]
    if missing:
        raise UsageError(f"give {' and '.join(missing)} (or --traffic with a trace, which carries its own lengths)")
    return args.input_len, args.output_len


def _extras(row: dict[str, Any], c: Choice, x: PlanInputs, price: float | None) -> None:
    """Spares and the hourly fleet beside a GPU's row."""
    if x.failures is not None:
        k = spare_gpus(c.option, x.request.peak_requests_per_s, *x.failures)
        row["spare_gpus"], row["gpus_with_spares"] = k, row["gpus"] + k
    if x.hourly:
        fleet = hourly_fleet(c.option.pools, list(x.hourly), x.scale_up_hours)
        row["hourly_gpus"], row["gpu_hours_per_day"] = fleet, sum(fleet)
        row["usd_per_day_hourly"] = sum(fleet) * price if price is not None else None


def plan(x: PlanInputs) -> dict[str, Any]:
    """Every GPU's best option, its interval and extras; raises UsageError when no GPU serves the request."""
    r, ops = x.request, load_ops(x.results, warn=False)
    rows, failed, fronts, priced = [], {}, [], []
    for gpu in x.gpus:
        choices, reasons = options(r.model, gpu, r, ops, x.modes, x.weight_dtype)
        fronts.append(frontier(r.model, gpu, r, ops, x.weight_dtype))
        if not choices:
            failed[gpu.name] = nearest_reason(reasons).text
            continue
        price, _ = gpu_price(gpu, x.prices)
        if x.traffic is None:
            choice = choices[0]
            lo_hi = interval(choice, x.samples, x.seed) if x.samples else None
            row = plan_row(choice, r, price, lo_hi, one_sided_ranges(choice.kernels) if lo_hi else [])
        else:
            sized = percentile_row(choices, gpu, r, x.traffic, price, x.samples, x.seed)
            if isinstance(sized, Rejection):
                failed[gpu.name] = sized.text
                continue
            row, choice = sized
        _extras(row, choice, x, price)
        rows.append(row)
        if price is not None:
            priced.append((choice.option, price))
    if not rows:
        what = "; ".join(f"{g}: {why}" for g, why in failed.items())
        raise UsageError(f"no layout of {r.model} meets TTFT {r.ttft_ms:g} ms and TPOT {r.tpot_ms:g} ms on {', '.join(failed)} ({what})")
    mix = cheapest_mix(priced, r.peak_requests_per_s) if len(priced) > 1 else None
    return {"request": r.as_dict(), "rows": rows, "failed": failed,
            "cheapest_mix": {"usd_per_day": mix[0], "split": mix[1]} if mix else None,
            "frontier": pd.concat(fronts, ignore_index=True) if fronts else pd.DataFrame()}  # fmt: skip


def main(args: argparse.Namespace) -> int:
    use_gpu_files(args.gpu_file)
    x = validate_args(args)
    out = plan(x)
    if args.plot is not None:
        frontier_plot(out["frontier"], out["rows"], x.request.tpot_ms, args.plot / FRONTIER_PNG)
    if args.csv is not None:
        write_csv(pd.DataFrame(out["rows"]), args.csv)
    if args.json:
        print(json.dumps({**out, "frontier": out["frontier"].to_dict(orient="records")}, default=str))
        return 0
    print("\n".join(text(out, x.samples, x.seed) + (text_lines(out["rows"], out["request"], x.traffic) if x.traffic else [])))
    if args.plot is not None:
        print(f"plot: {args.plot / FRONTIER_PNG} (data: {(args.plot / FRONTIER_PNG).with_suffix('.csv')})")
    return 0


EXAMPLE = ["--model", "llama-3.1-70b", "--gpu", "H100", "--gpu", "A100-80GB", "--input-len", "1000", "--output-len", "1000",
           "--requests-per-s", "50", "--ttft-ms", "2000", "--tpot-ms", "50"]  # fmt: skip
PLAN_START, PLAN_END = "<!-- plan:start -->", "<!-- plan:end -->"


def readme_block(results: Path) -> str:
    """The README's worked planning example: the command, its output, and its plot in results/plots/."""
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    x = validate_args(parser.parse_args([*EXAMPLE, "--results", str(results)]))
    out = plan(x)
    frontier_plot(out["frontier"], out["rows"], x.request.tpot_ms, results / "plots" / FRONTIER_PNG)
    return "\n".join([PLAN_START, "```", "$ fleetcal plan " + " ".join(EXAMPLE), *text(out, x.samples, x.seed), "```", "",
                      f"![per-user speed against throughput](results/plots/{FRONTIER_PNG})", PLAN_END])  # fmt: skip
