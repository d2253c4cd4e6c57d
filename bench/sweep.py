"""The sweep: every configuration of a plan measured, one record each, with the engine and server lifecycle.

Failure policy: a configuration that fails is recorded (``status: failed``) and the sweep goes on;
the results file is rewritten after every configuration, so an interrupted sweep keeps every
finished one. An engine starts once per plan; the server once, for the serve configurations.
"""

from __future__ import annotations

import datetime as dt
import gc
import sys
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm

from bench.efficiency import MeasureContext, datasheet_peaks, efficiency_fields
from bench.energy import cost_fields
from bench.engines import Engine, EngineConfig, close_quietly, refused_request, start_engine
from bench.load import SERVED_MODEL, measure_serve
from bench.metrics import goodput
from bench.microbench import run_microbenchmarks
from bench.offline import OFFLINE_MODES
from bench.ops import plan_cases
from bench.ops_timing import device_dtypes, free_device, run_case
from bench.plan import BenchPlan
from bench.provenance import datasheet_peaks_record, new_run
from bench.records import RunFile
from bench.sanity import checked
from bench.serve import Server
from bench.slo import Slo, search
from bench.workload import load_tokenizer
from core.hardware import Peaks
from core.models import ModelSpec, get_model
from core.paths import cache_dir
from core.schema import config_key, load_document
from core.shapes import Shapes
from core.work import request_work

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def measured_peaks(runfile: RunFile, dtype: str | None = None) -> Peaks | None:
    """This run's microbenchmark peaks in ``dtype`` (default: the run's own precision); None when absent or suspect."""
    for r in runfile.records:
        if r["mode"] == "microbench" and r["status"] == "ok":
            tflops = r.get(f"matmul_{dtype}_tflops") if dtype else r["matmul_tflops"]
            return Peaks("measured", tflops * 1e12, r["memory_bandwidth_gb_per_s"] * 1e9) if tflops else None
    return None


