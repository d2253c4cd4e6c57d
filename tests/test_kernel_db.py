"""The measured operator database (core/data/kernels, from AIConfigurator 0.12.0) and its lookup (estimator/kernel_db.py):
hand-picked shapes read back against the raw extracted rows (read here with gzip and csv, not the lookup's own path),
interpolation between them by its formula, no extrapolation, the version and kernel chosen, and the efficiency a latency
implies giving that latency back through the serving model's own operator time."""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import subprocess
from pathlib import Path

import pytest

from core.hardware import get_gpu
from estimator import kernel_db as kdb
from estimator.layer_ops import OpCost, op_time

ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


def raw_rows(system: str, table: str) -> list[dict[str, str]]:
    """The extracted rows of one table as text, read with gzip and csv."""
    text = gzip.decompress((kdb.KERNELS_DIR / system / f"{table}.csv.gz").read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))  # past the licence notice line


def raw(system: str, table: str, across: str, x: int, **cols: str) -> float:
    """The one raw latency (ms) at ``cols`` and ``across``=``x``."""
    hits = [r for r in raw_rows(system, table) if all(r[k] == str(v) for k, v in cols.items())]
    assert len(hits) == 1, f"{len(hits)} raw rows for {cols}"
    return float(hits[0][f"{across}={x}"])


H200_FP8 = {"backend": "trtllm", "version": "1.3.0rc20", "kernel_source": "torch_flow", "gemm_dtype": "fp8"}


def test_every_gpu_with_a_system_names_one_the_extract_holds():
    for gpu, system in kdb.systems().items():
        assert (kdb.KERNELS_DIR / system / "gemm.csv.gz").is_file(), gpu
        get_gpu(gpu)  # a catalogued name


def test_a_measured_gemm_is_its_raw_row():
    """A collected shape (N = 4,096, K = 8,192: Llama-3.3-70B's o_proj at TP2) at measured M: the row itself."""
    for m in (1, 17, 97, 4096):
        got = kdb.gemm("H200", "trtllm", "fp8", m, 4096, 8192)
        assert got.ms == pytest.approx(raw("h200_sxm", "gemm", "m", m, **H200_FP8, n="4096", k="8192"), rel=1e-12)
        assert got.note == "measured"
    assert "system h200_sxm, backend trtllm 1.3.0rc20, gemm gemm_dtype=fp8 (kernel torch_flow)" in got.source


def test_between_two_measured_m_the_latency_is_log_log_interpolated():
    """M = 1,000 lies between the measured 768 and 1,024 rows (and 769 / 1,025 around them): log t is linear in log M
    between the two neighbours, 769 and 1,024."""
    lo = raw("h200_sxm", "gemm", "m", 769, **H200_FP8, n="4096", k="8192")
    hi = raw("h200_sxm", "gemm", "m", 1024, **H200_FP8, n="4096", k="8192")
    w = (math.log(1000) - math.log(769)) / (math.log(1024) - math.log(769))
    got = kdb.gemm("H200", "trtllm", "fp8", 1000, 4096, 8192)
    assert got.ms == pytest.approx(math.exp(math.log(lo) + w * math.log(hi / lo)), rel=1e-12)
    assert "m=1000 between 769 and 1024" in got.note
    assert min(lo, hi) <= got.ms <= max(lo, hi)


def test_between_measured_n_and_k_every_corner_is_read():
    """N = 6,144 and K = 5,120 are both collected; N = 5,632 lies between 5,120 and 6,144: the two raw rows at M = 64."""
    a = raw("h200_sxm", "gemm", "m", 64, **H200_FP8, n="5120", k="5120")
    b = raw("h200_sxm", "gemm", "m", 64, **H200_FP8, n="6144", k="5120")
    w = (math.log(5632) - math.log(5120)) / (math.log(6144) - math.log(5120))
    assert kdb.gemm("H200", "trtllm", "fp8", 64, 5632, 5120).ms == pytest.approx(math.exp(math.log(a) + w * math.log(b / a)), rel=1e-12)


def test_beyond_the_measured_shapes_nothing_is_extrapolated():
    over = kdb.gemm("H200", "trtllm", "fp8", 97, 4096 * 32, 8192)  # N beyond the largest collected (65,536)
    assert over.ms is None and "beyond the measured" in over.note and "n=131072" in over.note
    assert kdb.gemm("H200", "trtllm", "fp8", 65536, 4096, 8192).ms is None  # M beyond 32,768
    none = kdb.gemm("H800", "trtllm", "fp8", 97, 4096, 8192)
    assert none.ms is None and "no system for H800" in none.note
    assert kdb.implied_eff(none, 1.0, 1.0, get_gpu("H800"), "fp8") is None


