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
from bench.ops import OPERATORS
from bench.plan import MAX_SEQUENCES, MODES, BenchPlan, rate_label
from bench.precision import DTYPES, choose_dtype
from bench.summary import summarize
from bench.sweep import run_plan
from bench.workload import Workload, load_dataset, load_tokenizer
from core.args import int_list, rate_list, str_list
from core.errors import CatalogError, SchemaError, UsageError
from core.models import MODEL_DIR, get_model, resolve_model_key
from core.paths import RUNS_DIR, portable
from core.schema import load_document


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bundled", help="'bundled' (SmolLM2-135M-Instruct, offline), a checkpoint directory, a Hugging Face id, or a catalogued model name with --load-format dummy")
    p.add_argument("--engine", choices=("vllm", "transformers"), default="vllm")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--mode", type=str_list, default=["throughput"], help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 8, 32], help="sequences submitted together (offline modes)")
    p.add_argument("--input-lens", type=int_list, default=[32], help="prompt tokens")
    p.add_argument("--output-lens", type=int_list, default=[64], help="forced output tokens (EOS ignored)")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="compute precision; auto: bf16 where the device runs it natively (GPUs, CPUs with AVX-512 BF16 or AMX), fp32 otherwise")
    p.add_argument("--num-prompts", type=int, help="prompts per configuration (at least the batch size; serve: at least 5 x concurrency); default: offline modes run waves for --budget-s, serve 5 x concurrency")
    p.add_argument("--budget-s", type=float, default=6.0, help="seconds measured per offline configuration when --num-prompts is not given (at least one wave)")
    p.add_argument("--concurrencies", type=int_list, default=[1, 2, 4, 8], help="concurrent clients (serve mode)")
    p.add_argument("--request-rates", type=rate_list, default=[], help="serve: requests/s sent with gamma (Poisson) arrivals, e.g. 1,4,inf; each a configuration beside the concurrencies")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the arrivals (1: Poisson; below 1 burstier), as vLLM's bench serve")
    p.add_argument("--slo-tpot-ms", type=float, help="serve: search the highest concurrency whose TPOT percentile meets this (replaces --concurrencies)")
    p.add_argument("--slo-ttft-ms", type=float, help="serve: ... and whose TTFT percentile meets this")
    p.add_argument("--slo-percentile", type=int, default=90, help="percentile the SLO applies to: 50, 90 or 99")
    p.add_argument("--slo-max-concurrency", type=int, default=256, help="the search's ceiling")
    p.add_argument("--repeats", type=int, default=1, help="measure every configuration this many times, in rounds (all once, then all again); tables give the mean and a 95%% interval")
    p.add_argument("--base-url", help="serve: measure an OpenAI-compatible server already running there (another vLLM, SGLang, TGI); --model gives the vocabulary of the prompts")
    p.add_argument("--range-ratio", type=float, default=0.0, help="serve: input and output lengths uniform in [L(1-r), L(1+r)], vLLM's --random-range-ratio")
    p.add_argument("--prefix-fraction", type=float, default=0.0, help="serve: this share of every prompt is the same for all (the target prefix-cache hit rate; needs --enable-prefix-caching)")
    p.add_argument("--dataset", type=Path, help="serve: prompts from a JSONL file ({\"prompt\": ..., \"output_tokens\": n} per line) or a ShareGPT file")
    p.add_argument("--tokenizer", type=Path, help="serve: a local tokenizer directory for the prompts (default: --model's); for a --base-url server whose model is not here")
    p.add_argument("--serve-budget-s", type=float, default=120.0, help="serve: no request of a configuration is sent after this many seconds (those in flight finish and count)")
    p.add_argument("--load-format", choices=("auto", "dummy"), default="auto", help="dummy: random weights built from config.json")
    p.add_argument("--out", type=Path, default=RUNS_DIR, help="directory for the results file")
    p.add_argument("--resume", type=Path, help="a results file of an interrupted run: measure only what it lacks")
    p.add_argument("--max-model-len", type=int, help="engine context length (default: the longest input + output of the sweep)")
    p.add_argument("--kv-cache-gb", type=float, help="vLLM KV-cache size in GiB (default: 2 on the CPU, vLLM's own on a GPU)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", type=int, default=1)
    p.add_argument("--data-parallel-size", type=int, default=1)
    p.add_argument("--distributed-executor-backend", choices=("mp", "ray"), help="vLLM executor; ray for more than one node")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of measured outputs (vLLM's benchmark convention: 1.0, top_p 1.0); 0 for greedy")
    p.add_argument("--microbench", choices=("full", "quick", "off"), default="full", help="device peak microbenchmarks (full also times a quick subset of operators at the model's shapes)")
    p.add_argument("--enforce-eager", choices=("auto", "true", "false"), default="auto",
                   help="auto: eager on the CPU (shorter engine start) and for transformers, CUDA graphs for vLLM on a GPU; false with transformers: static cache + torch.compile")
    p.add_argument("--quantization", help="vLLM weight quantization, e.g. fp8")
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    p.add_argument("--enable-prefix-caching", action="store_true", help="off by default: repeated prompts must not hit a cache")
    p.add_argument("--enable-expert-parallel", action="store_true")
    p.add_argument("--max-num-seqs", type=int, help="vLLM scheduler limit (default: the largest batch or concurrency)")
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--operators", type=str_list, default=list(OPERATORS), help=f"ops mode: which operators, of {', '.join(OPERATORS)}")
    p.add_argument("--gpu-hour-usd", type=float, help="price of one GPU-hour: records then carry dollars per million output tokens")



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
        raise UsageError(f"--engine {engine} cannot run here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'import failed'}){hint}") from exc


def _check_server(base_url: str) -> None:
    """One line, before anything is written, when nothing answers at ``--base-url`` or it serves no model."""
    try:
        info = describe_server(base_url)
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, not JSON
        raise UsageError(f"--base-url {base_url}: no OpenAI-compatible server answers there ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
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
        model=args.model, model_path=model_path, engine=args.engine, device=device, modes=tuple(args.mode),
        batch_sizes=tuple(args.batch_sizes), input_lens=tuple(args.input_lens), output_lens=tuple(args.output_lens),
        num_prompts=args.num_prompts, concurrencies=tuple(args.concurrencies), load_format=args.load_format,
        out_dir=args.out, max_model_len=max_model_len, kv_cache_gb=kv,
        tensor_parallel_size=args.tensor_parallel_size, pipeline_parallel_size=args.pipeline_parallel_size,
        data_parallel_size=args.data_parallel_size, distributed_executor_backend=args.distributed_executor_backend,
        seed=args.seed, temperature=args.temperature, microbench=args.microbench, args=_recorded(args),
        dtype=dtype, dtype_reason=dtype_reason, budget_s=args.budget_s,
        enforce_eager=eager, quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype,
        enable_prefix_caching=args.enable_prefix_caching, enable_expert_parallel=args.enable_expert_parallel,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens, gpu_hour_usd=args.gpu_hour_usd,
        operators=tuple(args.operators), request_rates=tuple(args.request_rates), burstiness=args.burstiness,
        slo_tpot_ms=args.slo_tpot_ms, slo_ttft_ms=args.slo_ttft_ms, slo_percentile=args.slo_percentile, slo_max_concurrency=args.slo_max_concurrency,
        base_url=args.base_url, repeats=args.repeats, range_ratio=args.range_ratio, prefix_fraction=args.prefix_fraction,
        dataset=portable(args.dataset.resolve()) if args.dataset else None, tokenizer=portable(args.tokenizer.resolve()) if args.tokenizer else None,
        serve_budget_s=args.serve_budget_s,
    )  # fmt: skip


def _workload(args: argparse.Namespace, model_path: str, limit: int | None) -> Workload:
    """The serve workload the flags ask for, checked before anything runs (a dataset file parsed and counted)."""
    dataset = None
    if args.dataset is not None:
        if "serve" not in args.mode:
            raise UsageError("--dataset needs --mode serve")
        if args.input_lens != _defaults()["input_lens"] or len(args.output_lens) > 1:
            raise UsageError("--dataset gives the prompts: drop --input-lens, and give at most one --output-lens (for entries without an output length)")
        tokenizer = str(args.tokenizer.resolve()) if args.tokenizer else model_path
        dataset = load_dataset(str(args.dataset.resolve()), tokenizer, args.max_model_len or limit, args.output_lens[0])
    elif args.tokenizer is not None:
        load_tokenizer(str(args.tokenizer.resolve()))  # checked now, used for the vocabulary of random prompts
    return Workload(args.range_ratio, args.prefix_fraction, dataset)



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
        raise UsageError(f"--resume {path}: {flags} differ from the saved plan; drop them (the plan in the file decides) or start a new run")
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
