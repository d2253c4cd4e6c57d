"""The printed summary of a run: what was measured, in one line per configuration; suspect records are warnings."""

from __future__ import annotations

import json
from typing import Any

from bench.records import RunFile

BANDWIDTH_OPERATORS = ("copy", "attention_decode", "rmsnorm", "sampling")  # rated in GB/s, the others in TFLOP/s


def summarize(runfile: RunFile) -> str:
    """A short human summary of what a run measured; suspect records are warnings, never findings."""
    lines = [f"results: {runfile.path}"]
    dev, model = runfile.run["device"], runfile.run["model"]
    lines.append(
        f"device: {dev['kind']} {dev['name']} [{dev.get('id')}] | model: {model['name']} | engine: {runfile.run['engine']['name']}"
    )
    lines.append(f"precision: {model.get('dtype')} ({model.get('dtype_reason') or 'recorded'})")
    warnings = []
    for r in runfile.records:
        if r["status"] == "suspect":
            warnings.append(f"warning: {r['mode']} record is suspect and left out of every result: {r['reason']}")
        if r["mode"] == "ops":
            continue
        if r["mode"] == "microbench":
            if r["status"] != "failed":
                others = ", ".join(
                    f"{k[7:-7]} {v:.3f}" for k, v in r.items() if k.startswith("matmul_") and k.endswith("_tflops") and k != "matmul_tflops"
                )
                lines.append(
                    f"  microbench: {r.get('peak_dtype', 'bf16')} matmul {r.get('matmul_tflops', 0):.3f} TFLOP/s ({others}), copy "
                    f"{r['memory_bandwidth_gb_per_s']:.1f} GB/s"
                )
            continue
        lines.append(_config_line(r))
    lines += _ops_summary([r for r in runfile.records if r["mode"] == "ops"])
    for o in runfile.run.get("slo_search", []):
        bounds = " and ".join(
            f"{k[:-3].upper()} p{o['slo']['percentile']} <= {v:g} ms" for k, v in o["slo"].items() if k != "percentile" and v is not None
        )
        probes = ", ".join(f"{p['concurrency']} {'met' if p['met'] else 'missed'}" for p in o["probes"])
        lines.append(
            f"  SLO search, in {o['input_len']} out {o['output_len']} ({bounds}): highest concurrency meeting it {o['max_concurrency']} "
            f"(probes: {probes})"
        )
    best = [
        r.get("mfu") if r.get("mfu") is not None else r.get("mfu_measured_peak")
        for r in runfile.records
        if r["status"] == "ok" and r["mode"] != "ops"
    ]
    best = [b for b in best if b is not None]
    if best:
        lines.append(
            f"utilization: best MFU {max(best):.1%} (datasheet peak where catalogued, else this run's measured peak); the article "
            "assumed 50%"
        )
    return "\n".join(lines + warnings)


def _config_line(r: dict[str, Any]) -> str:
    """One offline or serve configuration: its rates, latencies and utilization."""
    if r.get("batch_size"):
        size = f"batch {r['batch_size']}"
    elif r.get("concurrency"):
        size = f"concurrency {r['concurrency']}"
    else:
        size = f"rate {r.get('request_rate')}/s"
    rep = f" #{r['repeat']}" if r.get("repeat") else ""
    head = f"  {r['mode']:<10} {size:<15} in {r['input_len']:>5} out {r['output_len']:>4}{rep}:"
    if r["status"] == "failed":
        return f"{head} FAILED {r['error'][:100]}"
    extra = ""
    if r.get("decode_tokens_per_s"):
        extra = f", decode {r['decode_tokens_per_s']:.1f} tok/s"
    if r.get("prefill_tokens_per_s"):
        extra = f", prefill {r['prefill_tokens_per_s']:.1f} tok/s"
    if r.get("tpot_ms"):
        extra = f", TTFT p50 {r['ttft_ms']['p50']:.1f} ms, TPOT p50 {r['tpot_ms']['p50']:.2f} ms"
        if r.get("goodput_requests_per_s") is not None:
            extra += f", goodput {r['goodput_requests_per_s']:.2f} req/s"
        if r.get("prefix_cache_hit_rate") is not None:
            extra += f", prefix-cache hits {r['prefix_cache_hit_rate']:.1%}"
        if r.get("failed"):
            extra += f", {r['failed']} of {r['sent']} requests failed ({r['errors'][0][:60]})"
        if r.get("unsent_over_budget"):
            extra += f", {r['unsent_over_budget']} not sent (over --serve-budget-s)"
    mfu, mbu = r.get("mfu_measured_peak"), r.get("mbu_measured_peak")
    util = f" | MFU {mfu:.1%} MBU {mbu:.1%} of measured peaks" if mfu is not None and mbu is not None and r["status"] == "ok" else ""
    tag = " SUSPECT" if r["status"] == "suspect" else ""
    return f"{head}{tag} {r['output_tokens_per_s']:.1f} output tok/s, {r['total_tokens_per_s']:.1f} total tok/s{extra}{util}"


def _ops_summary(ops: list[dict[str, Any]]) -> list[str]:
    """One line per operator and precision: cases timed and the best rate reached."""
    if not ops:
        return []
    failed = [r for r in ops if r["status"] == "failed"]
    lines = [f"  ops: {len(ops) - len(failed)} operator cases timed, {len(failed)} failed"]
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ops:
        if r["status"] != "ok":
            continue
        key = (r["operator"], r["dtype"])
        rate = r["gb_per_s"] if r["operator"] in BANDWIDTH_OPERATORS else r["tflops"]
        if key not in best or rate > best[key]["rate"]:
            best[key] = {"rate": rate, "rec": r}
    for (op, dtype), b in sorted(best.items()):
        r = b["rec"]
        unit = "GB/s" if op in BANDWIDTH_OPERATORS else "TFLOP/s"
        eff = r.get("mfu") if unit == "TFLOP/s" else r.get("mbu")
        of = f" ({eff:.0%} of datasheet)" if eff is not None else ""
        lines.append(f"    {op:<18} {dtype:<5} best {b['rate']:.3f} {unit}{of} at {json.dumps(r['shape'])}")
    return lines