def test_decode_attention_reads_its_raw_row_and_interpolates_over_batch_and_context():
    """Llama-3.3-70B at TP8 (8 query heads, 1 KV head of 128) over FP8 KV: batch 64 at 2,047 cached tokens is a row; batch
    96 at 3,000 lies inside the measured 64-128 x 2,047-4,095 square."""
    cols = {"backend": "trtllm", "version": "1.3.0rc20", "kernel_source": "torch_flow", "num_heads": "8",
            "num_key_value_heads": "1", "head_dim": "128", "kv_cache_dtype": "fp8"}  # fmt: skip
    at = kdb.decode_attention("H200", "trtllm", 64, 2047, 8, 1, 128, "fp8")
    assert at.ms == pytest.approx(raw("h200_sxm", "decode_attention", "step", 2047, batch_size="64", **cols), rel=1e-12)
    corners = [raw("h200_sxm", "decode_attention", "step", s, batch_size=str(b), **cols) for b in (64, 128) for s in (2047, 4095)]
    mid = kdb.decode_attention("H200", "trtllm", 96, 3000, 8, 1, 128, "fp8").ms
    assert min(corners) <= mid <= max(corners)


def test_the_version_closest_to_an_engine_and_the_newest():
    """H100's TensorRT-LLM all-reduce is held at 1.2.0rc5 and 1.3.0rc20: v0.6.1 reads the older, no version the newer."""
    old, new = kdb.allreduce("H100", "trtllm", 2, 1048576, version="0.6.1"), kdb.allreduce("H100", "trtllm", 2, 1048576)
    assert "trtllm 1.2.0rc5" in old.source and "trtllm 1.3.0rc20" in new.source
    for got, v in ((old, "1.2.0rc5"), (new, "1.3.0rc20")):
        want = raw("h100_sxm", "allreduce", "message_size", 1048576, backend="trtllm", version=v, num_gpus="2")
        assert got.ms == pytest.approx(want, rel=1e-12)
    assert kdb.closest_version(["1.0.0", "1.2.0rc5", "1.3.0rc20"], "1.3.0") == "1.3.0rc20"  # rc below its release
    assert kdb.closest_version(["0.5.6.post2", "0.5.14"], "0.5.6") == "0.5.6.post2"


def test_where_several_kernels_measured_a_shape_the_default_or_a_named_one_is_read():
    """vLLM's custom all-reduce is timed eager and under a CUDA graph: a serving step's decode runs in the graph. SGLang's
    B200 decode attention holds three kernels and no default: it must be named."""
    graph = kdb.allreduce("H200", "vllm", 4, 65536)
    assert "kernel vllm_graph" in graph.source
    want = raw("h200_sxm", "allreduce", "message_size", 65536, backend="vllm", version="0.24.0", kernel_source="vllm_graph", num_gpus="4")
    assert graph.ms == pytest.approx(want, rel=1e-12)
    shape = {"batch_size": 64, "num_heads": 8, "num_key_value_heads": 1, "head_dim": 128, "kv_cache_dtype": "fp8", "step": 2047}
    ambiguous = kdb.lookup("B200", "decode_attention", "sglang", shape)
    assert ambiguous.ms is None and "several kernels" in ambiguous.note
    named = kdb.lookup("B200", "decode_attention", "sglang", shape, kernel="trtllm_mha")
    assert "kernel trtllm_mha" in named.source and named.ms == pytest.approx(
        raw("b200_sxm", "decode_attention", "step", 2047, backend="sglang", kernel_source="trtllm_mha", batch_size="64", num_heads="8",
            num_key_value_heads="1", head_dim="128", kv_cache_dtype="fp8"), rel=1e-12)  # fmt: skip
    assert "kernel triton not measured" in kdb.lookup("B200", "decode_attention", "sglang", shape, kernel="triton").note


@pytest.mark.parametrize("precision", ["fp8", "bf16"])
def test_the_implied_efficiency_gives_the_measured_latency_back_through_the_serving_models_operator_time(precision):
    gpu = get_gpu("A100") if precision == "bf16" else get_gpu("H200")  # A100: no FP8 peak, BF16's stands in
    got, eff = kdb.gemm_eff(gpu, "trtllm", precision, 97, 8192, 28672)
    nbytes = 8192 * 28672 * (1 if precision == "fp8" else 2) + 97 * 28672 * (1 if precision == "fp8" else 2) + 97 * 8192 * 2
    cost = OpCost("dense FFN", 2 * 97 * 8192 * 28672, nbytes, precision, eff, 1)
    bf16 = gpu.peak_flops_per_s("bf16")
    peaks = {"bf16": bf16, "fp8": gpu.peak_flops_per_s("fp8") if "fp8" in gpu.peak_tflops else bf16}
    seconds, _ = op_time(cost, peaks, gpu.bandwidth_bytes_per_s)
    assert seconds == pytest.approx(got.ms / 1e3, rel=1e-9)
    assert got.source in eff.source


