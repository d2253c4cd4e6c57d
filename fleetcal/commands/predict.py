"""``fleetcal predict``: tokens/s of one serving instance of a model on a GPU (the per-operator serving model)
or on this machine's CPU (its operator curves plus the engine's overhead), by phase, layout, batch or per-user target."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from typing import Any

from core.args import add_results_args
from core.dtypes import SERVING_WEIGHT_DTYPES
from core.errors import UsageError
from core.hardware import Device, add_gpu_file_arg, get_gpu, use_gpu_files
from core.models import get_model
from estimator.arch import Arch, Layout, load_arch
from estimator.kernels import Kernels, kernels_for
from estimator.memory import kv_room_sequences, largest_batch, weight_bytes_per_gpu
from estimator.operators import load_ops
from estimator.planning import Workload, aggregated_point, disaggregated_point
from estimator.serving import Step, step
from estimator.sizing import UNREACHABLE, default_layouts, prefill_tokens_for_ttft
from estimator.traffic import KV_DTYPES
from fleetcal.commands.predict_cpu import KEYS, predict_cpu


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", help="catalogued GPU")
    where.add_argument("--device", choices=("cpu",), help="this machine's CPU, from its operator curves and measured steps in results/")
    p.add_argument(
        "--phase",
        choices=("decode", "prefill", "request"),
        default="request",
        help="one decode step, one prefill step, or whole requests (default): prefill and decode sharing the GPUs, chunked at vLLM's "
             "token budget",
    )
    p.add_argument(
        "--disaggregated",
        action="store_true",
        help="whole requests on separate prefill and decode pools in the ratio they need, the KV sent between them",
    )
    p.add_argument(
        "--num-gpus", type=int, help="GPUs of one instance (default: the model's default layout; DeepSeek-V3: its published one)"
    )
    p.add_argument("--tp", type=int, help="tensor parallelism (default: the layout's)")
    p.add_argument("--ep", type=int, help="expert parallelism (default: the layout's)")
    p.add_argument("--dp-attention", choices=("on", "off"), help="data-parallel attention (default: the layout's)")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--batch-per-gpu", type=_batch, help="sequences per GPU in decode, or 'max': what the KV room holds at input + output tokens"
    )
    size.add_argument(
        "--concurrency", type=int, help="users of one instance in a closed loop (sequences per GPU = this / GPUs of the instance)"
    )
    size.add_argument("--tokens-per-user", type=float, help="per-user speed (1000 / TPOT); the largest batch meeting it is used")
    size.add_argument("--batch-size", type=int, help="sequences per instance (the older form)")
    p.add_argument("--context-len", type=float, help="KV length during decode (default: input + output / 2)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument(
        "--tokens-per-gpu",
        type=int,
        help="prefill tokens per GPU per step (default: the layout's; DeepSeek-V3: its published 16,384; else the engine's token budget "
             "on this GPU, core/data/engines/)",
    )
    p.add_argument(
        "--ttft-ms",
        type=float,
        help="time-to-first-token target: the largest prefill tokens per GPU per step (up to --tokens-per-gpu) meeting it",
    )
    p.add_argument("--cached-fraction", type=float, default=0.0, help="share of the prompt served from the prefix cache")
    p.add_argument("--weight-dtype", choices=sorted(SERVING_WEIGHT_DTYPES), help="default: the model's serving dtype (catalog)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default="bf16")
    p.add_argument("--mtp-tokens", type=int, default=0, help="tokens drafted per step by multi-token prediction")
    p.add_argument("--mtp-acceptance", type=float, help="acceptance of each drafted token (default: DeepSeek-V3's 0.85)")
    add_results_args(p)
    add_gpu_file_arg(p)


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
    spec = get_model(args.model, args.weight_dtype)
    if spec.max_context and args.input_len + args.output_len > spec.max_context:  # on a GPU as on the CPU
        raise UsageError(f"input + output = {args.input_len + args.output_len} exceeds {spec.name}'s context of {spec.max_context}")


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
    if args.phase in ("decode", "request"):
        out.update(_decode(args, arch, gpu, kernels, _layout(args, dec_default)))
    if args.phase in ("prefill", "request"):
        lay = _layout(args, pre_default) if args.phase == "prefill" else pre_default
        lay = replace(lay, step_tokens=args.tokens_per_gpu or lay.step_tokens)
        st, tokens, why = _prefill(args, arch, gpu, kernels, lay)
        out.update(input_tokens_per_s_per_gpu=st.tokens / st.seconds, prefill_tokens_per_gpu=tokens, prefill_limited_by=why)
        out["breakdown_ms"]["prefill"] = st.breakdown_ms
        out.setdefault("operator_bounds", {})["prefill"] = st.op_bounds
        out.setdefault("operator_sources", {})["prefill"] = st.op_sources
        out.setdefault("layout", {})["prefill"] = lay.__dict__
        if args.phase == "prefill":
            out.update(step_ms=st.seconds * 1000, bound=st.bound)
    if args.phase == "request":  # the decode step's own rates stay beside the whole requests'
        out.update(decode_tokens_per_s_per_gpu=out["output_tokens_per_s_per_gpu"],
                   decode_tokens_per_s_per_user=out["tokens_per_s_per_user"])  # fmt: skip
        dec = _layout(args, dec_default)
        out.update(_whole_requests(args, arch, gpu, kernels, dec, lay, out["batch_per_gpu"], out["prefill_tokens_per_gpu"]))
    return out


def _decode_batch(
    args: argparse.Namespace, arch: Arch, gpu: Device, kernels: Kernels, lay: Layout, ctx: float, room: int
) -> tuple[float, str]:
    """Sequences per GPU and why: the largest meeting --tokens-per-user, the KV room (max), or as asked."""
    if args.tokens_per_user:
        b, why = largest_batch(arch, gpu, lay, kernels, context=ctx, tokens_per_user=args.tokens_per_user, mtp_tokens=args.mtp_tokens,
                               kv_dtype=args.kv_dtype)  # fmt: skip
        if b < 1:
            raise UsageError(f"{args.tokens_per_user:g} tokens/s per user cannot be met on this layout ({why}); lower --tokens-per-user or "
                             "change the layout")  # fmt: skip
        return b, why
    if args.batch_per_gpu == "max":
        if room < 1:
            raise UsageError(f"no KV room for one {args.input_len + args.output_len}-token sequence on this layout; use more GPUs "
                             "(--num-gpus/--tp) or --weight-dtype fp8")  # fmt: skip
        return room, "KV room"
    per_gpu = args.batch_size / lay.num_gpus if args.batch_size else args.concurrency / lay.num_gpus if args.concurrency else 1
    return args.batch_per_gpu or per_gpu, "asked for"


def _decode(args: argparse.Namespace, arch: Arch, gpu: Device, kernels: Kernels, lay: Layout) -> dict[str, Any]:
    """One decode step of the layout at the batch asked for (or found), with its memory."""
    ctx = args.context_len or args.input_len + args.output_len / 2
    mtp = arch.mtp_served(args.mtp_tokens)
    room = kv_room_sequences(arch, gpu, lay, kernels, ctx, args.kv_dtype, mtp=mtp)
    b, why = _decode_batch(args, arch, gpu, kernels, lay, ctx, room)
    st = step(arch, gpu, lay, kernels, "decode", batch_per_gpu=b, context=ctx, mtp_tokens=args.mtp_tokens, kv_dtype=args.kv_dtype)
    return dict(output_tokens_per_s_per_gpu=st.tokens / st.seconds, output_tokens_per_s=st.tokens / st.seconds * lay.num_gpus,
                tokens_per_s_per_user=st.tokens / b / st.seconds, batch_per_gpu=b, step_ms=st.seconds * 1000, bound=st.bound,
                breakdown_ms={"decode": st.breakdown_ms}, operator_bounds={"decode": st.op_bounds},
                operator_sources={"decode": st.op_sources},
                batch_limited_by=why, kv_room_sequences_per_gpu=room, fits_in_memory=b <= room, layout={"decode": lay.__dict__},
                weight_gb_per_gpu=weight_bytes_per_gpu(arch, lay, mtp)["total"] / 1e9)  # fmt: skip


def _prefill(args: argparse.Namespace, arch: Arch, gpu: Device, kernels: Kernels, lay: Layout) -> tuple[Step, int, str]:
    """One prefill step of the layout at the most tokens per GPU that meet --ttft-ms (or its own step size)."""
    tokens, why = prefill_tokens_for_ttft(arch, gpu, lay, kernels, prompt_len=args.input_len, cache_hit_rate=args.cached_fraction,
                                          kv_dtype=args.kv_dtype, ttft_ms=args.ttft_ms or 0.0)  # fmt: skip
    if why == UNREACHABLE:
        raise UsageError(f"a {args.ttft_ms:g} ms time to first token cannot be met for {args.input_len}-token prompts on this layout; "
                         "raise --ttft-ms or change the layout")  # fmt: skip
    st = step(arch, gpu, lay, kernels, "prefill", tokens_per_gpu=tokens, prompt_len=args.input_len, cached_fraction=args.cached_fraction,
              kv_dtype=args.kv_dtype)  # fmt: skip
    return st, tokens, why


def _whole_requests(
    args: argparse.Namespace, arch: Any, gpu: Any, k: Any, dec: Layout, pre: Layout, b: float, tokens: int
) -> dict[str, Any]:
    """Whole requests at ``b`` sequences per GPU: aggregated (estimator/planning.py) or disaggregated pools."""
    w = Workload(args.input_len, args.output_len, 1.0, math.inf, math.inf, args.cached_fraction, args.kv_dtype, args.mtp_tokens)
    pt = disaggregated_point(arch, gpu, pre, dec, k, w, b, tokens)[0] if args.disaggregated else aggregated_point(arch, gpu, dec, k, w, b)
    return {
        "mode": "disaggregated" if args.disaggregated else "aggregated",
        "output_tokens_per_s_per_gpu": pt.output_tokens_per_s_per_gpu,
        "output_tokens_per_s": pt.output_tokens_per_s_per_gpu * dec.num_gpus,
        "total_tokens_per_s_per_gpu": pt.total_tokens_per_s_per_gpu,
        "tokens_per_s_per_user": pt.tokens_per_s_per_user,
        "ttft_ms": pt.ttft_ms,
        "tpot_ms": pt.tpot_ms,
        "fits_token_budget": pt.fits,
    }


def predict(args: argparse.Namespace) -> dict[str, Any]:
    _validate(args)
    return predict_gpu(args) if args.gpu else predict_cpu(args)


def main(args: argparse.Namespace) -> int:
    use_gpu_files(args.gpu_file)
    out = predict(args)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    print(f"{out['model']} on {out['device']} ({out['efficiency_source']})")
    per = "GPU" if args.gpu else "device"
    if out["output_tokens_per_s_per_gpu"] is not None:
        rate, user = (
            out.get("decode_tokens_per_s_per_gpu", out["output_tokens_per_s_per_gpu"]),
            out.get("decode_tokens_per_s_per_user", out["tokens_per_s_per_user"]),
        )
        print(
            f"  decode step: {rate:,.1f} output tok/s per {per} at {out['batch_per_gpu']:g} sequences per {per}, {user:.1f} tok/s per user"
        )
    if out["input_tokens_per_s_per_gpu"] is not None:
        at = f" at {out['prefill_tokens_per_gpu']:,} tokens per GPU per step" if out.get("prefill_tokens_per_gpu") else ""
        print(f"  prefill: {out['input_tokens_per_s_per_gpu']:,.0f} prompt tok/s per {per}{at}")
    if out["step_ms"] is not None:
        print(f"  step: {out['step_ms']:.2f} ms, bound by {out['bound']}")
    if out.get("mode"):
        print(
            f"  whole requests ({out['mode']}): {out['output_tokens_per_s_per_gpu']:,.1f} output and "
            f"{out['total_tokens_per_s_per_gpu']:,.1f} total tok/s per {per}, "
            f"{out['tokens_per_s_per_user']:.1f} tok/s per user, TTFT {out['ttft_ms']:,.0f} ms, TPOT {out['tpot_ms']:.1f} ms"
        )
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
