"""``fleetcal predict``: tokens/s of one serving instance of a model on a GPU (the per-operator serving model)
or on this machine's CPU (its operator curves plus the engine's overhead), by phase, layout, batch or per-user target."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.dtypes import SERVING_WEIGHT_DTYPES
from core.errors import UsageError
from core.hardware import get_gpu
from core.identity import cpu_has_native_bf16, describe_cpu
from core.models import get_model, resolve_model_key
from core.paths import RESULTS_DIR
from estimator.arch import Layout, load_arch
from estimator.cpu_steps import (
    OperatorCurves,
    Overhead,
    UndeterminedError,
    build_curves,
    decode_ops,
    prefill_ops,
)
from estimator.cpu_validation import REFERENCE_MODEL, validate
from estimator.kernels import kernels_for
from estimator.memory import kv_room_sequences, largest_batch, weight_bytes_per_gpu
from estimator.operators import load_ops
from estimator.planning import Workload, aggregated_point, disaggregated_point
from estimator.runs import load_runs
from estimator.serving import step
from estimator.sizing import PREFILL_TOKENS_PER_GPU, UNREACHABLE, default_layouts, prefill_tokens_for_ttft
from estimator.traffic import KV_DTYPES

KEYS = ("output_tokens_per_s_per_gpu", "input_tokens_per_s_per_gpu", "output_tokens_per_s", "tokens_per_s_per_user",
        "batch_per_gpu", "step_ms", "bound", "breakdown_ms", "efficiency_source", "mode", "total_tokens_per_s_per_gpu", "ttft_ms", "tpot_ms")  # fmt: skip


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", help="catalogued GPU")
    where.add_argument("--device", choices=("cpu",), help="this machine's CPU, from its operator curves and measured steps in results/")
    p.add_argument("--phase", choices=("decode", "prefill", "request"), default="request",
                   help="one decode step, one prefill step, or whole requests (default): prefill and decode sharing the GPUs, chunked at vLLM's token budget")
    p.add_argument("--disaggregated", action="store_true", help="whole requests on separate prefill and decode pools in the ratio they need, the KV sent between them")
    p.add_argument("--num-gpus", type=int, help="GPUs of one instance (default: the model's default layout; DeepSeek-V3: its published one)")
    p.add_argument("--tp", type=int, help="tensor parallelism (default: the layout's)")
    p.add_argument("--ep", type=int, help="expert parallelism (default: the layout's)")
    p.add_argument("--dp-attention", choices=("on", "off"), help="data-parallel attention (default: the layout's)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch-per-gpu", type=_batch, help="sequences per GPU in decode, or 'max': what the KV room holds at input + output tokens")
    size.add_argument("--concurrency", type=int, help="users of one instance in a closed loop (sequences per GPU = this / GPUs of the instance)")
    size.add_argument("--tokens-per-user", type=float, help="per-user speed (1000 / TPOT); the largest batch meeting it is used")
    size.add_argument("--batch-size", type=int, help="sequences per instance (the older form)")
    p.add_argument("--context-len", type=float, help="KV length during decode (default: input + output / 2)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--tokens-per-gpu", type=int, help=f"prefill tokens per GPU per step (default: the layout's; DeepSeek-V3: its published 16,384; else {PREFILL_TOKENS_PER_GPU:,})")
    p.add_argument("--ttft-ms", type=float, help="time-to-first-token target: the largest prefill tokens per GPU per step (up to --tokens-per-gpu) meeting it")
    p.add_argument("--cached-fraction", type=float, default=0.0, help="share of the prompt served from the prefix cache")
    p.add_argument("--weight-dtype", choices=sorted(SERVING_WEIGHT_DTYPES), help="default: the model's serving dtype (catalog)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default="bf16")
    p.add_argument("--mtp-tokens", type=int, default=0, help="tokens drafted per step by multi-token prediction")
    p.add_argument("--mtp-acceptance", type=float, help="acceptance of each drafted token (default: DeepSeek-V3's 0.85)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="results directory (its runs/ is read; a runs directory or one run file also works)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def _batch(text: str) -> float | str:
    if text == "max":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of sequences or 'max'") from None


def _validate(args: argparse.Namespace) -> None:
    if args.disaggregated and (args.phase != "request" or args.device):
        raise UsageError("--disaggregated applies to --phase request on a --gpu")
    if args.batch_per_gpu == "max" and args.device:
        raise UsageError("--batch-per-gpu max needs a --gpu (the KV room of the serving model); give a number on the CPU")
    for name in ("num_gpus", "tp", "ep", "batch_size", "concurrency", "input_len", "output_len", "tokens_per_gpu"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
    for name in ("batch_per_gpu", "tokens_per_user", "context_len", "ttft_ms"):
        v = getattr(args, name)
        if v is not None and v != "max" and not 0 < v < 1e9:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number")
    if not 0 <= args.cached_fraction < 1:
        raise UsageError("--cached-fraction must be in [0, 1)")
    if args.mtp_tokens < 0 or args.mtp_tokens > 4:
        raise UsageError("--mtp-tokens must be 0 to 4")
    if args.mtp_acceptance is not None and not 0 <= args.mtp_acceptance <= 1:
        raise UsageError("--mtp-acceptance must be in [0, 1]")


def _layout(args: argparse.Namespace, default: Layout) -> Layout:
    n = args.num_gpus or default.num_gpus
    tp = args.tp or (default.tp if n == default.num_gpus else 1)
    ep = args.ep or (min(default.ep, n) if default.ep > 1 else 1)
    dp = default.dp_attention if args.dp_attention is None else args.dp_attention == "on"
    return Layout(n, tp=tp, ep=ep, dp_attention=dp and tp == 1, redundant_experts=default.redundant_experts if ep == default.ep else 0,
                  step_tokens=default.step_tokens)  # fmt: skip


def predict_gpu(args: argparse.Namespace) -> dict[str, Any]:
    """The serving model for one instance on a catalogued GPU."""
    gpu = get_gpu(args.gpu)
    arch = load_arch(args.model, args.weight_dtype)
    kernels, source = kernels_for(gpu, load_ops(args.results), arch.fp8_block_scaled)
    if args.mtp_acceptance is not None:
        kernels = replace(kernels, mtp_acceptance=args.mtp_acceptance)
    dec_default, pre_default = default_layouts(arch, gpu, kernels)
    out: dict[str, Any] = {k: None for k in KEYS}
    out.update(model=arch.shapes.name, device=gpu.name, efficiency_source=source, breakdown_ms={})
    ctx = args.context_len or args.input_len + args.output_len / 2
    if args.phase in ("decode", "request"):
        lay = _layout(args, dec_default)
        mtp = arch.mtp_served(args.mtp_tokens)
        room = kv_room_sequences(arch, gpu, lay, kernels, ctx, args.kv_dtype, mtp=mtp)
        if args.tokens_per_user:
            b, why = largest_batch(arch, gpu, lay, kernels, context=ctx, tokens_per_user=args.tokens_per_user, mtp_tokens=args.mtp_tokens, kv_dtype=args.kv_dtype)
            if b < 1:
                raise UsageError(f"{args.tokens_per_user:g} tokens/s per user cannot be met on this layout ({why}); lower --tokens-per-user or change the layout")
        elif args.batch_per_gpu == "max":
            b, why = room, "KV room"
            if b < 1:
                raise UsageError(f"no KV room for one {args.input_len + args.output_len}-token sequence on this layout; use more GPUs (--num-gpus/--tp) or --weight-dtype fp8")
        else:
            b = args.batch_per_gpu or (args.batch_size / lay.num_gpus if args.batch_size else args.concurrency / lay.num_gpus if args.concurrency else 1)
            why = "asked for"
        st = step(arch, gpu, lay, kernels, "decode", batch_per_gpu=b, context=ctx, mtp_tokens=args.mtp_tokens, kv_dtype=args.kv_dtype)
        out.update(
            output_tokens_per_s_per_gpu=st.tokens / st.seconds, output_tokens_per_s=st.tokens / st.seconds * lay.num_gpus,
            tokens_per_s_per_user=st.tokens / b / st.seconds, batch_per_gpu=b, step_ms=st.seconds * 1000, bound=st.bound,
            breakdown_ms={"decode": st.breakdown_ms}, operator_bounds={"decode": st.op_bounds}, operator_sources={"decode": st.op_sources}, batch_limited_by=why, kv_room_sequences_per_gpu=room, fits_in_memory=b <= room,
            layout={"decode": lay.__dict__}, weight_gb_per_gpu=weight_bytes_per_gpu(arch, lay, mtp)["total"] / 1e9,
        )  # fmt: skip
    if args.phase in ("prefill", "request"):
        lay = _layout(args, pre_default) if args.phase == "prefill" else pre_default
        lay = replace(lay, step_tokens=args.tokens_per_gpu or lay.step_tokens)
        tokens, why = prefill_tokens_for_ttft(arch, gpu, lay, kernels, prompt_len=args.input_len, cache_hit_rate=args.cached_fraction,
                                              kv_dtype=args.kv_dtype, ttft_ms=args.ttft_ms or 0.0)  # fmt: skip
        if why == UNREACHABLE:
            raise UsageError(f"a {args.ttft_ms:g} ms time to first token cannot be met for {args.input_len}-token prompts on this layout; raise --ttft-ms or change the layout")
        st = step(arch, gpu, lay, kernels, "prefill", tokens_per_gpu=tokens, prompt_len=args.input_len, cached_fraction=args.cached_fraction, kv_dtype=args.kv_dtype)
        out.update(input_tokens_per_s_per_gpu=st.tokens / st.seconds, prefill_tokens_per_gpu=tokens, prefill_limited_by=why)
        out["breakdown_ms"]["prefill"] = st.breakdown_ms
        out.setdefault("operator_bounds", {})["prefill"] = st.op_bounds
        out.setdefault("operator_sources", {})["prefill"] = st.op_sources
        out.setdefault("layout", {})["prefill"] = lay.__dict__
        if args.phase == "prefill":
            out.update(step_ms=st.seconds * 1000, bound=st.bound)
    if args.phase == "request":  # the decode step's own rates stay beside the whole requests'
        out.update(decode_tokens_per_s_per_gpu=out["output_tokens_per_s_per_gpu"], decode_tokens_per_s_per_user=out["tokens_per_s_per_user"])
        out.update(_whole_requests(args, arch, gpu, kernels, _layout(args, dec_default), lay, out["batch_per_gpu"], out["prefill_tokens_per_gpu"]))
    return out


def _whole_requests(args: argparse.Namespace, arch: Any, gpu: Any, k: Any, dec: Layout, pre: Layout, b: float, tokens: int) -> dict[str, Any]:
    """Whole requests at ``b`` sequences per GPU: aggregated (estimator/planning.py) or disaggregated pools."""
    w = Workload(args.input_len, args.output_len, 1.0, math.inf, math.inf, args.cached_fraction, args.kv_dtype, args.mtp_tokens)
    pt = disaggregated_point(arch, gpu, pre, dec, k, w, b, tokens)[0] if args.disaggregated else aggregated_point(arch, gpu, dec, k, w, b)
    return {"mode": "disaggregated" if args.disaggregated else "aggregated", "output_tokens_per_s_per_gpu": pt.output_tokens_per_s_per_gpu,
            "output_tokens_per_s": pt.output_tokens_per_s_per_gpu * dec.num_gpus, "total_tokens_per_s_per_gpu": pt.total_tokens_per_s_per_gpu,
            "tokens_per_s_per_user": pt.tokens_per_s_per_user, "ttft_ms": pt.ttft_ms, "tpot_ms": pt.tpot_ms,
            "fits_token_budget": pt.fits}  # fmt: skip


def _cpu_steps(args: argparse.Namespace) -> tuple[OperatorCurves, Overhead, str]:
    """This CPU's operator curves for the model and the engine overheads fitted here (matched by device identity, never another CPU's)."""
    here = describe_cpu()
    label = f"[{here['id']}]"
    ops = load_ops(args.results)
    mine = ops[ops["device_name"].str.endswith(label)]
    key = resolve_model_key(args.model)
    names = sorted({m for m in mine["model"] if key is not None and resolve_model_key(m) == key})
    how = f"run `bash scripts/measure_cpu_steps.sh` here (or `fleetcal bench --mode ops --model {args.model} --load-format dummy`)"
    if mine.empty or not names:
        what = "has not been measured" if mine.empty else f"has no operator curves for {args.model}"
        raise UsageError(f"this CPU ({here['name']} {label}) {what}: {how}")
    device_name = mine["device_name"].iloc[0]
    dtypes = set(mine.loc[mine["model"] == names[0], "dtype"])
    dtype = "bf16" if cpu_has_native_bf16(here) and "bf16" in dtypes else "fp32"  # what `--dtype auto` runs here
    try:
        v = validate(load_runs(args.results, warn=False), ops, device_name)  # load_ops named the skipped files
        # curves and overhead of one measuring session, the latest that timed this model's operators: this machine drifts between sessions
        files, model_ops = v.session_files, mine[mine["model"] == names[0]]
        timed = [name for name, fs in files.items() if model_ops["run_file"].isin(fs).any()]
        if not timed:
            raise UndeterminedError(f"no measuring session with fitted decode steps timed the operators of {names[0]}")
        session = max(timed)
        curves, over = build_curves(model_ops[model_ops["run_file"].isin(files[session])], device_name, names[0], dtype), v.overheads[session]
    except UndeterminedError as exc:
        raise UsageError(f"this CPU's step model cannot be built: {exc}; {how}") from exc
    for what in over.undetermined:  # said, not hidden: the prediction leans on a term the fitted steps do not pin down
        print(f"fleetcal predict: warning: the engine overhead fit of this CPU cannot determine its {what}", file=sys.stderr)
    source = (f"operator curves of {names[0]} on this CPU, {device_name}, {dtype}, and the engine overhead fitted on "
              f"{over.fitted_on} decode steps of {REFERENCE_MODEL}, all from the measuring session {session}")  # fmt: skip
    return curves, over, source


def predict_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """The CPU step model of this machine (one device, no layout): operator curves plus the engine's overhead."""
    spec = get_model(args.model, args.weight_dtype)
    if spec.max_context and args.input_len + args.output_len > spec.max_context:
        raise UsageError(f"input + output = {args.input_len + args.output_len} exceeds {spec.name}'s context of {spec.max_context}")
    curves, over, source = _cpu_steps(args)
    ctx = args.context_len or args.input_len + args.output_len / 2

    def decode(b: int) -> tuple[float, dict[str, float]]:
        parts = {**decode_ops(curves, b, ctx), "overhead": over.per_step + over.per_sequence * b}
        return sum(parts.values()), parts

    if args.tokens_per_user:
        b = 0
        while b < 4096 and 1 / decode(b + 1)[0] >= args.tokens_per_user:
            b += 1
        if b < 1:
            raise UsageError(f"{args.tokens_per_user:g} tokens/s per user cannot be met on this CPU (batch 1 reaches {1 / decode(1)[0]:.1f}); lower --tokens-per-user")
    else:
        b = int(args.batch_per_gpu or args.batch_size or args.concurrency or 1)
    dec_s, dec_parts = decode(b)
    pre_parts, chunks = prefill_ops(curves, b, args.input_len)
    pre_parts["overhead"] = chunks * over.per_step + over.per_sequence * b
    pre_s = sum(pre_parts.values())
    out: dict[str, Any] = {k: None for k in KEYS}
    out.update(model=spec.name, device=curves.device_name, efficiency_source=source, batch_per_gpu=b, breakdown_ms={})
    if args.phase in ("decode", "request"):
        out.update(output_tokens_per_s_per_gpu=b / dec_s, output_tokens_per_s=b / dec_s, tokens_per_s_per_user=1 / dec_s, step_ms=dec_s * 1000, bound="operator sum")
        out["breakdown_ms"]["decode"] = {k: v * 1000 for k, v in dec_parts.items()}
    if args.phase in ("prefill", "request"):
        out["input_tokens_per_s_per_gpu"] = b * args.input_len / pre_s
        out["breakdown_ms"]["prefill"] = {k: v * 1000 for k, v in pre_parts.items()}
        if args.phase == "prefill":
            out.update(step_ms=pre_s * 1000, bound="operator sum")
    if args.phase == "request":  # whole requests as vLLM's offline throughput runs them here: prefill, then decode, one batch at a time
        t = pre_s + dec_s * max(args.output_len - 1, 0)
        out["output_tokens_per_s"] = out["output_tokens_per_s_per_gpu"] = b * args.output_len / t
        out.update(mode="one batch at a time", total_tokens_per_s_per_gpu=b * (args.input_len + args.output_len) / t, ttft_ms=pre_s * 1000,
                   tpot_ms=dec_s * 1000, tokens_per_s_per_user=args.output_len / t)  # fmt: skip
    return out