def test_a_small_gemm_carries_its_latency_floor():
    """Llama-3.1-8B's o_proj (4,096 x 4,096, BF16) on H200: the measured latency at M = 1 and M = 16 is one floor, so the
    implied FLOP share grows with M there while the bytes barely do (the raw rows themselves)."""
    cols = {"backend": "trtllm", "version": "1.3.0rc20", "kernel_source": "torch_flow", "gemm_dtype": "bfloat16", "n": "4096", "k": "4096"}
    t1, t16 = raw("h200_sxm", "gemm", "m", 1, **cols), raw("h200_sxm", "gemm", "m", 16, **cols)
    assert t16 / t1 < 1.1  # 16 x the rows within 10% of the time: a floor, not a rate
    (_, e1), (_, e16) = (kdb.gemm_eff(get_gpu("H200"), "trtllm", "bf16", m, 4096, 4096) for m in (1, 16))
    assert e16.compute / e1.compute == pytest.approx(16 * t1 / t16, rel=1e-9)


def test_the_bus_fraction_is_nccls_bus_bandwidth_over_one_direction_of_nvlink():
    gpu, got = get_gpu("H100"), kdb.allreduce("H100", "trtllm", 8, 16777216)
    bus = 2 * 7 / 8 * 16777216 * 2 / (got.ms / 1e3)
    assert kdb.bus_fraction(got, 8, 16777216, gpu) == pytest.approx(bus / (gpu.nvlink_gb_per_s / 2 * 1e9), rel=1e-12)


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="AIConfigurator is not installed (bash scripts/setup_peers.sh)")
def test_the_extract_regenerates_byte_for_byte_from_the_installed_peer():
    proc = subprocess.run([str(PEER_PYTHON), str(ROOT / "scripts" / "extract_kernel_db.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="AIConfigurator is not installed (bash scripts/setup_peers.sh)")
def test_the_raw_rows_are_the_peers_parquet_rows_rounded():
    """Three hand-picked rows against the peer's own package file (its parquet, read with the peer's Python)."""
    code = (
        "import pandas as pd, aiconfigurator_core as a, pathlib, sys\n"
        "d = pathlib.Path(a.__file__).parent / 'systems/data/h200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet'\n"
        "t = pd.read_parquet(d)\n"
        "for m in (1, 97, 4096):\n"
        "    r = t[(t.gemm_dtype == 'fp8') & (t.m == m) & (t.n == 4096) & (t.k == 8192)].latency\n"
        "    print(r.median())\n"
    )
    out = subprocess.run([str(PEER_PYTHON), "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout.split()
    for m, peer in zip((1, 97, 4096), map(float, out)):
        assert raw("h200_sxm", "gemm", "m", m, **H200_FP8, n="4096", k="8192") == pytest.approx(peer, rel=5e-4)  # 4 significant digits


def test_a_latency_faster_than_the_datasheet_allows_for_the_work_is_refused():
    """A100's TensorRT-LLM 1.0.0 decode attention at 32 query and 8 KV heads of 128 (BF16 KV), 64 sequences over 4,095
    cached tokens: reading their KV (64 x 4,095 x 2 x 8 x 128 x 2 bytes) in the time measured would take more than the
    A100's 2,039 GB/s, so the row did not read that KV; its efficiency is refused, not passed on above 1."""
    gpu = get_gpu("A100")
    cols = {"backend": "trtllm", "version": "1.0.0", "kernel_source": "torch_flow", "batch_size": "64", "num_heads": "32",
            "num_key_value_heads": "8", "head_dim": "128", "kv_cache_dtype": "bfloat16"}  # fmt: skip
    kv_bytes = 64 * 4095 * 2 * 8 * 128 * 2
    assert kv_bytes / (raw("a100_sxm", "decode_attention", "step", 4095, **cols) / 1e3) > gpu.bandwidth_bytes_per_s
    got, eff = kdb.decode_attention_eff(gpu, "trtllm", 64, 4095, 32, 8, 128, "bf16")
    assert got.ms is not None and eff is None
    assert kdb.implied_fractions(got, 64 * 4 * 32 * 4095 * 128, kv_bytes, gpu, "bf16")[1] > 1.0
