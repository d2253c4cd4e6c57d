"""The measured operator database wired into the serving model (estimator/kernels.py decides an operator's efficiency at its
shape; estimator/engine_kernels.py reads core/data/kernels): which source an operator takes and in what order, the raw
latency it then takes, the decode-attention share by heads ratio, whole tables refused where they exceed the datasheet,
CUDA-graph padding, trtllm-bench's own limits, how a ranged assumption moves a measured figure, and the source printed."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import statistics
from dataclasses import replace

import numpy as np
import pytest

from core.engines import CudaGraphs, engine_rules
from core.hardware import get_gpu
from core.paths import RESULTS_DIR
from estimator import kernel_db as kdb
from estimator.arch import Layout, load_arch
from estimator.bench_limits import bench_limits
from estimator.eff import Knob
from estimator.engine_kernels import datasheet_share, decode_attention_fraction
from estimator.kernels import kernels_for, published_kernels, with_value
from estimator.layer_ops import Batch, Op, communication, layer_costs, op_time
from estimator.operators import load_ops
from estimator.serving import step
from estimator.validation import load_rows
from fleetcal.cli import main


@pytest.fixture(scope="module")
def ops():
    return load_ops(RESULTS_DIR, warn=False)


def _costs(model: str, gpu: str, k, phase: str = "decode", tokens: float = 64, context: float = 1024, tp: int = 1, kv: str = "fp8",
           weights: str | None = "fp8"):  # fmt: skip
    """The operator costs of one micro-batch of ``tokens`` per GPU (decode: that many sequences), FP8 weights by default."""
    a, g = load_arch(model, weights), get_gpu(gpu)
    seqs = tokens if phase == "decode" else 1
    return layer_costs(Batch(a, g, Layout(tp, tp=tp), k, phase, tokens, seqs, context, 1, kv, 1.0)), g


def _seconds(c, g) -> float:
    bf16 = g.peak_flops_per_s("bf16")
    return op_time(c, {"bf16": bf16, "fp8": g.peak_flops_per_s("fp8") if "fp8" in g.peak_tflops else bf16}, g.bandwidth_bytes_per_s)[0]


# --- which source, in what order ----------------------------------------------------------------------------------------


def test_a_linear_map_takes_the_engines_measured_latency_at_its_own_shape():
    """Llama-3.1-8B's down projection (14,336 -> 4,096, FP8) at 64 rows on H100 through TensorRT-LLM 1.0: the database's
    latency of that GEMM (the closest version held, 1.3.0rc20) is the operator's time, whatever the model's own figure."""
    k, _ = kernels_for(get_gpu("H100"), None, engine="trtllm", database=(("trtllm",), "1.0.0"))
    costs, g = _costs("llama-3.1-8b", "H100", k)
    down = next(c for c in costs if c.name is Op.DENSE_FFN and c.flops == 2 * 64 * 14336 * 4096)
    assert _seconds(down, g) * 1e3 == pytest.approx(kdb.gemm("H100", "trtllm", "fp8", 64, 4096, 14336, "1.0.0").ms, rel=1e-9)
    assert "system h100_sxm, backend trtllm 1.3.0rc20, gemm gemm_dtype=fp8 (kernel torch_flow)" in down.eff.source


def test_a_row_parallel_linear_map_is_read_at_the_shape_each_gpu_runs():
    """Llama-3.1-70B at TP8, 8,192 prefill rows on H100 through TensorRT-LLM: the down projection (28,672 -> 8,192) is
    row-parallel (TensorParallelMode.ROW), so each GPU runs (8,192 x 3,584) by (3,584 x 8,192) and takes the database's
    latency of that GEMM, not of (28,672 x 1,024); the column-parallel gate/up splits its outputs (57,344 / 8 = 7,168)."""
    k, _ = kernels_for(get_gpu("H100"), None, engine="trtllm", database=(("trtllm",), "1.0.0"))
    costs, g = _costs("llama-3.1-70b", "H100", k, "prefill", tokens=1024, context=1024, tp=8)  # 1,024 a GPU: 8,192 rows
    ffn = [c for c in costs if c.name is Op.DENSE_FFN]
    want = [kdb.gemm("H100", "trtllm", "fp8", 8192, n, kk, "1.0.0").ms for n, kk in ((7168, 8192), (8192, 3584))]
    assert sorted(_seconds(c, g) * 1e3 for c in ffn) == pytest.approx(sorted(want), rel=1e-9)
    assert kdb.gemm("H100", "trtllm", "fp8", 8192, 1024, 28672, "1.0.0").ms > 2 * want[1]  # the shape read before: 0.90 ms, 0.39


def test_beyond_the_measured_rows_a_gemm_keeps_the_efficiency_of_the_largest_measured_m():
    """The H100's TensorRT-LLM FP8 GEMMs stop at M = 32,768, the A100's 16-bit ones at 8,192: a GEMM of more rows takes the
    share of the peak the largest measured M implies (compute-bound there: wave quantization under 5%,
    EngineKernels.gemm_held), so twice the rows take twice that row count's measured time; below the edge nothing changes."""
    k, _ = kernels_for(get_gpu("H100"), None, engine="trtllm", database=(("trtllm",), "1.0.0"))
    down = lambda costs, m: next(c for c in costs if c.name is Op.DENSE_FFN and c.flops == 2 * m * 14336 * 4096)  # noqa: E731
    at_edge, g = _costs("llama-3.1-8b", "H100", k, "prefill", tokens=32768, context=4096)
    beyond, _ = _costs("llama-3.1-8b", "H100", k, "prefill", tokens=65536, context=4096)
    edge_ms = kdb.gemm("H100", "trtllm", "fp8", 32768, 4096, 14336, "1.0.0").ms
    assert _seconds(down(at_edge, 32768), g) * 1e3 == pytest.approx(edge_ms, rel=1e-9)
    assert _seconds(down(beyond, 65536), g) == pytest.approx(2 * _seconds(down(at_edge, 32768), g), rel=1e-3)
    assert "the efficiency at m=32768 held at 65536 rows" in down(beyond, 65536).eff.source
    assert kdb.gemm("H100", "trtllm", "fp8", 65536, 4096, 14336, "1.0.0").ms is None  # the database itself answers nothing there
    ka, _ = kernels_for(get_gpu("A100"), None, engine="trtllm", database=(("trtllm",), "0.6.1"))
    a100, _ = _costs("llama-2-7b", "A100", ka, "prefill", tokens=106496, context=1024, kv="bf16", weights="bf16")
    ffn = [c for c in a100 if c.name is Op.DENSE_FFN]
    held = "the efficiency at m=8192 held at 106496 rows"
    assert ffn and all("backend trtllm 1.0.0" in c.eff.source and held in c.eff.source for c in ffn)


