"""Routed experts read off the measured operator database (core/data/kernels, estimator/engine_kernels.py) for the families
issue 33 added: MXFP4 experts (gpt-oss) served weight-only on Hopper take the database's MXFP4 fused-MoE latency, not the
published weight-only GEMM figure; an expert shape the closest engine version did not time is read at the engine's
version that did (Llama 4 Scout); where TensorRT-LLM's NVFP4 MoE was timed with two kernels, CUTLASS's (the engine's
default backend) is read. Each test compares the operator's time with the raw latency of the database at the same shape,
read through kernel_db.lookup."""

from __future__ import annotations

import pytest

from core.hardware import get_gpu
from estimator import kernel_db as kdb
from estimator.arch import Layout, load_arch
from estimator.engine_kernels import moe_format
from estimator.kernels import kernels_for, published_kernels
from estimator.layer_ops import Batch, Op, layer_costs, op_time


def _routed(model: str, gpu: str, weights: str | None, tokens: float, tp: int = 1, version: str = "1.1.0"):
    """(routed-expert cost of one decode micro-batch of ``tokens`` sequences per GPU, the GPU) through TensorRT-LLM ``version``."""
    g = get_gpu(gpu)
    k, _ = kernels_for(g, None, engine="trtllm", database=(("trtllm",), version))
    a = load_arch(model, weights)
    costs = layer_costs(Batch(a, g, Layout(tp, tp=tp), k, "decode", tokens, tokens, 1024, 1, "fp8", 1.0))
    return next(c for c in costs if c.name is Op.ROUTED_EXPERTS), g


def _ms(c, g) -> float:
    peaks = {p: g.peak_flops_per_s(p) for p in ("bf16", "fp8", "fp4") if p in g.peak_tflops}
    return op_time(c, {**peaks, "fp4": peaks.get("fp4", peaks["fp8"])}, g.bandwidth_bytes_per_s)[0] * 1e3


def _shape(dtype: str, hidden: int, inter: int, topk: int, experts: int, tp: int, tokens: float) -> dict:
    return {"moe_dtype": dtype, "hidden_size": hidden, "inter_size": inter, "topk": topk, "num_experts": experts, "moe_tp_size": tp,
            "moe_ep_size": 1, "num_tokens": tokens}  # fmt: skip


def test_mxfp4_experts_on_hopper_take_the_databases_mxfp4_moe_latency():
    """gpt-oss-120b's MXFP4 experts on one H200 (no FP4 tensor cores: served weight-only) at 512 sequences: the operator
    takes TensorRT-LLM's measured w4a16_mxfp4 fused-MoE latency at that shape (2,880 x 2,880, top 4 of 128), which is
    longer than the published weight-only GEMM figure (Marlin/Machete: the BF16 GEMM's shares on the stored bytes) gave."""
    assert moe_format("mxfp4", "bf16", False) == "mxfp4" and moe_format("fp8", "fp8", False) == "fp8"
    assert moe_format("mxfp4", "fp4", False) == ""  # Blackwell: MXFP8 activations, not held
    c, g = _routed("gpt-oss-120b", "H200", None, 512)
    raw = kdb.lookup("H200", "moe", "trtllm", _shape("w4a16_mxfp4", 2880, 2880, 4, 128, 1, 512), "1.1.0")
    assert raw.ms is not None and _ms(c, g) == pytest.approx(raw.ms, rel=1e-9)
    assert "moe_dtype=w4a16_mxfp4" in c.eff.source
    published = _ms(type(c)(c.name, c.flops, c.nbytes, c.precision, published_kernels().ops["gemm_weight_only"], c.layers), g)
    assert _ms(c, g) > published


def test_an_expert_shape_the_closest_version_did_not_time_is_read_at_the_version_that_did():
    """Llama 4 Scout's experts (5,120 x 8,192, top 1 of 16) at TP4 on H100 through TensorRT-LLM 1.0: the closest version
    the database holds, 1.3.0rc10, timed no such experts; 1.3.0rc20 did, and its latency is read, not DeepGEMM's figure."""
    shape = _shape("fp8", 5120, 8192, 1, 16, 4, 256)
    assert kdb.lookup("H100", "moe", "trtllm", shape, "1.0.0").ms is None  # rc10: 'not measured for these columns'
    c, g = _routed("llama-4-scout", "H100", "fp8", 64, tp=4, version="1.0.0")
    assert _ms(c, g) == pytest.approx(kdb.lookup("H100", "moe", "trtllm", shape, "1.3.0rc20").ms, rel=1e-9)
    assert "backend trtllm 1.3.0rc20, moe" in c.eff.source


def test_a_shape_the_closest_version_timed_is_read_there_even_where_a_newer_version_also_did():
    """Mixtral's experts (4,096 x 14,336, top 2 of 8) at TP1 on H200 through TensorRT-LLM 1.0: 1.3.0rc10 timed them, so
    rc10 is read (the version closest to the engine's), not rc20."""
    c, g = _routed("mixtral-8x7b", "H200", "fp8", 64, version="1.0.0")
    raw = kdb.lookup("H200", "moe", "trtllm", _shape("fp8", 4096, 14336, 2, 8, 1, 64), "1.0.0")
    assert "1.3.0rc10" in raw.source and _ms(c, g) == pytest.approx(raw.ms, rel=1e-9)


def test_where_two_kernels_timed_one_shape_trtllms_default_cutlass_moe_is_read():
    """Qwen3-30B-A3B's NVFP4 experts on one B200: TensorRT-LLM's table times both its CUTLASS fused MoE and a min-latency
    kernel at this shape; MoeConfig.backend defaults to CUTLASS, and that one's latency is read."""
    shape = _shape("nvfp4", 2048, 768, 8, 128, 1, 256)
    columns = {"backend": "trtllm", "version": "1.3.0rc20", **{k: v for k, v in shape.items() if k != "num_tokens"}}
    assert kdb._kernels("b200_sxm", "moe", tuple(sorted(columns.items()))) == ("moe_torch_flow_cutlass", "moe_torch_flow_min_latency")
    cutlass = kdb.lookup("B200", "moe", "trtllm", shape, "1.1.0", kernel="moe_torch_flow_cutlass")
    fast = kdb.lookup("B200", "moe", "trtllm", shape, "1.1.0", kernel="moe_torch_flow_min_latency")
    assert fast.ms is not None and fast.ms != pytest.approx(cutlass.ms, rel=1e-3)
    c, g = _routed("qwen3-30b-a3b", "B200", "nvfp4", 256)
    assert cutlass.ms is not None and _ms(c, g) == pytest.approx(cutlass.ms, rel=1e-9)
    assert "moe_torch_flow_cutlass" in c.eff.source
