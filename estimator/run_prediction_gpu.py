"""A GPU session's measured configurations predicted by the serving model (estimator/run_prediction.py says what for).

The GPU is the catalog entry the run's device matched (its datasheet peaks); kernel efficiencies are ``kernels_for`` with
the session's own operator records, so a measured operator class replaces its published figure; nothing is fitted.
One instance is the run's tensor-parallel group (expert parallel over it where vLLM was asked for it); the serving model
counts per GPU, so a group of n GPUs carries batch / n sequences and tokens / n per GPU.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import pandas as pd

from core.dtypes import kernel_dtype
from core.errors import CatalogError
from core.hardware import Device, get_gpu
from estimator.arch import Arch, Layout, load_arch
from estimator.kernels import Kernels, kernels_for
from estimator.planning import aggregated_point
from estimator.run_prediction import OPEN_LOOP, Unpredictable, label, mean_request, metric_rows, wave_output_tokens_per_s
from estimator.serving import step
from estimator.traffic import mean_kv_len

GiB = 2**30


def offline_token_budget(gpu: Device) -> int:
    """Tokens vLLM's offline engine (the LLM class, which bench's offline modes run) schedules a step by default: vLLM 0.32
    EngineArgs gives the LLM class 16,384 on GPUs of at least 70 GiB other than the A100, else 8,192
    (vllm/engine/arg_utils.py; its server's budget is planning.engine_budget)."""
    return 16384 if gpu.memory_bytes >= 70 * GiB and "a100" not in gpu.name.lower() else 8192


def predict_gpu_device(cfgs: pd.DataFrame, runs: pd.DataFrame, ops: pd.DataFrame, engines: dict[str, Any]) -> tuple[list, list, str]:
    """(rows, what could not be predicted and why, how) for one GPU's measuring session."""
    name = cfgs["catalog_name"].iloc[0]
    if pd.isna(name):
        why = f"{cfgs['device_name'].iloc[0]} is not a catalogued GPU: the serving model has no datasheet for it (add a GPU file)"
        return [], [(label(c), why) for c in cfgs.itertuples()], f"serving model: cannot be used ({why})"
    gpu = get_gpu(name)
    rows, unpredicted, sources = [], [], set()
    for c in cfgs.itertuples():
        try:
            r, source = _predict(c, gpu, ops, engines[c.run_file])
            rows += r
            sources.add(source)
        except Unpredictable as exc:
            unpredicted.append((label(c), str(exc)))
    how = f"serving model (estimator/serving.py) on {gpu.name}'s datasheet; kernels: {'; '.join(sorted(sources)) or 'none used'}"
    if any(not str(e).endswith("compiled") for e in cfgs["engine"]):
        how += (". An eager engine launches every kernel from Python, a time the serving model does not hold (it prices the "
                "operators and the launches of vLLM's CUDA-graph step, estimator/step_floor.py)")  # fmt: skip
    return rows, unpredicted, how


def _arch(c: Any, engine: dict[str, Any]) -> Arch:
    quant = engine.get("quantization")
    if quant not in (None, "fp8"):
        raise Unpredictable(f"quantization {quant!r}: the serving model's GEMMs know bf16, fp16, fp32, fp8 and int8 weights")
    try:
        return _load_arch(str(c.model_key), "fp8" if quant == "fp8" else kernel_dtype(c.dtype))
    except CatalogError as exc:
        raise Unpredictable(str(exc)) from exc


@cache
def _load_arch(model: str, weight_dtype: str) -> Arch:
    return load_arch(model, weight_dtype)


def _layout(arch: Arch, engine: dict[str, Any]) -> Layout:
    pp, dp = engine.get("pipeline_parallel_size", 1), engine.get("data_parallel_size", 1)
    if pp > 1 or dp > 1:
        raise Unpredictable(f"pipeline parallel {pp}, data parallel {dp}: the serving model's instance is one tensor-parallel group")
    n = int(engine.get("tensor_parallel_size", 1))
    ep = n if engine.get("enable_expert_parallel") and arch.shapes.num_experts else 1
    return Layout(n, tp=n, ep=ep)


def _predict(c: Any, gpu: Device, ops: pd.DataFrame, engine: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    arch = _arch(c, engine)
    lay = _layout(arch, engine)
    k, source = kernels_for(gpu, ops, arch.fp8_block_scaled)
    kv = "fp8" if engine.get("kv_cache_dtype") == "fp8" else "bf16"
    b, i, o = c.batch_size, int(c.input_len), int(c.output_len)
    if c.mode == "serve":
        if pd.notna(c.request_rate):
            raise Unpredictable(OPEN_LOOP)
        return metric_rows(c, serve_latency_ms(arch, gpu, lay, k, c, kv), "held out"), source
    b = int(b)
    transformers = str(c.engine).startswith("transformers")
    budget = b * i if transformers else int(c.max_num_batched_tokens) if pd.notna(c.max_num_batched_tokens) else offline_token_budget(gpu)
    if c.mode == "prefill":
        return metric_rows(c, {"time_to_first_token_ms": prefill_s(arch, gpu, lay, k, b, i, budget, kv) * 1e3}, "held out"), source
    dec = decode_s(arch, gpu, lay, k, b, mean_kv_len(i, o), kv)
    if c.mode == "decode":
        return metric_rows(c, {"decode_step_ms": dec * 1e3}, "held out"), source
    out = wave_output_tokens_per_s(prefill_s(arch, gpu, lay, k, b, i, budget, kv), dec, b, o)
    return metric_rows(c, {"output_tokens_per_s": out}, "held out"), source


def decode_s(arch: Arch, gpu: Device, lay: Layout, k: Kernels, batch: int, context: float, kv: str) -> float:
    """One decode step of ``batch`` sequences of the instance (batch / GPUs per GPU) at ``context``: serving.step."""
    return step(arch, gpu, lay, k, "decode", batch_per_gpu=batch / lay.num_gpus, context=context, kv_dtype=kv).seconds


def prefill_s(arch: Arch, gpu: Device, lay: Layout, k: Kernels, batch: int, prompt: int, budget: int, kv: str) -> float:
    """``batch`` prompts of ``prompt`` tokens to their first token: ceil(batch x prompt / budget) prefill steps of equal
    tokens (each serving.step at tokens / GPUs per GPU)."""
    total = batch * prompt
    chunks = max(1, math.ceil(total / budget))
    st = step(arch, gpu, lay, k, "prefill", tokens_per_gpu=total / chunks / lay.num_gpus, prompt_len=prompt, kv_dtype=kv)
    return chunks * st.seconds


def serve_latency_ms(arch: Arch, gpu: Device, lay: Layout, k: Kernels, c: Any, kv: str) -> dict[str, float]:
    """TTFT and TPOT (ms) at a closed-loop concurrency: planning.aggregated_point at concurrency / GPUs sequences per GPU
    (the server's own token budget, planning.engine_budget), lengths as the requests had them on average."""
    pt = aggregated_point(arch, gpu, lay, k, mean_request(c, str(c.model_key), kv), int(c.concurrency) / lay.num_gpus)
    return {"ttft_ms_p50": pt.ttft_ms, "tpot_ms_p50": pt.tpot_ms}
