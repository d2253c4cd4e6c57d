"""The batch and token limits trtllm-bench sets itself when a benchmark gives none, and so the CUDA graphs a published
trtllm-bench figure (PyTorch backend) ran with: its rule is data (core/data/engines/tensorrt-llm-1.0.toml [bench], read
from TensorRT-LLM's tensorrt_llm/bench/build/tuning.py and tensorrt_llm/bench/benchmark/utils/general.py).

TensorRT-LLM keeps the captured batch sizes up to min(max batch, max tokens) and, padding, the first size beyond clamped to
that bound (tensorrt_llm/_torch/pyexecutor/model_engine.py ``_filter_cuda_graph_batch_sizes``): a page's list of sizes up
to 8,192 is cut at the batch trtllm-bench chose, not at 8,192.
"""

from __future__ import annotations

import math

from core.engines import CudaGraphs, engine_rules
from core.hardware import Device
from core.params import total_params
from estimator.arch import Arch


def _round_up(x: float, tiers: list[list[float]], floor: int) -> int:
    """``x`` rounded up to the step of the first tier it lies below, at least ``floor``."""
    step = next(int(s) for below, s in tiers if x < below)
    return max(floor, step * math.ceil(x / step))


def bench_limits(a: Arch, gpu: Device, tp: int, input_len: int, output_len: int, kv_dtype: str, fraction: float,
                 engine: str = "trtllm") -> tuple[int, int]:  # fmt: skip
    """(max batch, max tokens per step) trtllm-bench picks for ``a`` on ``tp`` GPUs for requests of ``input_len`` +
    ``output_len`` tokens, KV cache at ``fraction`` of the free memory: its KV estimate (whole memory less the parameters
    at their bytes, no activations; KV heads at least TP), then its tiers; the tokens at least one prompt plus the batch
    (no chunked prefill). Weights in a format outside the heuristic's (MXFP4, INT4/INT8): BuildConfig's defaults."""
    b, s = engine_rules(engine).bench, a.shapes
    if a.weight_dtype not in b.get("tuned_formats", (a.weight_dtype,)):
        return int(b["untuned_batch"]), max(int(b["untuned_tokens"]), input_len + int(b["untuned_batch"]))
    weight_b, kv_b = (1.0 if a.weight_dtype == "fp8" else 2.0), (1.0 if kv_dtype == "fp8" else 2.0)
    per_token = 2 * s.num_layers * max(tp, s.kv_heads) * s.head_dim * kv_b / 2**30  # GiB of KV a token holds
    available = gpu.memory_bytes / 2**30 * tp - total_params(s) * weight_b / 2**30
    requests = available * fraction / (per_token * (input_len + output_len))
    raw_bs = min(requests, b["max_requests"])
    raw_tokens = min(raw_bs * (1 + input_len / output_len), b["max_tokens"])
    batch = _round_up(raw_bs, b["batch_tiers"], b["min_batch"])
    tokens = _round_up(raw_tokens, b["token_tiers"], b["min_tokens"])
    return batch, max(tokens, input_len + batch)


def bench_graphs(sizes: tuple[int, ...], a: Arch, gpu: Device, tp: int, input_len: int, output_len: int, kv_dtype: str,
                 fraction: float) -> CudaGraphs:  # fmt: skip
    """The padded CUDA graphs a trtllm-bench run listing ``sizes`` captured: cut at min(max batch, max tokens)."""
    batch, tokens = bench_limits(a, gpu, tp, input_len, output_len, kv_dtype, fraction)
    return CudaGraphs(sizes, True).capped(batch, tokens)