def test_this_projects_own_measurement_of_the_same_kernel_comes_before_the_database(ops):
    """H200's BF16 GEMM measured here is torch.matmul (cuBLAS), the kernel vLLM's linear layer calls: for vLLM on H200 it
    stands before the database; for TensorRT-LLM (its own op) and for the FP8 GEMM (torch._scaled_mm, another kernel than
    the engines') the database comes first, the measurement after it."""
    g = get_gpu("H200")
    vllm, _ = kernels_for(g, ops)
    trt, _ = kernels_for(g, ops, engine="trtllm", database=(("trtllm",), "1.0.0"))
    assert vllm.own == {"gemm_bf16"} and trt.own == frozenset()
    bf16 = next(c for c in _costs("llama-3.1-8b", "H200", vllm, kv="bf16", weights="bf16")[0] if c.name is Op.DENSE_FFN)
    assert bf16.eff.source.startswith("measured: gemm bf16 on H200")
    assert "backend trtllm" in next(c for c in _costs("llama-3.1-8b", "H200", trt)[0] if c.name is Op.DENSE_FFN).eff.source
    h100, _ = kernels_for(get_gpu("H100"), ops)  # a sibling of the H200 is not the same GPU: the database first
    assert h100.own == frozenset()
    assert "backend vllm" in next(c for c in _costs("llama-3.1-8b", "H100", h100)[0] if c.name is Op.DENSE_FFN).eff.source


def test_vllms_block_scaled_fp8_gemms_are_not_read_where_vllm_picks_among_several_kernels(ops):
    """DeepSeek-V3's block-scaled FP8 GEMMs through vLLM on H100: DeepGEMM, FlashInfer and CUTLASS were all timed and vLLM
    picks by what is installed, so no latency is read; the published DeepGEMM figures stand."""
    got = kdb.gemm("H100", "vllm", "fp8_block", 64, 7168, 2048, "0.32.0")
    assert got.ms is None and "several kernels" in got.note
    k, _ = kernels_for(get_gpu("H100"), ops, fp8_block_scaled=True)
    proj = next(c for c in _costs("deepseek-v3", "H100", k, kv="bf16")[0] if c.name is Op.ATTENTION_PROJECTIONS and c.precision == "fp8")
    assert proj.eff.source.startswith(published_kernels().ops["gemm"].source)