def predict(args: argparse.Namespace) -> dict[str, Any]:
    _validate(args)
    return predict_gpu(args) if args.gpu else predict_cpu(args)


def main(args: argparse.Namespace) -> int:
    out = predict(args)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    print(f"{out['model']} on {out['device']} ({out['efficiency_source']})")
    per = "GPU" if args.gpu else "device"
    if out["output_tokens_per_s_per_gpu"] is not None:
        rate, user = out.get("decode_tokens_per_s_per_gpu", out["output_tokens_per_s_per_gpu"]), out.get("decode_tokens_per_s_per_user", out["tokens_per_s_per_user"])
        print(f"  decode step: {rate:,.1f} output tok/s per {per} at {out['batch_per_gpu']:g} sequences per {per}, {user:.1f} tok/s per user")
    if out["input_tokens_per_s_per_gpu"] is not None:
        at = f" at {out['prefill_tokens_per_gpu']:,} tokens per GPU per step" if out.get("prefill_tokens_per_gpu") else ""
        print(f"  prefill: {out['input_tokens_per_s_per_gpu']:,.0f} prompt tok/s per {per}{at}")
    if out["step_ms"] is not None:
        print(f"  step: {out['step_ms']:.2f} ms, bound by {out['bound']}")
    if out.get("mode"):
        print(f"  whole requests ({out['mode']}): {out['output_tokens_per_s_per_gpu']:,.1f} output and {out['total_tokens_per_s_per_gpu']:,.1f} total tok/s per {per}, "
              f"{out['tokens_per_s_per_user']:.1f} tok/s per user, TTFT {out['ttft_ms']:,.0f} ms, TPOT {out['tpot_ms']:.1f} ms")  # fmt: skip
    for phase, parts in out["breakdown_ms"].items():
        bounds, sources = out.get("operator_bounds", {}).get(phase), out.get("operator_sources", {}).get(phase)
        if not bounds:  # the CPU step model: operator curves, no per-operator bound
            print(f"  {phase} breakdown (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if v))
            continue
        print(f"  {phase} step by operator (ms, bound, efficiency source):")
        for k, v in parts.items():
            if v:
                print(f"    {k:<28} {v:>10.2f}  {bounds.get(k, ''):<14} {sources.get(k, '')}")
    if out.get("fits_in_memory") is False:
        print(f"  memory: {out['batch_per_gpu']:g} sequences do not fit; KV room for {out['kv_room_sequences_per_gpu']} per GPU")
    return 0
