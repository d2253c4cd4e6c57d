"""The flags that size a fleet by simulated latency percentiles (``plan``, ``estimate``, ``backtest``): the traffic the
simulation is fed, the percentile held to the limits, and an end-to-end limit; read into an estimator.percentile.Traffic."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from core.errors import UsageError
from core.traces import BUNDLED, Trace, load_trace
from estimator.percentile import PERCENTILE_RANGE, TRAFFIC_KINDS, Traffic

DEFAULT_PERCENTILE = 90.0


def add_traffic_args(p: argparse.ArgumentParser) -> None:
    """--traffic, --burstiness, --slo-percentile, --e2e-ms."""
    g = p.add_argument_group("sizing by simulated latency percentiles (estimator/percentile_sizing.py)")
    g.add_argument("--traffic", help=f"size by simulation under this traffic: {', '.join(TRAFFIC_KINDS)} (--burstiness), or a trace to "
                   f"replay with its own lengths and arrival times, time-scaled to the rate: {', '.join(BUNDLED)} or a file (Azure CSV, "
                   "Mooncake JSONL)")  # fmt: skip
    g.add_argument("--burstiness", type=float, help="--traffic gamma: gamma shape of the gaps between arrivals (below 1 burstier)")
    g.add_argument("--slo-percentile", type=float, help=f"the percentile of TTFT, TPOT (and E2E) held to the limits, "
                   f"{PERCENTILE_RANGE[0]:g} to {PERCENTILE_RANGE[1]:g} (default {DEFAULT_PERCENTILE:g} with --traffic)")  # fmt: skip
    g.add_argument("--e2e-ms", type=float, help="end-to-end latency limit, ms, held at the same percentile (with --traffic)")


def read_trace(name: str) -> Trace:
    """A bundled trace by name or a trace file; one line naming what --traffic takes when it is neither."""
    if name not in BUNDLED and not Path(name).is_file():
        raise UsageError(f"--traffic {name}: not {', '.join(TRAFFIC_KINDS)}, a bundled trace ({', '.join(BUNDLED)}) nor a trace file")
    return load_trace(name)


def traffic_from_args(args: argparse.Namespace, seed: int = 0) -> Traffic | None:
    """The Traffic the flags ask for, its arrivals and lengths drawn with ``seed`` (None without --traffic); every percentile
    flag without --traffic is refused."""
    if args.traffic is None:
        given = [f for f, v in (("--burstiness", args.burstiness), ("--slo-percentile", args.slo_percentile), ("--e2e-ms", args.e2e_ms))
                 if v is not None]  # fmt: skip
        if given:
            raise UsageError(f"{', '.join(given)} size by simulation: give --traffic poisson, gamma or a trace")
        return None
    if args.burstiness is not None and args.traffic != "gamma":
        raise UsageError("--burstiness shapes --traffic gamma only (poisson is burstiness 1; a trace has its own arrivals)")
    percentile = DEFAULT_PERCENTILE if args.slo_percentile is None else args.slo_percentile
    trace = None if args.traffic in TRAFFIC_KINDS else read_trace(args.traffic)
    kind = args.traffic if trace is None else "trace"
    burst = 1.0 if args.burstiness is None else args.burstiness
    return Traffic(kind, percentile, burst, trace, args.e2e_ms, seed)


def trace_lengths(trace: Trace) -> tuple[float, float]:
    """(mean prompt, mean reply) tokens of a trace: the lengths of the steady-state first guess."""
    return float(np.mean(trace.input_tokens)), float(np.mean(trace.output_tokens))