def test_a_gpu_the_database_does_not_hold_keeps_the_model_as_it_was(ops):
    k, source = kernels_for(get_gpu("H800"), ops)
    assert k.database is None and "core/data/kernels" not in source
    k, source = kernels_for(get_gpu("H100"), None)  # nothing measured asked for: published figures only
    assert k.database is None and source == "published kernel figures (no GPU of this architecture measured)"


def test_where_the_engine_has_no_table_of_a_family_another_engines_stands_in_and_says_so(ops):
    """vLLM's A100 tables hold no MoE: Qwen3-30B-A3B's routed experts (BF16) take SGLang's fused MoE on the A100."""
    k, _ = kernels_for(get_gpu("A100"), ops)
    routed = next(c for c in _costs("qwen3-30b-a3b", "A100", k, kv="bf16", weights="bf16")[0] if c.name is Op.ROUTED_EXPERTS)
    assert "backend sglang" in routed.eff.source and "sglang's kernels stand in: no vllm moe table for A100" in routed.eff.source


def test_validation_rows_run_on_their_sources_engine_version_and_graphs():
    rows = {r.id: r for r in load_rows()[0]}
    trt, sgl = rows["trtllm-llama3.1-8b-h100-tp1-1000-1000"], rows["sglang-deepseek-prefill-ep32-4k-perfect-eplb"]
    k = trt.kernels(get_gpu("H100"), None, load_arch(trt.model, trt.weight_dtype))
    assert (k.engine, k.database.backends, k.database.version) == ("trtllm", ("trtllm",), "1.0.0")
    assert k.cuda_graphs.padding and k.cuda_graphs.sizes[-1] == 640  # trtllm-bench's own batch (test below)
    assert sgl.kernels(get_gpu("H100"), None, load_arch(sgl.model, sgl.weight_dtype)).database.backends == ("sglang",)


def test_predict_names_system_backend_version_and_kernel_per_operator(capsys):
    assert main(["predict", "--model", "llama-3.1-70b", "--gpu", "H100", "--num-gpus", "2", "--tp", "2", "--phase", "decode",
                 "--batch-per-gpu", "50", "--context-len", "2048", "--kv-dtype", "fp8", "--json"]) == 0  # fmt: skip
    src = json.loads(capsys.readouterr().out)["operator_sources"]["decode"]
    assert "system h100_sxm, backend vllm 0.24.0, gemm gemm_dtype=bfloat16 (kernel torch.nn.functional.linear)" in src["dense FFN"]
    assert "backend vllm 0.24.0, decode_attention head_dim=128 kv_cache_dtype=fp8 (kernel vllm_flash_attn_fa3)" in src["attention"]
    assert "backend vllm 0.24.0, allreduce num_gpus=2 (kernel vllm_graph)" in src["communication (not hidden)"]


# --- decode attention, refused tables -------------------------------------------------------------------------------------


def _raw_decode(system: str, backend: str, kv: str) -> list[dict[str, str]]:
    text = gzip.decompress((kdb.KERNELS_DIR / system / "decode_attention.csv.gz").read_bytes()).decode()
    return [r for r in csv.DictReader(io.StringIO(text.split("\n", 1)[1])) if r["backend"] == backend and r["kv_cache_dtype"] == kv
            and r["head_dim"] == "128"]  # fmt: skip


def test_decode_attention_is_the_engines_best_share_of_the_bandwidth_at_the_heads_ratio():
    """Recomputed from the raw rows (gzip and csv): H100, TensorRT-LLM 1.3.0rc20, FP8 KV, 8 query heads per KV head: for each
    head count of that ratio the best of batch x step x 2 x KV heads x 128 bytes over its latency, over 3,350 GB/s; the
    median over the head counts."""
    best: dict[tuple[int, int], float] = {}
    for r in _raw_decode("h100_sxm", "trtllm", "fp8"):
        h, kvh = int(r["num_heads"]), int(r["num_key_value_heads"])
        if h != 8 * kvh:
            continue
        for col, ms in r.items():
            if col.startswith("step=") and ms:
                share = int(r["batch_size"]) * int(col[5:]) * 2 * kvh * 128 / (float(ms) / 1e3) / get_gpu("H100").bandwidth_bytes_per_s
                best[h, kvh] = max(best.get((h, kvh), 0.0), share)
    share, source = decode_attention_fraction("H100", "trtllm", 8, 128, "fp8", "1.0.0")
    assert len(best) >= 3 and share == pytest.approx(statistics.median(best.values()), rel=1e-9)
    k, _ = kernels_for(get_gpu("H100"), None, engine="trtllm", database=(("trtllm",), "1.0.0"))
    for batch, context in ((1, 100), (512, 60000)):  # inside and far beyond the measured grid: one share
        att = next(c for c in _costs("llama-3.1-70b", "H100", k, tokens=batch, context=context)[0] if c.name is Op.ATTENTION)
        assert att.eff.memory == pytest.approx(share) and "held at every shape" in att.eff.source


