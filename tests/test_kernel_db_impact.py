"""scripts/kernel_db_impact.py: the serving model with operator costs taken from the measured database at run time only. A
GEMM family takes exactly the database's latencies; the model is itself again outside the context; a GPU the database does
not hold (H800) is predicted as today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from core.hardware import get_gpu
from estimator import kernel_db as kdb
from estimator import layer_ops as lo
from estimator.arch import Layout, load_arch
from estimator.kernels import published_kernels
from estimator.serving import step
from estimator.validation import load_rows, validate

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kernel_db_impact.py"


@pytest.fixture(scope="module")
def impact():
    spec = importlib.util.spec_from_file_location("kernel_db_impact", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _decode(batch: int = 64):
    """Llama-3.1-8B (FP8) on one H200: a decode step at ``batch`` sequences over 1,152 tokens."""
    arch, gpu = load_arch("llama-3.1-8b", "fp8"), get_gpu("H200")
    return step(arch, gpu, Layout(1, tp=1), published_kernels(), "decode", batch_per_gpu=batch, context=1152, kv_dtype="fp8")


def test_inside_the_context_the_dense_ffn_takes_the_databases_gemm_latencies(impact):
    """The FFN's two GEMMs (gate_up 4,096 -> 28,672, down 14,336 -> 4,096) at M = 64, over 32 layers: the sum of the two
    looked-up latencies, to the rounding of the step's breakdown (4 decimals of a ms)."""
    impact.STATE["engine"] = ("trtllm", "1.0.0")
    with impact.database({"gemm"}):
        st = _decode()
    want = 32 * sum(kdb.gemm("H200", "trtllm", "fp8", 64, n, k, "1.0.0").ms for k, n in ((4096, 28672), (14336, 4096)))
    assert st.breakdown_ms["dense FFN"] == pytest.approx(want, abs=1e-4)
    assert "AIConfigurator" in st.op_sources["dense FFN"] and "system h200_sxm, backend trtllm 1.3.0rc20" in st.op_sources["dense FFN"]


def test_outside_the_context_the_model_is_itself_again(impact):
    before = _decode()
    impact.STATE["engine"] = ("trtllm", None)
    with impact.database(set(impact.FAMILIES)):
        during = _decode()
    after = _decode()
    assert lo.Batch.gemm is impact.ORIGINAL["gemm"] and lo.communication is impact.ORIGINAL["communication"]
    assert after.breakdown_ms == before.breakdown_ms and during.breakdown_ms != before.breakdown_ms


def test_a_row_on_a_gpu_the_database_does_not_hold_is_predicted_as_today(impact):
    rows = [r for r in load_rows()[0] if r.gpu == "H800"]
    assert rows, "validation.toml holds H800 rows (DeepSeek's own figures)"
    today = validate(rows)
    assert impact.predict(rows, None, set(impact.FAMILIES))["predicted"].tolist() == today["predicted"].tolist()
