"""Checks that need an NVIDIA GPU; on machines without one they skip, saying so."""

from __future__ import annotations

from conftest import requires_gpu

from core.hardware import Peaks


@requires_gpu
def test_cuda_provenance_and_catalog_match():
    from bench.device import describe_cuda
    from core.hardware import match_gpu

    info = describe_cuda()
    assert info["kind"] == "cuda" and info["count"] >= 1 and info["memory_gb"] > 1
    assert info["driver"] and info["cuda_driver_version"]
    assert match_gpu(info["name"]) is not None, f"{info['name']} is not in the GPU catalog"


@requires_gpu
def test_cuda_microbenchmarks_are_below_the_datasheet():
    from bench.device import describe_cuda
    from bench.microbench import run_microbenchmarks
    from core.hardware import match_gpu

    m = run_microbenchmarks("cuda", quick=True)
    gpu = match_gpu(describe_cuda()["name"])
    assert 0 < m["matmul_bf16_tflops"] <= gpu.peak_tflops["bf16"] * 1.05
    assert 0 < m["memory_bandwidth_gb_per_s"] <= gpu.bandwidth_gb_per_s * 1.05


@requires_gpu
def test_fp8_gemm_matches_bf16_and_stays_below_the_datasheet():
    """An fp8 operator case computes what a bf16 product computes (within fp8 rounding), at a plausible rate."""
    import torch

    from bench.device import describe_cuda
    from bench.ops import Case, _gemm
    from bench.ops_timing import run_case
    from core.hardware import match_gpu

    if torch.cuda.get_device_capability(0) < (8, 9):
        import pytest

        pytest.skip("fp8 needs compute capability 8.9 or above")
    a = torch.randn(64, 512, device="cuda").to(torch.bfloat16)
    w = torch.randn(256, 512, device="cuda").to(torch.bfloat16)
    ones_a = torch.ones((64, 1), device="cuda")
    ones_b = torch.ones((1, 256), device="cuda")
    got = torch._scaled_mm(
        a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn).t(), scale_a=ones_a, scale_b=ones_b, out_dtype=torch.bfloat16
    )
    ref = a.to(torch.float8_e4m3fn).to(torch.bfloat16) @ w.to(torch.float8_e4m3fn).to(torch.bfloat16).t()
    assert torch.allclose(got.float(), ref.float(), rtol=2e-2, atol=0.5)
    gpu = match_gpu(describe_cuda()["name"])
    m, k, n = 4096, 7168, 4096
    case = Case("gemm", {"m": m, "k": k, "n": n}, "fp8", 2.0 * m * k * n, k * n + m * k + 2 * m * n, _gemm(m, k, n, "fp8", "cuda"))
    peaks = {"fp8": Peaks(gpu.name, gpu.peak_flops_per_s("fp8"), gpu.bandwidth_bytes_per_s)}
    rec = run_case(case, "cuda", peaks, {})
    assert 0.05 < rec["mfu"] <= 1.05, rec


def test_gemm_kernel_script_rehearses_on_the_cpu(tmp_path):
    """scripts/gpu_gemm_kernels.py --cpu-test runs the same loop on the CPU (BF16, tiny shapes): every case a record with a
    time, the rows it ran and FLOP/s that follow from its shape and time; and the committed H200 run is what the script
    writes (every case of every kernel, none failed, rates below the datasheet)."""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "scripts/gpu_gemm_kernels.py", str(tmp_path), "--cpu-test"], cwd=root, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recs = json.loads((tmp_path / "gemm_kernels.json").read_text())["records"]
    assert len(recs) == 8 and all("error" not in r for r in recs)
    for r in recs:
        assert r["us"] > 0 and abs(r["tflops"] - 2 * r["m_run"] * r["k"] * r["n"] / (r["us"] * 1e-6) / 1e12) < 0.01 + 0.01 * r["tflops"]
    with open(root / "results/gpu/20261204-h200-gemm/gemm_kernels.csv") as f:
        h200 = list(csv.DictReader(f))
    assert len(h200) == 3 * 12 * 12 and not any(r["error"] for r in h200)  # 3 kernels x 12 linear maps x 12 rows
    assert all(0 < float(r["mbu"]) <= 1 and 0 < float(r["mfu"]) <= 1 for r in h200)


def test_decode_attention_script_rehearses_on_the_cpu(tmp_path):
    """scripts/gpu_decode_attention.py --cpu-test runs its loop on the CPU; the committed H200 run holds every case, none
    failed, each below the datasheet bandwidth, the bytes it counts consistent with its rate and time."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "scripts/gpu_decode_attention.py", str(tmp_path), "--cpu-test"], cwd=root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "decode_attention.json").read_text())["records"]) == 2
    h200 = json.loads((root / "results/gpu/20261204-h200-attention/decode_attention.json").read_text())["records"]
    assert len(h200) == 4 * 4 * 3 and not any("error" in r for r in h200)  # head counts x batches x contexts
    for r in h200:
        kv = 2 * r["batch"] * r["context"] * r["kv_heads"] * r["head_dim"] * 2 + 2 * r["batch"] * r["q_heads"] * r["head_dim"] * 2
        assert 0 < r["mbu"] <= 1 and abs(kv / (r["us"] * 1e-6) / 1e9 - r["gb_per_s"]) <= 0.1 + 0.001 * r["gb_per_s"]