def test_the_share_falls_as_more_query_heads_share_a_kv_head_and_none_is_read_beyond_the_measured_ratios():
    shares = [decode_attention_fraction("H100", "trtllm", r, 128, "fp8", "1.0.0")[0] for r in (4, 8, 16)]
    assert shares[0] > shares[1] > shares[2]
    assert math.isnan(decode_attention_fraction("H100", "trtllm", 64, 128, "fp8", "1.0.0")[0])


def test_a_table_that_reads_faster_than_the_datasheet_somewhere_is_refused_whole():
    """A100's TensorRT-LLM 1.0.0 decode attention (KV at 1.2-1.7 x the bandwidth) and L40S's TensorRT-LLM FP8 GEMMs (weights
    of one row at up to 3.5 x the bandwidth) did not time the work counted: the class's figure stands even at a shape whose
    own latency would pass."""
    share, why = decode_attention_fraction("A100", "trtllm", 4, 128, "bf16", "1.0.0")
    assert math.isnan(share) and "x the datasheet bandwidth" in why
    assert datasheet_share("L40S", "gemm", "trtllm", "1.0.0", (("gemm_dtype", "fp8"),)) > 1
    got, eff = kdb.gemm_eff(get_gpu("L40S"), "trtllm", "fp8", 64, 4096, 14336, "1.0.0")
    assert eff is not None, "this shape alone would pass"
    k, _ = kernels_for(get_gpu("L40S"), None, engine="trtllm", database=(("trtllm",), "1.0.0"))
    ffn = next(c for c in _costs("llama-3.1-8b", "L40S", k)[0] if c.name is Op.DENSE_FFN)
    assert ffn.eff.source == published_kernels().ops["gemm"].source


def test_the_all_reduce_is_the_engines_measured_latency_on_nvlink_and_the_formula_on_pcie():
    """Llama-3.1-70B at TP2, 64 sequences a GPU: two all-reduces a layer of 128 x 8,192 BF16 values."""
    a = load_arch("llama-3.1-70b")
    for gpu in ("H100", "L40S"):
        g = get_gpu(gpu)
        k, _ = kernels_for(g, None, engine="trtllm", database=(("trtllm",), "1.0.0"))
        comm = communication(Batch(a, g, Layout(2, tp=2), k, "decode", 64, 64, 1024, 1, "fp8", 1.0))
        measured = kdb.allreduce(gpu, "trtllm", 2, 128 * 8192, "1.0.0").ms / 1e3
        if gpu == "H100":
            assert comm.allreduce == pytest.approx(2 * 80 * measured, rel=1e-9) and "kernel TRTLLM" in comm.allreduce_source
        else:
            assert measured is not None and comm.allreduce == pytest.approx(2 * 80 * k.allreduce_s(g, 2, 128 * 8192)[0])
            assert comm.allreduce_source == k.allreduce_source


# --- CUDA graphs ----------------------------------------------------------------------------------------------------------


def test_captured_sizes_padding_and_their_cut():
    vllm, trt = engine_rules("vllm").graphs("H100"), engine_rules("trtllm").graphs("H100")
    assert vllm.sizes[:5] == (1, 2, 4, 8, 16) and vllm.sizes[-2:] == (496, 512) and engine_rules("vllm").graphs("B200").sizes[-1] == 1024
    assert vllm.run(100) == (104, True) and vllm.run(260) == (272, True) and vllm.run(513) == (513, False)
    assert trt.run(64) == (64, True) and trt.run(100) == (100, False)  # unpadded: only a captured size replays its graph
    listed = CudaGraphs((1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048), True)
    assert listed.capped(640, 2048).sizes[-3:] == (384, 512, 640)  # the first size beyond clamped to the bound
    assert listed.capped(4096, 700).sizes[-1] == 700 and listed.capped(512, 8192).sizes[-1] == 512


