"""Runs NVIDIA's AIConfigurator (https://github.com/ai-dynamo/aiconfigurator, Apache-2.0) on requests fleetcal mapped from
its validation rows, in AIConfigurator's own environment: ``PEER_PYTHON aic_runner.py REQUESTS.json OUT.json``.

Standalone on purpose: the peer's Python executes this file, so it imports nothing of fleetcal and fleetcal never imports
AIConfigurator (fleetcal/peers/aic.py builds the requests and reads OUT.json). Each request says what the row
becomes in the peer's terms (fleetcal/peers/aic.py and docs/peer.md, "What each row becomes"); this file only
calls the peer's public estimate API (``aiconfigurator.cli.api.cli_estimate``, what ``aiconfigurator cli estimate`` runs)
and reads what it returns:

- ``max_load``: the largest batch the peer's own KV-cache gate admits (``InferenceSummary.check_kv_cache_oom``, TensorRT-LLM's
  free-memory fraction of what is left after weights, activations at ``max_num_tokens`` and runtime memory), capped at the
  row's ``max_batch``, then one aggregated (in-flight batching) estimate at that batch and token budget.
- ``static_batch``: one static estimate (``mode="static"``: a prefill of the batch, then its decode steps; stride 1).
- ``prefill_step``: one context pass (``static_ctx``) of ``tokens_per_gpu / input_len`` prompts per attention rank.
- ``decode_step``: one decode step (``static_gen``) at the row's batch per GPU and context length.

A request the peer cannot run comes back with ``error`` (the peer's own message, first line): nothing is guessed for it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from importlib import metadata
from typing import Any

DIGITS = 6  # significant digits kept of every latency and rate
# fleetcal's GPU name -> the peer's system (aiconfigurator_core/systems/<system>.yaml, the SXM boards fleetcal's catalog
# describes); fleetcal/peers/aic.py and scripts/peer_operators.py read it from here, this file importing nothing of fleetcal
# (those whose database 0.12.0 holds data: its h100_pcie system has none)
SYSTEMS = {"H100": "h100_sxm", "H200": "h200_sxm", "A100": "a100_sxm", "B200": "b200_sxm", "B300": "b300_sxm", "GB200": "gb200",
           "L40S": "l40s", "RTX-PRO-6000": "rtx_pro_6000_server"}


def _round(x: float) -> float:
    """``x`` to DIGITS significant digits (JSON stays readable; nothing downstream needs more)."""
    return float(f"{float(x):.{DIGITS}g}")


def kv_room_sequences(memory_gib: dict[str, float], batch: int, capacity_gib: float, budget: Any) -> int:
    """Sequences the peer's KV-cache gate admits: its KV budget over the KV bytes of one sequence.

    ``memory_gib`` is the peer's memory breakdown at ``batch`` sequences (KV grows linearly with the batch; weights, runtime
    memory and TensorRT-LLM's activations, sized at ``max_num_tokens``, do not); ``budget(capacity, non_kv)`` is the peer's
    ``kv_cache_budget_bytes`` with the fraction, reservation and tolerance its gate applies.
    """
    per_seq = memory_gib["kvcache"] / batch
    non_kv = memory_gib["total"] - memory_gib["kvcache"]
    return max(0, math.floor(budget(capacity_gib, non_kv) / per_seq))


def _estimate(api: Any, req: dict[str, Any], mode: str, batch: int, **extra: Any) -> Any:
    """One ``cli_estimate`` call with the request's model, system, backend, layout and precisions."""
    return api.cli_estimate(
        req["model_dir"], req["system"], mode=mode, backend_name=req["backend"], backend_version=req["version"], batch_size=batch,
        tp_size=req["tp"], attention_dp_size=req["attention_dp"], moe_tp_size=req.get("moe_tp"), moe_ep_size=req.get("moe_ep"),
        gemm_quant_mode=req["gemm_quant"], moe_quant_mode=req.get("moe_quant"), kvcache_quant_mode=req["kv_quant"], **extra,
    )  # fmt: skip


