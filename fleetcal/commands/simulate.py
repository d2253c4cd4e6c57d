"""``fleetcal simulate``: latency percentiles of serving instances under a traffic or a trace, from a request-level
simulation of vLLM's scheduler (estimator/sim/) with each step's time from the serving model (GPU) or the CPU step model."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from core.args import add_results_args, rate_list
from core.errors import UsageError
from core.traces import BUNDLED, load_trace
from estimator.sim.fleet import ROUTERS, simulate
from estimator.sim.results import summarize
from estimator.sim.traffic import LENGTH_KINDS, Lengths, admissible, generated, replay
from fleetcal.commands.simulate_fleet import build_fleet

GENERATED = ("poisson", "gamma")
MAX_REQUESTS = 10_000_000


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", help="catalogued GPU: each step from the per-operator serving model")
    where.add_argument("--device", choices=("cpu",), help="this machine's CPU: each step from its CPU step model (results/)")
    p.add_argument("--tp", type=int, help="tensor parallelism of one instance (default: the smallest that holds the weights)")
    p.add_argument("--weight-dtype", help="default: the model's serving dtype (catalog)")
    p.add_argument("--kv-dtype", choices=("bf16", "fp8"), default="bf16", help="KV-cache precision (GPU)")
    p.add_argument("--instances", type=int, default=1, help="instances behind the router (the decode pool when disaggregated)")
    p.add_argument("--router", choices=ROUTERS, default="round-robin",
                   help="how requests are spread over instances: in turn, or to the one with the fewest waiting or running")
    p.add_argument("--prefill-instances", type=int, default=0, help="disaggregated: this many prefill instances in front")
    t = p.add_argument_group("traffic")
    t.add_argument("--traffic", default="poisson",
                   help=f"poisson, gamma (--burstiness), or a trace to replay: {', '.join(BUNDLED)} or a file (Azure CSV, Mooncake JSONL)")
    t.add_argument("--request-rates", type=rate_list, help="requests/s, comma-separated: one run each (a trace is time-scaled to it)")
    t.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1: Poisson), vLLM's --burstiness")
    t.add_argument("--num-requests", type=int, help="requests per rate (default 1,000; a trace: all of it)")
    t.add_argument("--lengths", choices=LENGTH_KINDS, default="fixed", help="how prompt and reply lengths are drawn")
    t.add_argument("--length-trace", default="azure-conv", help="the trace whose (prompt, reply) pairs --lengths trace draws")
    t.add_argument("--input-len", type=int, default=1024, help="prompt tokens (the mean of --lengths uniform and lognormal)")
    t.add_argument("--output-len", type=int, default=128, help="reply tokens, forced (ignore_eos, as bench sends them)")
    t.add_argument("--range-ratio", type=float, default=0.0, help="--lengths uniform: [L(1-r), L(1+r)]")
    t.add_argument("--sigma", type=float, default=0.5, help="--lengths lognormal: deviation of the log (mean stays the length)")
    t.add_argument("--turns", type=int, default=1, help="turns per session: each next prompt carries the history as a prefix")
    t.add_argument("--think-time-s", type=float, default=0.0, help="mean pause between a reply and the next turn (exponential)")
    t.add_argument("--seed", type=int, default=0, help="seed of the arrivals and lengths drawn")
    e = p.add_argument_group("engine rules (default: vLLM 0.32's for the device)")
    e.add_argument("--max-num-batched-tokens", type=int, help="token budget of a step")
    e.add_argument("--max-num-seqs", type=int, help="sequences running at once")
    e.add_argument("--block-size", type=int, help="tokens per KV page")
    e.add_argument("--kv-cache-gb", type=float, default=2.0, help="--device cpu: KV cache size in GiB (fleetcal bench's default)")
    e.add_argument("--engine-from", type=Path, help="--device cpu: the engine settings a measured vLLM run (its run file) ran with")
    e.add_argument("--no-prefix-caching", action="store_true", help="turn the prefix cache off (vLLM has it on by default)")
    e.add_argument("--mtp-tokens", type=int, default=0, help="tokens drafted per step by multi-token prediction")
    e.add_argument("--mtp-acceptance", type=float, help="acceptance of each drafted token (default: DeepSeek-V3's 0.85)")
    p.add_argument("--slo-ttft-ms", type=float, help="TTFT limit for goodput")
    p.add_argument("--slo-tpot-ms", type=float, help="TPOT limit for goodput")
    p.add_argument("--plot", type=Path, help="write a plot of latency percentiles against the request rate here (PNG, data beside it)")
    add_results_args(p)


def _validate(args: argparse.Namespace) -> None:
    positive = ("tp", "instances", "num_requests", "input_len", "output_len", "turns", "max_num_batched_tokens", "max_num_seqs",
                "block_size")  # fmt: skip
    for name in positive:
        v = getattr(args, name)
        if v is not None and not 1 <= v <= MAX_REQUESTS:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer up to {MAX_REQUESTS:,}")
    if args.prefill_instances < 0:
        raise UsageError("--prefill-instances must be 0 (aggregated) or more")
    for name in ("burstiness", "kv_cache_gb"):
        if not 0 < getattr(args, name) < 1e6:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number")
    for name in ("think_time_s", "slo_ttft_ms", "slo_tpot_ms"):
        v = getattr(args, name)
        if v is not None and not 0 <= v < 1e9:
            raise UsageError(f"--{name.replace('_', '-')} must be a non-negative number")
    if args.traffic in GENERATED and not args.request_rates:
        raise UsageError(f"--traffic {args.traffic} needs --request-rates (requests/s)")
    if args.traffic == "poisson" and args.burstiness != 1.0:
        raise UsageError("--burstiness shapes --traffic gamma; poisson is burstiness 1")
    if args.request_rates and any(not math.isfinite(r) for r in args.request_rates):
        raise UsageError("--request-rates must be finite for a simulation (inf would send every request at once: give a large rate)")
    if args.plot is not None and not args.plot.parent.is_dir():
        raise UsageError(f"--plot {args.plot}: no directory {args.plot.parent} to write it in")
    if args.engine_from is not None and not args.device:
        raise UsageError("--engine-from reads a measured CPU run's engine settings: use it with --device cpu")
    if args.prefill_instances and args.device:
        raise UsageError("disaggregated prefill and decode pools are simulated on a --gpu")


def _traffic(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """A function of the rate giving the requests, the hash unit of their prompts, and what describes the traffic."""
    if args.traffic not in GENERATED:
        trace = load_trace(args.traffic)

        def from_trace(rate: float | None, block: int) -> tuple[list, int]:
            return replay(trace, rate, args.num_requests), trace.hash_unit_tokens

        return from_trace, {"trace": trace.name, "recorded_rate_per_s": round(trace.rate_per_s, 4), "requests": len(trace.arrival_s)}
    lengths = Lengths(args.lengths, args.input_len, args.output_len, args.range_ratio, args.sigma,
                      load_trace(args.length_trace) if args.lengths == "trace" else None)  # fmt: skip
    n = args.num_requests or 1000

    def generate(rate: float | None, block: int) -> tuple[list, int]:
        reqs = generated(n, rate, 1.0 if args.traffic == "poisson" else args.burstiness, lengths, args.seed, args.turns,
                         args.think_time_s, block)  # fmt: skip
        return reqs, block if args.turns > 1 else 0

    return generate, {"arrivals": args.traffic, "burstiness": args.burstiness, "lengths": args.lengths, "requests": n, "turns": args.turns}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every rate's simulated figures, as one document."""
    _validate(args)
    fleet, about, max_len = build_fleet(args)
    requests_at, traffic = _traffic(args)
    rows = []
    for rate in args.request_rates or [None]:
        first_turns, unit = requests_at(rate, fleet.pool.rules.block_size)
        kept, rejected = admissible(first_turns, max_len)
        if not kept:
            raise UsageError(f"every request is longer than the {max_len:,} tokens one instance can hold: use a shorter --input-len")
        sim = simulate(fleet, kept, unit)
        row = {"request_rate_per_s": rate, "rejected_over_context": rejected, **summarize(sim, args.slo_ttft_ms, args.slo_tpot_ms)}
        rows.append(row)
    return {**about, "traffic": traffic, "rates": rows}


