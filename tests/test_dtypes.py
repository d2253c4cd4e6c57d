"""Weight formats as data (core/dtypes.py): bytes per element with the block scales, each derived here by hand from
the format's definition, and the precision their GEMMs compute in on GPUs with and without native support."""

from __future__ import annotations

import pytest

from core.dtypes import BYTES_PER_DTYPE, SERVING_WEIGHT_DTYPES, WEIGHT_FORMATS, compute_precision
from core.errors import CatalogError
from core.hardware import get_gpu, gpu_catalog
from estimator.arch import gemm_precision


@pytest.mark.parametrize(
    ("name", "bytes_per_element"),
    [
        # OCP MX v1.0: a block of 32 FP4 (E2M1) elements, 32 x 4 bits, shares one 8-bit E8M0 scale: (128 + 8) / 32 bits
        ("mxfp4", (32 * 4 + 8) / 32 / 8),
        # NVFP4: a block of 16 E2M1 elements shares one FP8 E4M3 scale: (64 + 8) / 16 bits (the per-tensor FP32 scale
        # is 32 bits per tensor of millions of weights, left out)
        ("nvfp4", (16 * 4 + 8) / 16 / 8),
        # AWQ/GPTQ INT4 at group size 128: 128 x 4 bits, one FP16 scale, one 4-bit zero point: (512 + 16 + 4) / 128 bits
        ("int4", (128 * 4 + 16 + 4) / 128 / 8),
        ("fp8", 1.0),
        ("int8", 1.0),
        ("bf16", 2.0),
        ("fp16", 2.0),
        ("fp32", 4.0),
    ],
)
def test_bytes_per_element_include_the_block_scales(name, bytes_per_element):
    assert WEIGHT_FORMATS[name].bytes_per_element == pytest.approx(bytes_per_element, rel=1e-12)
    assert WEIGHT_FORMATS[name].source


def test_bits_per_element_as_the_formats_state_them():
    assert [WEIGHT_FORMATS[n].bits_per_element for n in ("mxfp4", "nvfp4", "int4")] == [4.25, 4.5, 4.15625]


@pytest.mark.parametrize(
    ("fmt", "gpu", "precision"),
    [
        ("mxfp4", "B200", "fp4"),  # Blackwell: MXFP4 and NVFP4 tensor cores
        ("nvfp4", "B200", "fp4"),
        ("nvfp4", "RTX-PRO-6000", "fp4"),
        ("mxfp4", "MI355X", "fp4"),  # CDNA 4 computes the OCP MX formats
        ("nvfp4", "MI355X", "bf16"),  # ... but not NVIDIA's: weight-only there
        ("mxfp4", "H100", "bf16"),  # Hopper has no FP4: weight-only (gpt-oss on H100)
        ("mxfp4", "MI300X", "bf16"),
        ("fp8", "H100", "fp8"),
        ("fp8", "A100", "bf16"),  # no FP8 tensor cores: FP8 weights dequantized (FP8 Marlin)
        ("fp8", "L40S", "fp8"),  # Ada has FP8
        ("int4", "B200", "bf16"),  # AWQ/GPTQ are weight-only everywhere
        ("bf16", "MI355X", "bf16"),
    ],
)
def test_compute_precision_native_or_weight_only(fmt, gpu, precision):
    assert compute_precision(fmt, get_gpu(gpu)) == precision


def test_existing_formats_compute_as_the_serving_model_computes_them_today():
    """The one table agrees with estimator.arch.gemm_precision wherever the serving model already costs a format, so
    the serving model can read it without moving a figure."""
    for gpu in gpu_catalog().values():
        for fmt in SERVING_WEIGHT_DTYPES:
            assert compute_precision(fmt, gpu) == gemm_precision(gpu, fmt), (fmt, gpu.name)


def test_every_format_is_a_serving_weight_dtype():
    """The serving model costs every weight format (FP4 natively where the GPU has FP4 tensor cores, weight-only
    elsewhere): --weight-dtype of predict and plan lists them all; an unknown one is refused by name."""
    assert set(SERVING_WEIGHT_DTYPES) == set(WEIGHT_FORMATS) >= {"mxfp4", "nvfp4", "int4"}
    assert "mxfp4" not in BYTES_PER_DTYPE and "nvfp4" not in BYTES_PER_DTYPE  # records and KV caches keep their own names
    with pytest.raises(CatalogError, match="unknown weight format 'fp6'"):
        compute_precision("fp6", get_gpu("B200"))
