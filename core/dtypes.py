"""The one table of precisions: bytes per element, and the short names records and catalogs use."""

from __future__ import annotations

BYTES_PER_DTYPE = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
SHORT_NAME = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # torch / vLLM dtype name -> short name
SERVING_WEIGHT_DTYPES = ("bf16", "fp16", "fp32", "fp8", "int8")  # weight precisions the serving model's GEMMs know


def kernel_dtype(run_dtype: str) -> str:
    """The short name of the kernels a run of ``run_dtype`` is timed and modelled with: fp16 runs use the bf16
    kernels' figures (the same rate on every device measured here)."""
    return "bf16" if run_dtype == "float16" else SHORT_NAME[run_dtype]