def _text(doc: dict[str, Any]) -> str:
    lines = [f"{doc['model']} on {doc['device']}: {doc['layout']}; {doc['engine_rules']['source']}",
             f"  traffic: {json.dumps(doc['traffic'])}", f"  step model: {doc['step_model']}"]  # fmt: skip

    def pct(d: dict, k: str) -> str:
        return "-" if d[k] is None else f"{d[k]:,.1f}"

    head = f"{'rate/s':>8} {'done':>7} {'TTFT p50/p90/p99 ms':>24} {'TPOT p50/p99 ms':>16} {'ITL p99':>8} {'E2E p50/p99 ms':>20} " \
           f"{'out tok/s':>10} {'goodput/s':>9} {'busy':>5} {'queue':>6} {'KV':>4} {'preempt':>7}"  # fmt: skip
    lines.append(head)
    for r in doc["rates"]:
        rate = "recorded" if r["request_rate_per_s"] is None else f"{r['request_rate_per_s']:g}"
        if r["saturated"]:
            lat = f"{'saturated: the queue grows without bound':>72}"
        else:
            t, p, i, e = r["ttft_ms"], r["tpot_ms"], r["itl_ms"], r["e2el_ms"]
            lat = (f"{pct(t, 'p50') + '/' + pct(t, 'p90') + '/' + pct(t, 'p99'):>24} {pct(p, 'p50') + '/' + pct(p, 'p99'):>16} "
                   f"{pct(i, 'p99'):>8} {pct(e, 'p50') + '/' + pct(e, 'p99'):>20}")  # fmt: skip
        good = "-" if r["goodput_per_s"] is None else f"{r['goodput_per_s']:.2f}"
        lines.append(f"{rate:>8} {r['completed']:>7} {lat} {r['output_tokens_per_s']:>10,.0f} {good:>9} {r['gpu_busy_share']:>5.0%} "
                     f"{r['max_waiting']:>6} {r['peak_kv_used_share']:>4.0%} {r['preemptions']:>7}")  # fmt: skip
    lines.append("  queue: most requests waiting at once (summed over instances); KV: peak share of the KV pages held; "
                 "busy: share of time in steps")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    doc = run(args)
    if args.plot:
        from fleetcal.report.sim import latency_vs_load

        latency_vs_load(doc, args.plot)
    print(json.dumps(doc) if args.json else _text(doc))
    return 0
