"""``fleetcal bench``: measure a model on this machine's device and record every configuration.

Thin layer: parse and validate arguments into a ``BenchPlan`` (``bench.plan``), run it
(``bench.sweep``), print the summary (``bench.summary``). ``--resume FILE`` rebuilds the plan
saved in that results file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from bench import reaper
from bench.bundled import ensure_bundled_model
from bench.device import describe_device, resolve_device
from bench.load import describe_server
from bench.plan import MAX_SEQUENCES, BenchPlan, rate_label
from bench.precision import choose_dtype
from bench.summary import summarize
from bench.sweep import run_plan
from bench.workload import Workload, load_dataset, load_tokenizer
from core.errors import CatalogError, SchemaError, UsageError
from core.models import MODEL_DIR, get_model, resolve_model_key
from core.paths import RUNS_DIR, portable
from core.schema import load_document
from core.traces import BUNDLED, load_trace
from fleetcal.commands.bench_args import add_cli_args as add_cli_args  # the subcommand's flags, read by cli.py

# BenchPlan fields given as their flag is: as parsed, and lists as tuples
SAME_AS_FLAG = (
    "model", "engine", "num_prompts", "load_format", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
    "distributed_executor_backend", "seed", "temperature", "microbench", "budget_s", "quantization", "kv_cache_dtype",
    "enable_prefix_caching", "enable_expert_parallel", "max_num_seqs", "max_num_batched_tokens", "gpu_hour_usd", "burstiness",
    "slo_tpot_ms", "slo_ttft_ms", "slo_percentile", "slo_max_concurrency", "base_url", "repeats", "range_ratio", "prefix_fraction",
    "serve_budget_s", "ops_range", "trace_arrivals",
)
LISTS_AS_FLAG = ("batch_sizes", "input_lens", "output_lens", "concurrencies", "operators", "request_rates")


def _resolve_model(model: str, load_format: str) -> str:
    """The path or id handed to the engine."""
    if model == "bundled":
        try:
            return str(ensure_bundled_model())
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from exc
    path = Path(model).expanduser()
    if path.exists() or model.startswith(("/", ".", "~")):
        if not (path / "config.json").is_file():
            raise UsageError(f"--model {model}: no config.json in that directory; give a Hugging Face checkpoint directory")
        return str(path.resolve())
    key = resolve_model_key(model)
    if key is not None and load_format == "dummy":
        return str(MODEL_DIR / key)
    return model  # a Hugging Face id, fetched by the engine


def _context_limit(model_path: str) -> int | None:
    """The model's context length, when its config is readable here (a Hugging Face id may not be)."""
    try:
        return get_model(model_path).max_context or None
    except CatalogError:
        return None


def _check_engine_runs(engine: str) -> None:
    """One line, not a traceback, when the engine cannot be imported on this machine."""
    module = "vllm" if engine == "vllm" else "transformers"
    try:
        __import__(module)
    except Exception as exc:  # an import can fail in many ways on an unsupported platform
        hint = "; try --engine transformers" if engine == "vllm" else ""
        raise UsageError(
            f"--engine {engine} cannot run here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'import failed'}){hint}"
        ) from exc