def _max_load(api: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Max load: the batch the peer's KV gate admits (checked at b and b + 1), then the aggregated estimate there."""
    from aiconfigurator.sdk.memory import kv_cache_budget_bytes

    extra = dict(isl=req["input_len"], osl=req["output_len"], ctx_tokens=req["ctx_tokens"], free_gpu_memory_fraction=req["kv_fraction"])
    probe = _estimate(api, req, "agg", 1, **extra)  # one sequence: the KV bytes of one and the memory besides KV
    s = probe.summary

    def budget(capacity: float, non_kv: float) -> float:
        return kv_cache_budget_bytes(capacity=capacity, non_kv=non_kv, fraction=s._free_gpu_memory_fraction, of_free=s._fraction_of_free,
                                     reserved=s._kv_cache_reserved_fraction, tolerance=s._kv_cache_tolerance)  # fmt: skip

    room = kv_room_sequences(s.get_memory(), 1, s._mem_capacity_bytes / 2**30, budget)
    if room < 1:
        return {"error": "no KV room for one request under the peer's memory model"}
    batch = min(room, req["max_batch"])
    r = _estimate(api, req, "agg", batch, **extra)
    above_admitted = batch == req["max_batch"] or _estimate(api, req, "agg", batch + 1, **extra).summary.check_kv_cache_oom()
    if r.summary.check_kv_cache_oom() or not above_admitted:
        return {"error": f"the peer's KV gate disagrees with its budget at batch {batch}"}
    why = "KV room" if batch < req["max_batch"] else "max batch"
    steps = r.per_ops_data.get("scheduling", {})
    return {"per_gpu_tokens_per_s": r.raw["tokens/s/gpu"], "batch": batch, "per_op_ms": _per_ops(r.per_ops_data),
            "how": f"agg, batch {batch} per instance ({why}), ctx_tokens {req['ctx_tokens']}: {steps.get('num_mix_steps', 0):.0f} mixed "
                   f"steps of {steps.get('mix_step_latency_ms', 0):.1f} ms + {steps.get('num_genonly_steps', 0):.0f} decode steps of "
                   f"{steps.get('genonly_step_latency_ms', 0):.2f} ms"}  # fmt: skip


def _per_ops(data: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """The peer's per-operator latencies (ms) by step, numbers only (its scheduling counters are dropped)."""
    return {step: {op: _round(v) for op, v in ops.items()} for step, ops in (data or {}).items() if step != "scheduling"}


def _static(api: Any, req: dict[str, Any]) -> dict[str, Any]:
    """A static batch, a prefill step or a decode step: one static estimate and its per-operator breakdown."""
    kind = req["kind"]
    if kind == "static_batch":
        r = _estimate(api, req, "static", req["batch"], isl=req["input_len"], osl=req["output_len"], stride=1)
        per_gpu, how = r.raw["tokens/s/gpu"], f"static, batch {req['batch']}: TTFT {r.raw['ttft']:.0f} ms, TPOT {r.raw['tpot']:.2f} ms"
    elif kind == "prefill_step":
        prompts = req["tokens_per_gpu"] // req["input_len"]
        r = _estimate(api, req, "static_ctx", prompts, isl=req["input_len"], osl=2)
        ms = float(r.raw["context_latency"])
        per_gpu, how = prompts * req["input_len"] / ms * 1e3, f"static_ctx, {prompts} prompts per rank: {ms:,.0f} ms"
    else:
        r = _estimate(api, req, "static_gen", req["batch"], isl=req["context_len"], osl=2)
        ms = float(r.raw["tpot"])
        per_gpu, how = req["batch"] / ms * 1e3, f"static_gen, batch {req['batch']} per rank: {ms:.2f} ms a step"
    ops = {"context": r.summary.get_context_latency_dict(), "generation": r.summary.get_generation_latency_dict()}
    return {"per_gpu_tokens_per_s": per_gpu, "batch": req.get("batch") or req.get("tokens_per_gpu"), "how": how,
            "per_op_ms": {k: {op: _round(v) for op, v in d.items()} for k, d in ops.items() if d}}  # fmt: skip


def _route_moe(api: Any, req: dict[str, Any]) -> None:
    """MoE routing the request asks for (``workload_distribution``, ``enable_eplb``): fields of the peer's ModelConfig that
    its estimate API does not take, set on the config it builds (``aiconfigurator.cli.api._build_model_config``)."""
    settings = {k: req[k] for k in ("workload_distribution", "enable_eplb") if k in req}
    build = getattr(api, "_fleetcal_original_build", None) or api._build_model_config
    api._fleetcal_original_build = build

    def configured(*args: Any, **kwargs: Any) -> Any:
        cfg = build(*args, **kwargs)
        for key, value in settings.items():
            setattr(cfg, key, value)
        return cfg

    api._build_model_config = configured


def run_one(api: Any, req: dict[str, Any]) -> dict[str, Any]:
    """One request: the peer's per-GPU tokens/s (what the row counts) and how, or the peer's reason for refusing it."""
    _route_moe(api, req)
    try:
        out = _max_load(api, req) if req["kind"] == "max_load" else _static(api, req)
    except Exception as exc:  # the peer's refusal (missing data, OOM, unsupported layout) is reported, not guessed past
        out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    if "per_gpu_tokens_per_s" in out:
        out["per_gpu_tokens_per_s"] = _round(out["per_gpu_tokens_per_s"])
    return {"id": req["id"], "system": req["system"], "backend": req["backend"], **out}


def peer_versions(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The peer's package versions and the database version each (system, backend, requested version) resolves to."""
    from aiconfigurator.sdk.perf_database import get_latest_database_version

    dbs = {}
    for r in requests:
        key = f"{r['system']}/{r['backend']}/{r['version']}"
        if key not in dbs:
            try:
                current = r["version"] in ("current", None)
                dbs[key] = get_latest_database_version(system=r["system"], backend=r["backend"]) if current else r["version"]
            except Exception as exc:  # a system the peer does not hold
                dbs[key] = f"none ({type(exc).__name__})"
    return {"aiconfigurator": metadata.version("aiconfigurator"), "aiconfigurator_core": metadata.version("aiconfigurator-core"),
            "databases": dbs}  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: PEER_PYTHON aic_runner.py REQUESTS.json OUT.json\n")
        return 2
    with open(argv[1]) as f:
        requests = json.load(f)
    if any(r.get("allow_unlisted_version") for r in requests):
        os.environ["AIC_ALLOW_UNLISTED_VERSIONS"] = "1"  # database versions outside the peer's maintained slots (docs/peer.md)
    logging.disable(logging.WARNING)
    from aiconfigurator.cli import api

    out = {"peer": peer_versions(requests), "rows": [run_one(api, r) for r in requests]}
    with open(argv[2], "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