def failed(base: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """A failed configuration's record: what was asked, and the error in one line."""
    msg = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return {**base, "status": "failed", "error": " ".join(msg)[:500]}


def _run_ops(plan: BenchPlan, shapes: Shapes, runfile: RunFile, done: set[tuple], quick: bool, progress: bool) -> None:
    """Operator microbenchmarks at the model's ``shapes``; each case one record, a failed case recorded and skipped."""
    dtypes = device_dtypes(plan.device, plan.dtype)
    cuda = runfile.run["device"]["kind"] == "cuda"
    datasheet = {d: p for d in dtypes if cuda and (p := datasheet_peaks(datasheet_peaks_record(runfile.run["device"], d)))}
    measured = {d: p for d in dtypes if (p := measured_peaks(runfile, d))}
    cases = plan_cases(shapes, plan.device, dtypes, quick, plan.operators, None if quick else plan.ops_limits())
    gc.freeze()  # each case ends in gc.collect(); without this it walks every object of torch and transformers (0.25 s a case)
    try:
        for c in tqdm(cases, desc="ops", unit="case", disable=not progress, file=sys.stderr):
            base = {"mode": "ops", "operator": c.operator, "shape": c.shape, "dtype": c.dtype, "quick": quick,
                    "batch_size": None, "concurrency": None, "input_len": None, "output_len": None, "num_prompts": None}  # fmt: skip
            if config_key(base) in done:
                continue
            try:
                runfile.add(checked({**base, "status": "ok", **run_case(c, plan.device, datasheet, measured)}))
            except Exception as exc:  # one case failing (a kernel this device lacks, memory) must not stop the sweep
                runfile.add(failed(base, exc))
                free_device(plan.device)
    finally:
        gc.unfreeze()


def open_runfile(plan: BenchPlan, spec: ModelSpec) -> RunFile:
    """The results file: the resumed one (noting when), or a new one."""
    if plan.resume is None:
        runfile = new_run(plan, spec)
    else:
        doc = load_document(plan.resume)
        runfile = RunFile(plan.resume, doc["run"], doc["records"])
        runfile.run.setdefault("resumed_utc", []).append(dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    runfile.save()
    return runfile


def run_plan(plan: BenchPlan, progress: bool = True) -> RunFile:
    """Measure every configuration of ``plan`` not yet in its results file; return the file."""
    spec = get_model(plan.model_path)
    runfile = open_runfile(plan, spec)
    done = runfile.done_keys()
    num_gpus = runfile.run["engine"]["num_gpus"]

    micro_key = config_key({"mode": "microbench", "input_len": None, "output_len": None})
    if plan.microbench != "off" and micro_key not in done:
        base = {"mode": "microbench", "batch_size": None, "concurrency": None, "input_len": None, "output_len": None, "num_prompts": None}
        try:
            runfile.add(
                checked({**base, "status": "ok", **run_microbenchmarks(plan.device, quick=plan.microbench == "quick", dtype=plan.dtype)})
            )
        except Exception as exc:
            runfile.add(failed(base, exc))

    if "ops" in plan.modes or plan.microbench == "full":
        _run_ops(plan, spec.shapes, runfile, done, quick="ops" not in plan.modes or plan.microbench == "quick", progress=progress)

    ctx = MeasureContext(
        plan.seed, plan.budget_s, plan.device, datasheet_peaks(runfile.run["datasheet_peaks"]), measured_peaks(runfile), num_gpus
    )
    if plan.base_url is not None and urlparse(plan.base_url).hostname not in LOCAL_HOSTS:
        ctx = replace(ctx, datasheet=None, measured=None)  # another machine's server: this device's peaks say nothing of it
    _run_configurations(plan, spec, runfile, [c for c in plan.configurations() if config_key(c) not in done], ctx, progress)
    return runfile


class Runner:
    """Measures one configuration at a time, starting the engine or the server when first needed (one of them at a time)."""

    def __init__(self, plan: BenchPlan, spec: ModelSpec, runfile: RunFile, ctx: MeasureContext):
        self.plan, self.spec, self.runfile, self.ctx = plan, spec, runfile, ctx
        self.ecfg = plan.engine_config()
        self.engine: Engine | None = None
        self.server: Server | None = None
        external = runfile.run.get("server")  # a server this run did not start serves its model under its own name
        self.served_model = external["models"][0]["id"] if external else SERVED_MODEL
        self.workload = plan.workload
        self.vocab_size = len(load_tokenizer(plan.tokenizer_path())) if plan.tokenizer else spec.shapes.vocab

    def measure(self, c: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Measure configuration ``c`` and add its record (ok or failed, with ``extra`` fields) to the results file."""
        plan, ctx = self.plan, self.ctx
        base = {**c, "engine": plan.engine, "num_prompts": plan.num_prompts, "num_gpus": ctx.num_gpus}
        t0 = time.perf_counter()
        try:
            if c["mode"] == "serve":
                if self.engine is not None:
                    self.engine.close()
                    self.engine = None
                rec = self._serve_record(c)
            else:
                if self.engine is None:
                    self.engine = start_engine(self.ecfg)
                rec = OFFLINE_MODES[c["mode"]](
                    self.engine, self.spec, c["batch_size"], c["input_len"], c["output_len"], plan.num_prompts, ctx
                )
            record = checked(_with_costs({**base, "status": "ok", **rec}, plan.gpu_hour_usd, ctx.num_gpus))
        except Exception as exc:
            record = failed(base, exc)
            # a refused request leaves the engine usable; anything else may have broken it,
            # so the next configuration starts afresh
            if self.engine is not None and c["mode"] != "serve" and not refused_request(exc):
                close_quietly(self.engine)
                self.engine = None
        record.update(extra or {})
        record["wall_s"] = round(time.perf_counter() - t0, 3)
        self.runfile.add(record)
        return record

    def _server_url(self) -> str:
        """The server to measure: the one at --base-url, or ours, started on first use."""
        if self.plan.base_url is not None:
            return self.plan.base_url.rstrip("/")
        if self.server is not None and self.server.proc is not None and self.server.proc.poll() is not None:
            # it died (killed, out of memory) during an earlier configuration, which is recorded: start it again
            self.runfile.run.setdefault("server_restarts", []).append(
                {"exit_status": self.server.proc.returncode, "before": len(self.runfile.records)}
            )
            self.server.stop()
            self.server = None
        if self.server is None:
            self.server = _start_server(self.ecfg, self.runfile)
        return self.server.base_url

    def _serve_record(self, c: dict[str, Any]) -> dict[str, Any]:
        plan, ctx, rate = self.plan, self.ctx, c.get("request_rate")
        salt = f"c{c['concurrency']}/r{rate}/o{c['output_len']}/k{c.get('repeat', 1)}"  # prompts of their own per configuration
        m, timelines = measure_serve(
            self._server_url(),
            self.workload,
            self.vocab_size,
            c["concurrency"],
            c["input_len"],
            c["output_len"],
            plan.num_prompts or 1,
            plan.seed,
            plan.temperature,
            request_rate=None if rate is None else float(rate),
            burstiness=plan.burstiness,
            model=self.served_model,
            budget_s=plan.serve_budget_s,
            salt=salt,
        )
        if m["completed"] == 0:
            raise RuntimeError(f"no request completed; errors: {m['errors']}")
        in_flight = c["concurrency"] or max(
            m["completed"] * m["e2el_ms"]["mean"] / 1000 / m["duration_s"], 1.0
        )  # Little's law for arrivals
        work = request_work(self.spec, max(round(in_flight), 1), c["input_len"], c["output_len"], max(m["completed"] / in_flight, 1.0))
        if plan.searches_slo:
            m["goodput_requests_per_s"] = goodput(timelines, m["duration_s"], plan.slo_ttft_ms, plan.slo_tpot_ms)
        return {
            **m,
            "workload": self.workload.label(),
            **efficiency_fields(work, m["duration_s"], ctx.datasheet, ctx.measured, ctx.num_gpus),
        }

    def close(self) -> None:
        if self.engine is not None:
            close_quietly(self.engine)
        if self.server is not None:
            self.server.stop()


def _run_configurations(
    plan: BenchPlan, spec: ModelSpec, runfile: RunFile, todo: list[dict[str, Any]], ctx: MeasureContext, progress: bool
) -> None:
    """Offline and serve configurations, then the SLO search; the engine and the server are shut down however this ends."""
    runner = Runner(plan, spec, runfile, ctx)
    bar = tqdm(total=len(todo), desc="bench", unit="config", disable=not progress, file=sys.stderr)
    try:
        for c in todo:
            bar.set_postfix_str(
                f"{c['mode']} b={c['batch_size'] or c['concurrency'] or c.get('request_rate')} in={c['input_len']} out={c['output_len']}"
            )
            runner.measure(c)
            bar.update(1)
        if plan.searches_slo and "serve" in plan.modes:
            _slo_searches(plan, runner)
    finally:
        bar.close()
        runner.close()


def _slo_searches(plan: BenchPlan, runner: Runner) -> None:
    """One search per input and output length; the outcome in the run header (``slo_search``)."""
    slo = Slo(plan.slo_tpot_ms, plan.slo_ttft_ms, plan.slo_percentile)
    runner.runfile.run["slo_search"] = [_slo_search(runner, slo, i, o, plan.slo_max_concurrency) for i, o in plan.serve_lengths()]
    runner.runfile.save()


def _slo_search(runner: Runner, slo: Slo, input_len: int, output_len: int, ceiling: int) -> dict[str, Any]:
    """Each probe a serve record (a kept one reused on --resume), marked with the SLO and its step in the search."""
    steps: list[int] = []

    def probe(conc: int) -> bool:
        steps.append(conc)
        c = {"mode": "serve", "batch_size": None, "concurrency": conc, "input_len": input_len, "output_len": output_len}
        kept = next((r for r in runner.runfile.records if config_key(r) == config_key(c) and r["status"] == "ok"), None)
        rec = kept or runner.measure(c, {"slo": slo.as_record(), "search_step": len(steps)})
        met = slo.met_by(rec)
        if kept is None:
            runner.runfile.update(rec, slo_met=met)
        return met

    best, probes = search(probe, ceiling)
    return {"input_len": input_len, "output_len": output_len, "slo": slo.as_record(), "max_concurrency": best,
            "probes": [{"concurrency": c, "met": met} for c, met in probes]}  # fmt: skip


def _with_costs(record: dict[str, Any], gpu_hour_usd: float | None, num_gpus: int) -> dict[str, Any]:
    """Energy and price per token where known, and output tokens/s per GPU where several GPUs ran."""
    record.update(cost_fields(record.get("decode_tokens_per_s") or record.get("output_tokens_per_s"), gpu_hour_usd, num_gpus))
    tps = record.get("output_tokens_per_s")
    if tps and num_gpus > 1:
        record["output_tokens_per_s_per_gpu"] = round(tps / num_gpus, 3)
    return record


def _start_server(ecfg: EngineConfig, runfile: RunFile) -> Server:
    return Server(ecfg, cache_dir() / "logs" / runfile.path.with_suffix(".server.log").name).start()
