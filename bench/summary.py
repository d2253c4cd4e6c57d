"""The printed summary of a run: what was measured, in one line per configuration; suspect records are warnings."""

from __future__ import annotations

import json

from bench.records import RunFile
from core.records import MeasuredRecord, MicrobenchRecord, OpsRecord, ServeRecord
from core.schema import parse_record


def summarize(runfile: RunFile) -> str:
    """A short human summary of what a run measured; suspect records are warnings, never findings."""
    lines = [f"results: {runfile.path}"]
    dev, model = runfile.run["device"], runfile.run["model"]
    lines.append(
        f"device: {dev['kind']} {dev['name']} [{dev.get('id')}] | model: {model['name']} | engine: {runfile.run['engine']['name']}"
    )
    lines.append(f"precision: {model.get('dtype')} ({model.get('dtype_reason') or 'recorded'})")
    warnings = []
    records = [parse_record(r, f"record {i}") for i, r in enumerate(runfile.records)]
    for r in records:
        if r.status == "suspect":
            warnings.append(f"warning: {r.mode} record is suspect and left out of every result: {r.reason}")
        if isinstance(r, MicrobenchRecord) and r.status != "failed":
            others = ", ".join(f"{dtype} {v:.3f}" for dtype, v in r.peaks_by_dtype.items())
            lines.append(
                f"  microbench: {r.peak_dtype or 'bf16'} matmul {r.matmul_tflops or 0:.3f} TFLOP/s ({others}), copy "
                f"{r.memory_bandwidth_gb_per_s:.1f} GB/s"
            )
        elif isinstance(r, MeasuredRecord):
            lines.append(_config_line(r))
    lines += _ops_summary([r for r in records if isinstance(r, OpsRecord)])
    for o in runfile.run.get("slo_search", []):
        bounds = " and ".join(
            f"{k[:-3].upper()} p{o['slo']['percentile']} <= {v:g} ms" for k, v in o["slo"].items() if k != "percentile" and v is not None
        )
        probes = ", ".join(f"{p['concurrency']} {'met' if p['met'] else 'missed'}" for p in o["probes"])
        lines.append(
            f"  SLO search, in {o['input_len']} out {o['output_len']} ({bounds}): highest concurrency meeting it {o['max_concurrency']} "
            f"(probes: {probes})"
        )
    best = [r.mfu if r.mfu is not None else r.mfu_measured_peak for r in records if r.ok and isinstance(r, MeasuredRecord)]
    best = [b for b in best if b is not None]
    if best:
        lines.append(
            f"utilization: best MFU {max(best):.1%} (datasheet peak where catalogued, else this run's measured peak); the article "
            "assumed 50%"
        )
    return "\n".join(lines + warnings)


def _config_line(r: MeasuredRecord) -> str:
    """One offline or serve configuration: its rates, latencies and utilization."""
    serve = r if isinstance(r, ServeRecord) else None
    if r.batch_size:
        size = f"batch {r.batch_size}"
    elif r.concurrency:
        size = f"concurrency {r.concurrency}"
    else:
        size = f"rate {serve.request_rate if serve else None}/s"
    rep = f" #{r.repeat}" if r.repeat else ""
    head = f"  {r.mode:<10} {size:<15} in {r.input_len:>5} out {r.output_len:>4}{rep}:"
    if r.status == "failed":
        return f"{head} FAILED {r.error[:100]}"
    extra = ""
    if getattr(r, "decode_tokens_per_s", None):
        extra = f", decode {r.decode_tokens_per_s:.1f} tok/s"
    if getattr(r, "prefill_tokens_per_s", None):
        extra = f", prefill {r.prefill_tokens_per_s:.1f} tok/s"
    if serve and serve.tpot_ms:
        extra = _serve_extra(serve)
    mfu, mbu = r.mfu_measured_peak, r.mbu_measured_peak
    util = f" | MFU {mfu:.1%} MBU {mbu:.1%} of measured peaks" if mfu is not None and mbu is not None and r.ok else ""
    tag = " SUSPECT" if r.status == "suspect" else ""
    return f"{head}{tag} {r.output_tokens_per_s:.1f} output tok/s, {r.total_tokens_per_s:.1f} total tok/s{extra}{util}"


def _serve_extra(r: ServeRecord) -> str:
    """A serve configuration's latencies, goodput, cache hits, failures and what was left unsent."""
    extra = f", TTFT p50 {r.ttft_ms.p50:.1f} ms, TPOT p50 {r.tpot_ms.p50:.2f} ms"
    if r.goodput_requests_per_s is not None:
        extra += f", goodput {r.goodput_requests_per_s:.2f} req/s"
    if r.prefix_cache_hit_rate is not None:
        extra += f", prefix-cache hits {r.prefix_cache_hit_rate:.1%}"
    if r.failed:
        extra += f", {r.failed} of {r.sent} requests failed ({r.errors[0][:60]})"
    if r.unsent_over_budget:
        extra += f", {r.unsent_over_budget} not sent (over --serve-budget-s)"
    return extra


def _ops_summary(ops: list[OpsRecord]) -> list[str]:
    """One line per operator and precision: cases timed and the best rate reached."""
    if not ops:
        return []
    failed = [r for r in ops if r.status == "failed"]
    lines = [f"  ops: {len(ops) - len(failed)} operator cases timed, {len(failed)} failed"]
    best: dict[tuple[str, str], OpsRecord] = {}
    for r in ops:
        if not r.ok:
            continue
        key = (r.operator.value, r.dtype)
        if key not in best or _rate(r) > _rate(best[key]):
            best[key] = r
    for (op, dtype), r in sorted(best.items()):
        unit = "GB/s" if r.operator.memory_bound else "TFLOP/s"
        eff = r.mbu if r.operator.memory_bound else r.mfu
        of = f" ({eff:.0%} of datasheet)" if eff is not None else ""
        lines.append(f"    {op:<18} {dtype:<5} best {_rate(r):.3f} {unit}{of} at {json.dumps(r.shape)}")
    return lines


def _rate(r: OpsRecord) -> float:
    """An operator case's rate in its unit: GB/s for a memory-bound one, TFLOP/s for the others."""
    return r.gb_per_s if r.operator.memory_bound else r.tflops
