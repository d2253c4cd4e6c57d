"""A step's time as the simulator reads it: the serving model's table against the model itself on sampled points, and the
CPU step model's mixed step against its decode and prefill steps (cpu_steps.decode_ops / prefill_ops)."""

from __future__ import annotations

import numpy as np
import pytest

from core.hardware import get_gpu
from core.paths import RESULTS_DIR
from estimator.arch import Layout, load_arch
from estimator.cpu_steps import CHUNK_TOKENS, Overhead, build_curves, decode_ops, prefill_ops
from estimator.kernels import kernels_for
from estimator.operators import load_ops
from estimator.sim.cpu import CpuSteps
from estimator.sim.gpu import GpuSteps


@pytest.fixture(scope="module")
def ops():
    return load_ops(RESULTS_DIR)


@pytest.mark.parametrize(("model", "gpu", "tp"), [("llama-3.1-8b", "H100", 1), ("llama-3.1-70b", "H100", 4), ("qwen2.5-7b", "A100", 1)])
def test_the_step_table_stays_within_a_percent_of_the_serving_model(ops, model, gpu, tp):
    """300 random steps (batch, mean KV, chunk tokens, chunk context) over the whole range an engine runs: the table's
    error against the model's own step (two model calls, 86 us each) is under 0.1% at the median and 1% at worst
    (linear interpolation between grid points; decode is linear in KV, so the error is the batch axis's)."""
    a, g = load_arch(model), get_gpu(gpu)
    k, _ = kernels_for(g, ops, a.fp8_block_scaled)
    budget, seqs = (8192, 1024) if gpu == "H100" else (2048, 256)
    s = GpuSteps(a, g, Layout(tp, tp=tp), k, budget=budget, max_seqs=seqs, max_context=131072)
    rng, errors = np.random.default_rng(0), []
    for _ in range(300):
        b = int(rng.integers(0, seqs + 1))
        kv = b * float(np.exp(rng.uniform(0, np.log(30_000))))
        c = int(rng.integers(1, budget - b + 1)) if b == 0 or rng.random() < 0.5 else 0
        x = float(np.exp(rng.uniform(np.log(c / 2), np.log(60_000)))) if c else 0.0
        errors.append(abs(s(b, kv, c, x) / s.exact(b, kv, c, x) - 1))
    assert np.median(errors) < 1e-3 and max(errors) < 1e-2


def test_a_mixed_gpu_step_is_the_decode_step_plus_its_chunk_at_the_full_budget_rate(ops):
    """As fleetcal plan prices aggregated serving: b decoding sequences and c prompt tokens take the decode step plus
    c tokens at the rate of a prefill step of the whole budget; no decoding sequence: a prefill step of the c tokens."""
    a, g = load_arch("llama-3.1-8b"), get_gpu("H100")
    k, _ = kernels_for(g, ops, a.fp8_block_scaled)
    s = GpuSteps(a, g, Layout(1), k, budget=8192, max_seqs=1024, max_context=131072)
    assert s.exact(32, 32 * 2000, 1000, 500) == pytest.approx(s.decode_exact(32, 2000) + 1000 * s.prefill_exact(8192, 500) / 8192)
    assert s.exact(0, 0, 1000, 500) == s.prefill_exact(1000, 500) < s.exact(1, 1, 1000, 500)


def _cpu(ops):
    mine = ops["device_name"].str.contains(r"\[cpu-") & ops["impl"].fillna("").str.startswith("vllm") & (ops["model"] == "smollm2-360m")
    curves = build_curves(ops, ops.loc[mine, "device_name"].iloc[0], "smollm2-360m", "bf16")  # a CPU that timed this model
    return curves, Overhead("decode", 0.004, 0.0003, 8)


def test_the_cpu_mixed_step_is_the_cpu_step_model_at_its_ends(ops):
    """No chunk: cpu_steps.decode_ops plus the overhead; no decoding sequence and one prompt: prefill_ops of batch 1."""
    curves, over = _cpu(ops)
    s = CpuSteps(curves, over, CHUNK_TOKENS)
    for b, ctx in ((1, 128), (32, 1000), (256, 700)):
        assert s(b, b * ctx, 0, 0.0) == pytest.approx(sum(decode_ops(curves, b, ctx).values()) + over.per_step + over.per_sequence * b)
    for prompt in (16, 512, 2048):
        parts, chunks = prefill_ops(curves, 1, prompt)
        assert chunks == 1
        assert s(0, 0, prompt, prompt / 2) == pytest.approx(sum(parts.values()) + over.per_step + over.per_sequence)
    assert s(32, 32 * 1000, 512, 256) > s(32, 32 * 1000, 0, 0.0), "a chunk costs time"
