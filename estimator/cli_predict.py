"""``fleetcal predict``: tokens/s for a model x device x batch x lengths from the calibrated roofline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from estimator.calibration import RESULTS_DIR, calibrate, load_runs
from estimator.fleet import compute_precision, efficiencies_for
from estimator.hardware import get_gpu
from estimator.models import get_model, kv_cache_bytes_per_token, weight_bytes
from estimator.roofline import Efficiency, Peaks, decode_step, prefill_batch
from fleetcal.common import UsageError
from fleetcal.identity import describe_cpu


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", help="catalogued GPU")
    where.add_argument("--device", choices=("cpu",), help="a CPU measured by fleetcal bench (its calibration in results/)")
    p.add_argument("--num-gpus", type=int, default=1, help="GPUs sharing the model (ideal split)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--weight-dtype", help="default: the model's serving dtype (catalog), bf16 otherwise")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="directory of measured runs")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def _cpu_calibration(fits: list[Any]) -> tuple[Peaks, dict[str, Efficiency], str, float | None]:
    """The calibration of the CPU this runs on (matched by device identity), never another CPU's."""
    here = describe_cpu()
    cpu = [f for f in fits if f.device_kind == "cpu" and f.engine == "vllm" and f.device_name.endswith(f"[{here['id']}]")]
    phases = {f.phase: f for f in cpu}
    if set(phases) != {"prefill", "decode"}:
        raise UsageError(
            f"this CPU ({here['name']} [{here['id']}]) has not been measured: run "
            "`fleetcal bench --mode prefill,decode --batch-sizes 1,4,16,64 --input-lens 128,512` here first"
        )
    d = phases["decode"]
    return d.peaks, {k: v.efficiency for k, v in phases.items()}, f"calibrated on this CPU, {d.device_name} (vllm)", None


def predict(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("batch_size", "input_len", "output_len", "num_gpus"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
    spec = get_model(args.model, args.weight_dtype)
    if spec.max_context and args.input_len + args.output_len > spec.max_context:
        raise UsageError(f"input + output = {args.input_len + args.output_len} exceeds {spec.name}'s context of {spec.max_context}")
    fits = calibrate(load_runs(args.results))
    if args.gpu:
        gpu = get_gpu(args.gpu)
        precision = compute_precision(gpu, spec.weight_dtype)
        peaks = Peaks(gpu.name, gpu.peak_flops_per_s(precision), gpu.bandwidth_bytes_per_s, gpu.memory_bytes)
        eff, source = efficiencies_for(gpu.name, fits)
        memory = gpu.memory_bytes * args.num_gpus
    else:
        peaks, eff, source, memory = _cpu_calibration(fits)
    ctx = args.input_len + args.output_len / 2
    step = decode_step(spec, args.batch_size, ctx, peaks, eff["decode"], args.num_gpus)
    pre = prefill_batch(spec, args.batch_size, args.input_len, peaks, eff["prefill"], args.num_gpus)
    need = weight_bytes(spec) + args.batch_size * (args.input_len + args.output_len) * kv_cache_bytes_per_token(spec)
    return {
        "model": spec.name,
        "device": peaks.name,
        "num_gpus": args.num_gpus,
        "batch_size": args.batch_size,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "prefill_tokens_per_s": args.batch_size * args.input_len / pre.seconds,
        "prefill_time_ms": pre.seconds * 1000,
        "prefill_bound": pre.bound,
        "decode_tokens_per_s": args.batch_size / step.seconds,
        "decode_step_ms": step.seconds * 1000,
        "decode_bound": step.bound,
        "tokens_per_s_per_user": 1 / step.seconds,
        "memory_needed_gb": need / 1e9,
        "memory_gb": None if memory is None else memory / 1e9,
        "fits_in_memory": None if memory is None else need <= memory,
        "calibration": source,
        "efficiency": {k: v.__dict__ for k, v in eff.items()},
    }


def main(args: argparse.Namespace) -> int:
    out = predict(args)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    fits = "n/a" if out["fits_in_memory"] is None else ("yes" if out["fits_in_memory"] else "NO")
    print(f"{out['model']} on {out['num_gpus']} x {out['device']}, batch {out['batch_size']}, {out['input_len']} in / {out['output_len']} out ({out['calibration']})")
    print(f"  prefill: {out['prefill_tokens_per_s']:,.0f} tok/s, {out['prefill_time_ms']:.2f} ms per batch, {out['prefill_bound']}-bound")
    print(f"  decode:  {out['decode_tokens_per_s']:,.1f} tok/s, {out['decode_step_ms']:.3f} ms per step ({out['tokens_per_s_per_user']:.1f} tok/s per user), {out['decode_bound']}-bound")
    print(f"  memory:  {out['memory_needed_gb']:.1f} GB needed for weights + KV cache; fits: {fits}")
    return 0
