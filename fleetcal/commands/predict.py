"""``fleetcal predict``: tokens/s of one serving instance of a model on a GPU (the per-operator serving model,
fleetcal/commands/predict_gpu.py) or on this machine's CPU (its operator curves plus the engine's overhead,
fleetcal/commands/predict_cpu.py), by phase, layout, batch or per-user target. The flags become one PredictInputs
(with its Request) here, at the edge; every numeric flag is bounded and the bound is in the message."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.args import add_results_args
from core.dtypes import SERVING_WEIGHT_DTYPES
from core.errors import UsageError
from core.hardware import add_gpu_file_arg, use_gpu_files
from core.models import get_model
from estimator.traffic import KV_DTYPES, Request, bounded
from fleetcal.commands.predict_gpu import PredictInputs, predict_gpu

MAX_BATCH_PER_GPU = 65_536  # sequences: far past any engine's max_num_seqs (vLLM 0.32: 1,024; TensorRT-LLM: 2,048)
MAX_GPUS = 1024  # GPUs of one instance


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="catalogued model or config directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu", help="catalogued GPU")
    where.add_argument("--device", choices=("cpu",), help="this machine's CPU, from its operator curves and measured steps in results/")
    p.add_argument("--phase", choices=("decode", "prefill", "request"), default="request",
                   help="one decode step, one prefill step, or whole requests (default): prefill and decode sharing the GPUs, chunked "
                        "at the engine's token budget")  # fmt: skip
    p.add_argument("--disaggregated", action="store_true",
                   help="whole requests on separate prefill and decode pools in the ratio they need, the KV sent between them")  # fmt: skip
    p.add_argument("--num-gpus", type=int, help="GPUs of one instance (default: the model's default layout; DeepSeek-V3: its published)")
    p.add_argument("--tp", type=int, help="tensor parallelism (default: the layout's); within one node or NVLink domain")
    p.add_argument("--ep", type=int, help="expert parallelism (default: the layout's)")
    p.add_argument("--pp", type=int, help="pipeline stages, each of TP GPUs holding a share of the layers (default: 1)")
    p.add_argument("--dp-attention", choices=("on", "off"), help="data-parallel attention (default: the layout's)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch-per-gpu", type=_batch,
                      help="sequences per GPU in decode, or 'max': what the KV room holds at a request's full length, input + output "
                           "tokens (as plan sizes it)")  # fmt: skip
    size.add_argument("--concurrency", type=int, help="users of one instance in a closed loop (sequences per GPU = this / its GPUs)")
    size.add_argument("--tokens-per-user", "--tokens-per-s-per-user", dest="tokens_per_s_per_user", type=float,
                      help="per-user speed (1000 / TPOT, tokens/s); the largest batch meeting it is used")  # fmt: skip
    size.add_argument("--batch-size", type=int, help="sequences per instance (the older form)")
    p.add_argument("--context-len", type=float, help="KV length during decode (default: input + output / 2)")
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens per request")
    p.add_argument("--output-len", type=int, default=128, help="reply tokens per request")
    p.add_argument("--tokens-per-gpu", type=int,
                   help="prefill tokens per GPU per step (default: the layout's; DeepSeek-V3: its published 16,384; else the engine's "
                        "token budget on this GPU over TP, core/data/engines/)")  # fmt: skip
    p.add_argument("--ttft-ms", type=float, help="time-to-first-token target: the largest prefill tokens per GPU per step meeting it")
    p.add_argument("--cached-fraction", type=float, default=0.0, help="share of the prompt served from the prefix cache")
    p.add_argument("--weight-dtype", choices=sorted(SERVING_WEIGHT_DTYPES), help="default: the model's serving dtype (catalog)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, default="bf16", help="KV-cache precision")
    p.add_argument("--mtp-tokens", type=int, default=0, help="tokens drafted per step by multi-token prediction (models with MTP modules)")
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


def _batch_choice(args: argparse.Namespace) -> tuple[str, float]:
    if args.tokens_per_s_per_user is not None:
        return "speed", 0.0
    if args.batch_per_gpu == "max":
        return "max", 0.0
    if args.batch_size is not None:
        return "per_instance", bounded("--batch-size", args.batch_size, 1, MAX_BATCH_PER_GPU * MAX_GPUS)
    if args.concurrency is not None:
        return "concurrency", bounded("--concurrency", args.concurrency, 1, MAX_BATCH_PER_GPU * MAX_GPUS)
    return "per_gpu", bounded("--batch-per-gpu", args.batch_per_gpu if args.batch_per_gpu is not None else 1, 1, MAX_BATCH_PER_GPU)


def validate_args(args: argparse.Namespace) -> PredictInputs:
    """The flags as one PredictInputs, each bounded; one UsageError naming the flag and its bound otherwise."""
    if args.disaggregated and (args.phase != "request" or args.device):
        raise UsageError("--disaggregated applies to --phase request on a --gpu")
    if args.batch_per_gpu == "max" and args.device:
        raise UsageError("--batch-per-gpu max needs a --gpu (the KV room of the serving model); give a number on the CPU")
    for flag, v, hi in (("--num-gpus", args.num_gpus, MAX_GPUS), ("--tp", args.tp, 64), ("--ep", args.ep, MAX_GPUS), ("--pp", args.pp, 64),
                        ("--tokens-per-gpu", args.tokens_per_gpu, 1 << 20)):  # fmt: skip
        if v is not None:
            bounded(flag, v, 1, hi)
    if args.tokens_per_s_per_user is not None:
        bounded("--tokens-per-user", args.tokens_per_s_per_user, 0, 1e6, lo_open=True)
    if args.mtp_acceptance is not None:
        bounded("--mtp-acceptance", args.mtp_acceptance, 0, 1)
    spec = get_model(args.model, args.weight_dtype)
    tpot = 1000 / args.tokens_per_s_per_user if args.tokens_per_s_per_user else None
    r = Request(args.model, args.input_len, args.output_len, ttft_ms=args.ttft_ms, tpot_ms=tpot, cached_fraction=args.cached_fraction,
                kv_dtype=args.kv_dtype, mtp_tokens=args.mtp_tokens)  # fmt: skip
    if spec.max_context and r.full_len > spec.max_context:  # on a GPU as on the CPU
        raise UsageError(f"input + output = {r.full_len:.0f} exceeds {spec.name}'s context of {spec.max_context}")
    if args.context_len is not None:
        bounded("--context-len", args.context_len, 1, spec.max_context or 1e7)
    dp = None if args.dp_attention is None else args.dp_attention == "on"
    return PredictInputs(r, args.gpu, args.phase, args.disaggregated, args.num_gpus, args.tp, args.ep, dp, _batch_choice(args),
                         args.context_len, args.tokens_per_gpu, args.weight_dtype, args.mtp_acceptance, args.results,
                         pp=args.pp)  # fmt: skip


def predict(args: argparse.Namespace) -> dict[str, Any]:
    x = validate_args(args)
    if x.gpu:
        return predict_gpu(x)
    from fleetcal.commands.predict_cpu import predict_cpu  # the CPU step model's modules, imported only when asked for

    return predict_cpu(x)


def _print(out: dict[str, Any], per: str) -> None:
    print(f"{out['model']} on {out['device']} ({out['efficiency_source']})")
    if out["output_tokens_per_s_per_gpu"] is not None:
        rate = out.get("decode_tokens_per_s_per_gpu", out["output_tokens_per_s_per_gpu"])
        user = out.get("decode_tokens_per_s_per_user", out["tokens_per_s_per_user"])
        at = f"{out['batch_per_gpu']:g} sequences per {per}"
        print(f"  decode step: {rate:,.1f} output tok/s per {per} at {at}, {user:.1f} tok/s per user")
    if out["input_tokens_per_s_per_gpu"] is not None:
        at = f" at {out['prefill_tokens_per_gpu']:,} tokens per GPU per step" if out.get("prefill_tokens_per_gpu") else ""
        print(f"  prefill: {out['input_tokens_per_s_per_gpu']:,.0f} prompt tok/s per {per}{at}")
    if out["step_ms"] is not None:
        print(f"  step: {out['step_ms']:.2f} ms, bound by {out['bound']}")
    if out.get("mode"):
        print(f"  whole requests ({out['mode']}): {out['output_tokens_per_s_per_gpu']:,.1f} output and "
              f"{out['total_tokens_per_s_per_gpu']:,.1f} total tok/s per {per}, {out['tokens_per_s_per_user']:.1f} tok/s per user, "
              f"TTFT {out['ttft_ms']:,.0f} ms, TPOT {out['tpot_ms']:.1f} ms")  # fmt: skip
    for phase, parts in out["breakdown_ms"].items():
        bounds, sources = out.get("operator_bounds", {}).get(phase), out.get("operator_sources", {}).get(phase)
        if not bounds:  # the CPU step model: operator curves, no per-operator bound
            print(f"  {phase} breakdown (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if v))
            continue
        print(f"  {phase} step by operator (ms, bound, efficiency source):")
        for k, v in parts.items():
            if v:
                print(f"    {k:<28} {v:>10.2f}  {bounds.get(k, ''):<14} {sources.get(k, '')}")


def main(args: argparse.Namespace) -> int:
    use_gpu_files(args.gpu_file)
    out = predict(args)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    _print(out, "GPU" if args.gpu else "device")
    return 0
