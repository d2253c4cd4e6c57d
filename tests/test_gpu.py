"""Checks that need an NVIDIA GPU; on machines without one they skip, saying so."""

from __future__ import annotations

from conftest import requires_gpu


@requires_gpu
def test_cuda_provenance_and_catalog_match():
    from bench.device import describe_cuda
    from estimator.hardware import match_gpu

    info = describe_cuda()
    assert info["kind"] == "cuda" and info["count"] >= 1 and info["memory_gb"] > 1
    assert info["driver"] and info["cuda_driver_version"]
    assert match_gpu(info["name"]) is not None, f"{info['name']} is not in the GPU catalog"


@requires_gpu
def test_cuda_microbenchmarks_are_below_the_datasheet():
    from bench.device import describe_cuda
    from bench.microbench import run_microbenchmarks
    from estimator.hardware import match_gpu

    m = run_microbenchmarks("cuda", quick=True)
    gpu = match_gpu(describe_cuda()["name"])
    assert 0 < m["matmul_bf16_tflops"] <= gpu.peak_tflops["bf16"] * 1.05
    assert 0 < m["memory_bandwidth_gb_per_s"] <= gpu.bandwidth_gb_per_s * 1.05