def test_a_padded_decode_step_runs_its_linear_maps_at_the_captured_size_and_its_attention_at_its_own(ops):
    """vLLM pads 100 sequences to 104: the FFN takes the time of 104 rows, attention that of 100 sequences' KV."""
    a, g = load_arch("llama-3.1-8b", "fp8"), get_gpu("H100")
    k, _ = kernels_for(g, ops)
    at = {b: step(a, g, Layout(1), k, "decode", batch_per_gpu=b, context=2048, kv_dtype="fp8") for b in (100, 104)}
    assert at[100].breakdown_ms[Op.DENSE_FFN] == pytest.approx(at[104].breakdown_ms[Op.DENSE_FFN], abs=1e-4)  # 4 decimals of a ms
    assert at[100].breakdown_ms[Op.ATTENTION] == pytest.approx(at[104].breakdown_ms[Op.ATTENTION] * 100 / 104, abs=1e-4)
    assert "padded to 104 rows (CUDA graph)" in at[100].op_sources[Op.DENSE_FFN]
    unpadded = step(a, g, Layout(1), replace(k, cuda_graphs=CudaGraphs((1, 2, 4, 8, 16, 32, 64, 128), False)), "decode",
                    batch_per_gpu=100, context=2048, kv_dtype="fp8")  # fmt: skip
    assert "padded" not in unpadded.op_sources[Op.DENSE_FFN]
    assert unpadded.breakdown_ms[Op.DENSE_FFN] != at[100].breakdown_ms[Op.DENSE_FFN]


def test_trtllm_bench_sizes_its_own_batch_from_its_kv_estimate():
    """Llama-3.1-8B FP8 on one H100 at 1,000 + 1,000 tokens, FP8 KV, 0.95 of the free memory, by tuning.py by hand: KV 2 x 32
    layers x 8 heads x 128 x 1 byte = 64 KiB a token; (memory - 8.03 G parameters x 1 byte) x 0.95 over 2,000 tokens' KV:
    about 560 requests; below 1,024 rounded up to 128s: 640; tokens 560 x 2 = 1,120 below 4,096: at least 2,048."""
    a, g = load_arch("llama-3.1-8b", "fp8"), get_gpu("H100")
    free_gib = g.memory_bytes / 2**30 - 8.03e9 / 2**30
    assert 512 < free_gib * 0.95 / (65536 * 2000 / 2**30) < 640
    assert bench_limits(a, g, 1, 1000, 1000, "fp8", 0.95) == (640, 2048)
    assert bench_limits(a, g, 1, 20000, 2000, "fp8", 0.95)[1] == 20000 + 64  # no chunked prefill: a prompt and the batch
    # MXFP4 (gpt-oss) is outside TUNED_QUANTS (bench/build/build.py): BuildConfig's max_batch_size 2048, max_num_tokens 8192
    assert bench_limits(load_arch("gpt-oss-20b", None), get_gpu("B200"), 1, 1024, 1024, "fp8", 0.95) == (2048, 8192)
    assert bench_limits(load_arch("gpt-oss-20b", None), get_gpu("B200"), 1, 8192, 1024, "fp8", 0.95) == (2048, 8192 + 2048)


# --- ranges --------------------------------------------------------------------------------------------------------------


def test_a_ranged_assumption_moves_every_figure_read_off_the_database_by_its_factor():
    k, _ = kernels_for(get_gpu("H100"), None, engine="trtllm", database=(("trtllm",), "1.0.0"))
    half = with_value(k, Knob("memory", "gemm"), k.ops["gemm"].memory / 2)
    for kk in (k, half):
        assert kk.ops["gemm"].memory > 0
    base, moved = (next(c for c in _costs("llama-3.1-8b", "H100", kk)[0] if c.name is Op.DENSE_FFN) for kk in (k, half))
    assert moved.eff.memory == pytest.approx(base.eff.memory / 2) and moved.eff.compute == pytest.approx(base.eff.compute)
    att = [next(c for c in _costs("llama-3.1-8b", "H100", kk)[0] if c.name is Op.ATTENTION)
           for kk in (k, with_value(k, Knob("memory", "attention_decode_gqa"), k.ops["attention_decode_gqa"].memory * 0.8))]  # fmt: skip
    assert att[1].eff.memory == pytest.approx(att[0].eff.memory * 0.8)
    assert np.isclose(with_value(k, Knob("memory", "gemm"), k.ops["gemm"].memory).scale["gemm"], (1.0, 1.0)).all()