def _check_server(base_url: str) -> None:
    """One line, before anything is written, when nothing answers at ``--base-url`` or it serves no model."""
    try:
        info = describe_server(base_url)
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, not JSON
        raise UsageError(
            f"--base-url {base_url}: no OpenAI-compatible server answers there ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not info["models"]:
        raise UsageError(f"--base-url {base_url}: the server lists no model at /v1/models")


def validate_args(args: argparse.Namespace) -> BenchPlan:
    """Turn parsed arguments into a plan, or raise UsageError saying what to fix."""
    if args.resume is not None:
        return _plan_from_resume(args)
    for name, values in (("batch-sizes", args.batch_sizes), ("concurrencies", args.concurrencies)):
        if max(values) > MAX_SEQUENCES:  # before anything is resolved: the plan checks it again
            raise UsageError(f"--{name} {max(values):,}: at most {MAX_SEQUENCES:,} sequences at once (prompts are built in memory)")
    device = resolve_device(args.device)
    if args.base_url is not None:
        if set(args.mode) != {"serve"}:  # before the server is contacted (the plan checks it again)
            raise UsageError("--base-url measures a running server: use it with --mode serve alone")
        _check_server(args.base_url)
    elif set(args.mode) != {"ops"}:
        _check_engine_runs(args.engine)
    info = describe_device(device)
    ranks = args.tensor_parallel_size * args.pipeline_parallel_size * args.data_parallel_size
    if device == "cpu" and args.engine == "vllm" and ranks > (info.get("cores") or 1) - 1 and ranks > 1:
        raise UsageError(f"parallel sizes of {ranks} ranks need at least {ranks + 1} cores on the CPU (vLLM binds one core per rank and "
                         f"keeps one for its scheduler); this machine has {info.get('cores')}")  # fmt: skip
    dtype, dtype_reason = choose_dtype(args.dtype, info)
    model_path = _resolve_model(args.model, args.load_format)
    limit = _context_limit(model_path)
    workload = _workload(args, model_path, limit)
    longest = max(workload.longest(i, o) if "serve" in args.mode else i + o for i in args.input_lens for o in args.output_lens)
    if limit and longest > limit:
        raise UsageError(f"input + output = {longest} tokens exceeds the model's context of {limit}; shorten --input-lens or --output-lens")
    max_model_len = args.max_model_len if args.max_model_len is not None else longest
    if limit and max_model_len > limit:
        raise UsageError(f"--max-model-len {max_model_len} exceeds the model's context of {limit}")
    _check_out(args.out)
    eager = args.enforce_eager == "true" or (args.enforce_eager == "auto" and (device == "cpu" or args.engine == "transformers"))
    kv = args.kv_cache_gb if args.kv_cache_gb is not None else (2.0 if device == "cpu" else None)
    return BenchPlan(
        **{f: getattr(args, f) for f in SAME_AS_FLAG}, **{f: tuple(getattr(args, f)) for f in LISTS_AS_FLAG},
        model_path=model_path,
        device=device,
        modes=tuple(args.mode),
        out_dir=args.out,
        max_model_len=max_model_len,
        kv_cache_gb=kv,
        args=_recorded(args),
        dtype=dtype,
        dtype_reason=dtype_reason,
        enforce_eager=eager,
        dataset=portable(args.dataset.resolve()) if args.dataset else None,
        trace=args.trace if args.trace is None or args.trace in BUNDLED else portable(Path(args.trace).resolve()),
        tokenizer=portable(args.tokenizer.resolve()) if args.tokenizer else None,
    )


def _workload(args: argparse.Namespace, model_path: str, limit: int | None) -> Workload:
    """The serve workload the flags ask for, checked before anything runs (a dataset file parsed and counted)."""
    dataset = None
    if args.dataset is not None:
        if "serve" not in args.mode:
            raise UsageError("--dataset needs --mode serve")
        if args.input_lens != _defaults()["input_lens"] or len(args.output_lens) > 1:
            raise UsageError(
                "--dataset gives the prompts: drop --input-lens, and give at most one --output-lens (for entries without an output length)"
            )
        tokenizer = str(args.tokenizer.resolve()) if args.tokenizer else model_path
        dataset = load_dataset(str(args.dataset.resolve()), tokenizer, args.max_model_len or limit, args.output_lens[0])
    elif args.tokenizer is not None:
        load_tokenizer(str(args.tokenizer.resolve()))  # checked now, used for the vocabulary of random prompts
    trace = None
    if args.trace is not None:
        if "serve" not in args.mode or args.input_lens != _defaults()["input_lens"] or args.output_lens != _defaults()["output_lens"]:
            raise UsageError("--trace replays its own lengths in --mode serve: drop --input-lens and --output-lens")
        trace = load_trace(args.trace)
    return Workload(args.range_ratio, args.prefix_fraction, dataset, trace, args.trace_arrivals, args.max_model_len or limit)


def _recorded(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as the record keeps it: paths relative to the project, no machine's folders."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return portable(v)
        if isinstance(v, list):
            return [rate_label(x) if isinstance(x, float) else x for x in v]  # JSON has no infinity
        return v

    return {k: plain(v) for k, v in vars(args).items() if k not in ("func", "resume")}


def _check_out(out: Path) -> None:
    """Before any work: ``out`` is (or can be made) a writable directory."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not a writable directory")


def _defaults() -> dict[str, Any]:
    p = argparse.ArgumentParser()
    add_cli_args(p)
    return vars(p.parse_args([]))


def _plan_from_resume(args: argparse.Namespace) -> BenchPlan:
    """The plan saved in the results file, rebuilt and validated; flags that would change it are refused.

    ``--out DIR`` writes the resumed document to DIR and leaves the original untouched.
    """
    path = args.resume
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such results file")
    try:
        doc = load_document(path)
    except SchemaError as exc:
        raise UsageError(f"--resume {path}: {exc}") from exc
    saved = doc["run"].get("plan")
    if not isinstance(saved, dict):
        raise UsageError(f"--resume {path}: the file holds no saved plan (written by an older version); run the sweep again")
    recorded = doc["run"].get("args") or {}
    defaults = _defaults()
    given = {k: v for k, v in _recorded(args).items() if k not in ("command", "out") and v != defaults.get(k)}
    conflicts = [k for k, v in given.items() if v != recorded.get(k)]
    if conflicts:
        flags = ", ".join("--" + k.replace("_", "-") for k in conflicts)
        raise UsageError(
            f"--resume {path}: {flags} differ from the saved plan; drop them (the plan in the file decides) or start a new run"
        )
    out_dir = path.parent if args.out == RUNS_DIR else args.out
    _check_out(out_dir)
    target = out_dir / path.name
    elsewhere = target.resolve() != path.resolve()
    if elsewhere and target.exists():
        raise UsageError(f"--resume {path}: {target} already exists; give another --out")
    model_path = _resolve_model(saved.get("model", ""), saved.get("load_format", "auto"))
    plan = BenchPlan.from_saved(saved, model_path=model_path, out_dir=out_dir, resume=target, args=recorded)
    if elsewhere:  # resumed there; the original stays as it was
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return plan


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stopped like Ctrl-C (engine and server shut down, finished configurations kept)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the summary readable; override to debug
    plan = validate_args(args)
    reaper.start()  # stops the engine, its workers and the resource tracker should this process be killed outright
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    try:
        runfile = run_plan(plan)
    except KeyboardInterrupt as exc:
        print("interrupted: every finished configuration is kept; continue with --resume FILE", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    print(summarize(runfile))
    return 0
