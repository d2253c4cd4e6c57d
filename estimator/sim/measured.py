"""The simulator against the real vLLM server: every measured serve configuration of a replayed trace (``fleetcal bench
--mode serve --trace``) simulated with the same requests, the engine settings the server ran with, and the CPU step
model of the same measuring session (operator curves and engine overheads measured within the hour of the serve run,
estimator/cpu_validation.py), then the p50 and p99 of TTFT, TPOT and E2E latency side by side.

The same requests: the trace's first ``num_prompts`` requests (those longer than the engine's context were not sent, nor
are they simulated; those the client's time budget left unsent are dropped from the end), each at the time the client
sent it (core/traces.scaled_arrivals of the record's rate, or core/bench_serve.arrival_offsets of its rate, burstiness and
the run's seed), its prompt and forced reply lengths. The warm-up requests the client sent before the measured ones are
not simulated: the simulated engine starts empty, as the measured requests found it. Percentiles are over every request,
as the client computes them (core/bench_serve.stats_ms); a rate past the engine's capacity is compared too (both grow
with the run's length there) and marked ``saturated`` by the simulation's own test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.bench_serve import arrival_offsets, stats_ms
from core.dtypes import kernel_dtype
from core.models import resolve_model_key
from core.paths import ROOT
from core.records import ServeRecord
from core.schema import RunDocument
from core.traces import BUNDLED, Trace, load_trace, scaled_arrivals
from estimator.cpu_steps import OperatorCurves, Overhead, UndeterminedError, build_curves
from estimator.cpu_validation import sessions, validate
from estimator.sim.cpu import CpuSteps
from estimator.sim.engine import cpu_engine_rules, run_engine_settings
from estimator.sim.fleet import Fleet, Pool, simulate
from estimator.sim.request import Req
from estimator.sim.results import latencies_s, saturation

METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2el_ms", "E2E"))
STATS = ("p50", "p99")


def replayed(doc: RunDocument) -> bool:
    """Whether a run replayed a trace against a vLLM server."""
    return (doc.run.get("workload") or {}).get("kind") == "trace" and doc.run["engine"].get("name") == "vllm"


def _trace(doc: RunDocument) -> Trace:
    name = doc.run["plan"]["trace"]
    return load_trace(name if name in BUNDLED else ROOT / name)


def schedule(doc: RunDocument, rec: ServeRecord, trace: Trace) -> list[Req]:
    """The measured requests of ``rec`` as the client sent them (module docstring), in send order."""
    wl, n, rate = doc.run["workload"]["trace"], int(rec.num_prompts or 0), rec.request_rate_per_s
    if wl["arrivals"] == "recorded":
        times = scaled_arrivals(trace, rate, n)
    else:
        times = np.asarray(arrival_offsets(min(n, len(trace.arrival_s)), rate, rec.burstiness or 1.0, doc.run["plan"]["seed"]))
    max_len = wl.get("max_len")
    sent = [i for i in range(len(times)) if max_len is None or trace.input_tokens[i] + trace.output_tokens[i] <= max_len]
    sent = sent[: len(sent) - (rec.unsent_over_budget or 0)]
    return [Req(k, float(times[i]), int(trace.input_tokens[i]), int(trace.output_tokens[i])) for k, i in enumerate(sent)]


def session_step_model(runs: pd.DataFrame, ops: pd.DataFrame, device_name: str, model: str, dtype: str,
                       run_file: str) -> tuple[OperatorCurves, Overhead, str]:  # fmt: skip
    """The CPU step model of the measuring session ``run_file`` belongs to: that session's operator curves of ``model``
    and its fitted engine overheads; UndeterminedError where the session has none."""
    v = validate(runs, ops, device_name)
    name = sessions([*(f for fs in v.session_files.values() for f in fs), run_file])[run_file]
    if name not in v.overheads:
        raise UndeterminedError(f"{run_file}: no operator curves and fitted decode steps in its measuring session (within an hour of "
                                "it): run scripts/measure_cpu_serve.sh, which measures both")  # fmt: skip
    key = resolve_model_key(model)
    mine = ops[(ops["device_name"] == device_name) & ops["run_file"].isin(v.session_files[name])]
    names = sorted({m for m in mine["model"] if resolve_model_key(m) == key})
    if not names:
        raise UndeterminedError(f"{run_file}: its session timed no operators of {model}")
    curves = build_curves(mine[mine["model"] == names[0]], device_name, names[0], kernel_dtype(dtype))
    return curves, v.overheads[name], name


def _latency(reqs: list[Req]) -> dict[str, dict[str, float | None]]:
    ttft, tpot, e2el = latencies_s(reqs)
    return {"ttft_ms": stats_ms(ttft), "tpot_ms": stats_ms(tpot[~np.isnan(tpot)]), "e2el_ms": stats_ms(e2el)}


def simulated(doc: RunDocument, rec: ServeRecord, curves: OperatorCurves, over: Overhead, trace: Trace) -> tuple[dict, bool, int]:
    """(the simulated latency statistics of ``rec``'s requests, whether the simulation saturated, how many requests)."""
    ran = run_engine_settings(doc.run["engine"])
    rules = cpu_engine_rules(curves.shapes.kv_bytes_per_token(curves.dtype), ran["kv_cache_gb"], budget=ran["budget"],
                             max_seqs=ran["max_seqs"], prefix_caching=ran["prefix_caching"])  # fmt: skip
    reqs = schedule(doc, rec, trace)
    run = simulate(Fleet(Pool(rules, CpuSteps(curves, over, rules.max_num_batched_tokens + rules.max_num_seqs), 1)), reqs)
    return _latency(run.requests), saturation(run)["saturated"], len(reqs)


def compare(docs: list[RunDocument], runs: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """One row per replayed serve configuration and statistic: measured, simulated, error (simulated / measured - 1)."""
    rows: list[dict[str, Any]] = []
    for doc in sorted((d for d in docs if replayed(d)), key=lambda d: d.path.name):
        serve = [r for r in doc.records if isinstance(r, ServeRecord) and r.status == "ok" and r.request_rate is not None]
        if not serve:
            continue
        trace, device = _trace(doc), runs.loc[runs["run_file"] == doc.path.name, "device_name"].iloc[0]
        curves, over, session = session_step_model(runs, ops, device, doc.run["model"]["name"], doc.run["model"].get("dtype", "bfloat16"),
                                                   doc.path.name)  # fmt: skip
        for rec in serve:
            sim, saturated, n = simulated(doc, rec, curves, over, trace)
            for metric, label in METRICS:
                measured = getattr(rec, metric)
                for stat in STATS:
                    m, s = getattr(measured, stat), sim[metric][stat]
                    rows.append({"device_name": device, "session": session, "run_file": doc.path.name,
                                 "arrivals": doc.run["workload"]["trace"]["arrivals"], "request_rate": rec.request_rate_per_s,
                                 "repeat": rec.repeat, "requests": n, "completed": rec.completed, "saturated": saturated, "metric": label,
                                 "stat": stat, "measured_ms": m, "simulated_ms": s,
                                 "error": s / m - 1 if m and s is not None else None})  # fmt: skip
    return pd.DataFrame(rows)


def median_abs_error(table: pd.DataFrame, stat: str | None = None) -> float:
    """The median |error| over the table's rows (of one statistic, p50 or p99, where given)."""
    t = table if stat is None else table[table["stat"] == stat]
    return float(t["error"].abs().median())


def load_comparison(results: Path) -> pd.DataFrame:
    """The comparison of every replayed serve run under ``results`` (estimator/runs.py, estimator/operators.py)."""
    from estimator.operators import load_ops
    from estimator.runs import load_runs, read_runs

    docs, _ = read_runs(results, warn=False)
    return compare(docs, load_runs(results, warn=False), load_ops(results, warn=False))
