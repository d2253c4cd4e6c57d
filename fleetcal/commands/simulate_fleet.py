"""The engines ``fleetcal simulate`` runs: their rules and step model, on a catalogued GPU or on this machine's CPU."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from core.errors import UsageError
from core.hardware import get_gpu
from core.models import get_model
from core.schema import load_document
from estimator.arch import Layout, load_arch
from estimator.kernels import kernels_for
from estimator.operators import load_ops
from estimator.planning import kv_transfer_s
from estimator.sim.cpu import CpuSteps
from estimator.sim.engine import EngineRules, cpu_engine_rules, run_engine_settings
from estimator.sim.fleet import Fleet, Pool
from estimator.sim.gpu import gpu_pool
from estimator.sizing import default_layouts
from estimator.traffic import Request


def _rules_dict(r: EngineRules) -> dict[str, Any]:
    return {"max_num_batched_tokens": r.max_num_batched_tokens, "max_num_seqs": r.max_num_seqs, "block_size": r.block_size,
            "kv_blocks": r.kv_blocks, "prefix_caching": r.prefix_caching, "mtp_tokens": r.mtp_tokens,
            "mtp_acceptance": r.mtp_acceptance, "source": r.source}  # fmt: skip


def _cpu(args: argparse.Namespace) -> tuple[Fleet, dict[str, Any], int]:
    from fleetcal.commands.predict_cpu import _cpu_steps  # this CPU's curves and overhead, as predict --device cpu finds them

    if args.mtp_tokens or args.tp:
        raise UsageError("--mtp-tokens and --tp apply to a --gpu")
    spec = get_model(args.model, args.weight_dtype)
    curves, over, source = _cpu_steps(SimpleNamespace(results=args.results, request=SimpleNamespace(model=args.model)))
    ran = run_engine_settings(load_document(args.engine_from)["run"]["engine"]) if args.engine_from else {}
    rules = cpu_engine_rules(curves.shapes.kv_bytes_per_token(curves.dtype), ran.get("kv_cache_gb") or args.kv_cache_gb,
                             budget=args.max_num_batched_tokens or ran.get("budget"), max_seqs=args.max_num_seqs or ran.get("max_seqs"),
                             block_size=args.block_size,
                             prefix_caching=ran.get("prefix_caching", True) and not args.no_prefix_caching)  # fmt: skip
    if args.engine_from:
        rules = replace(rules, source=f"{rules.source}; the engine settings of {args.engine_from.name}")
    steps = CpuSteps(curves, over, rules.max_num_batched_tokens + rules.max_num_seqs)
    fleet = Fleet(Pool(rules, steps, args.instances, args.router))
    max_len = min(spec.max_context or math.inf, rules.kv_tokens)
    return fleet, {"model": spec.name, "device": curves.device_name, "layout": "one CPU engine", "step_model": source,
                   "engine_rules": _rules_dict(rules)}, int(max_len)  # fmt: skip


def _layout(args: argparse.Namespace, default: Layout, experts: bool) -> Layout:
    return Layout(args.tp, tp=args.tp, ep=args.tp if experts else 1) if args.tp else default


def _gpu(args: argparse.Namespace) -> tuple[Fleet, dict[str, Any], int]:
    gpu, arch = get_gpu(args.gpu), load_arch(args.model, args.weight_dtype)
    spec = get_model(args.model, args.weight_dtype)
    kernels, source = kernels_for(gpu, load_ops(args.results), arch.fp8_block_scaled)
    if args.mtp_acceptance is not None:
        kernels = replace(kernels, mtp_acceptance=args.mtp_acceptance)
    dec_default, pre_default = default_layouts(arch, args.model, gpu, kernels)
    dec, pre = (_layout(args, d, bool(arch.shapes.num_experts)) for d in (dec_default, pre_default))

    def pool(layout: Layout, n: int, mtp: int) -> Pool:
        return gpu_pool(arch, gpu, layout, kernels, max_context=spec.max_context or math.inf, kv_dtype=args.kv_dtype, mtp_tokens=mtp,
                        prefix_caching=not args.no_prefix_caching, budget=args.max_num_batched_tokens, max_seqs=args.max_num_seqs,
                        block_size=args.block_size, instances=n, router=args.router)  # fmt: skip

    decode = pool(dec, args.instances, args.mtp_tokens)
    prefill = pool(pre, args.prefill_instances, 0) if args.prefill_instances else None
    per_token = kv_transfer_s(arch, pre, kernels, Request(args.model, 1, 1, kv_dtype=args.kv_dtype)) if prefill else 0.0
    fleet = Fleet(decode, prefill, per_token)
    lay = f"{dec.num_gpus} GPU(s) per instance, TP{dec.tp}" + (f", EP{dec.ep}" if dec.ep > 1 else "") + (
        ", data-parallel attention: each GPU its own engine" if dec.dp_attention else "")
    if prefill:
        lay = (f"prefill {args.prefill_instances} x TP{pre.tp} + decode {args.instances} x TP{dec.tp}, "
               f"KV sent at {1 / per_token / 1e6:,.1f}M tokens/s")
    max_len = min(spec.max_context or math.inf, decode.rules.kv_tokens, prefill.rules.kv_tokens if prefill else math.inf)
    return fleet, {"model": spec.name, "device": gpu.name, "layout": lay, "engine_rules": _rules_dict(decode.rules),
                   "step_model": f"serving model, tabulated ({source})"}, int(max_len)  # fmt: skip


def build_fleet(args: argparse.Namespace) -> tuple[Fleet, dict[str, Any], int]:
    """(the fleet, what describes it, the longest request one instance can serve)."""
    return _cpu(args) if args.device == "cpu" else _gpu(args)
