"""The one table of precisions and weight formats: bytes per element (block scales included), the precision a
format's GEMMs compute in on a given GPU, and the short names records and catalogs use.

A weight format is stored at ``bits_per_element`` (elements plus their share of the block scales) and its GEMMs
compute either natively (``native``: the GPU needs a peak of that precision, and for FP4 the format among its
``fp4_formats``) or, where the GPU has no such tensor cores, weight-only: the weights are read at their stored size
and dequantized, the GEMM runs in ``fallback``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class _HasPeaks(Protocol):
    peak_tflops: dict[str, float]
    fp4_formats: tuple[str, ...]


@dataclass(frozen=True)
class WeightFormat:
    """How one weight format is stored and what its GEMMs compute in."""

    name: str
    bits_per_element: float  # element bits plus block scales (and zero points) per element
    native: str  # precision of the GEMMs where the GPU supports the format natively
    fallback: str  # precision of the GEMMs where it does not: weights dequantized after reading
    source: str

    @property
    def bytes_per_element(self) -> float:
        """Bytes per stored weight: bits_per_element / 8."""
        return self.bits_per_element / 8


_SERVING_RULE = "the serving model's rule (estimator.arch.gemm_precision): GEMMs in BF16, weights read as stored"
WEIGHT_FORMATS = {
    f.name: f
    for f in (
        WeightFormat("fp32", 32, "bf16", "bf16", "IEEE 754 binary32; " + _SERVING_RULE),
        WeightFormat("bf16", 16, "bf16", "bf16", "bfloat16 (1-8-7), as stored by Hugging Face checkpoints"),
        WeightFormat("fp16", 16, "bf16", "bf16", "IEEE 754 binary16; " + _SERVING_RULE + " (the same tensor-core rate)"),
        WeightFormat(
            "fp8", 8, "fp8", "bf16",
            "FP8 E4M3 (Micikevicius et al. 2022, arXiv:2209.05433); DeepSeek-V3's 128x128 FP32 block scales add 32 bits per "
            "16,384 weights (0.002 bits, left out); without FP8 tensor cores (A100) vLLM runs it weight-only (FP8 Marlin)",
        ),  # fmt: skip
        WeightFormat("int8", 8, "bf16", "bf16", "weight-only INT8 (W8A16), per-channel scales left out; " + _SERVING_RULE),
        WeightFormat(
            "int4", 4 + 16 / 128 + 4 / 128, "bf16", "bf16",
            "AWQ (Lin et al. 2023, arXiv:2306.00978) / GPTQ (Frantar et al. 2022, arXiv:2210.17323) weight-only INT4 at "
            "group size 128: one FP16 scale and one 4-bit zero point per 128 weights, 4 + 16/128 + 4/128 = 4.15625 bits "
            "(AutoAWQ's qweight/qzeros/scales layout); GEMMs dequantize to 16 bits on every GPU (Marlin kernels)",
        ),  # fmt: skip
        WeightFormat(
            "mxfp4", 4 + 8 / 32, "fp4", "bf16",
            "OCP Microscaling Formats (MX) Specification v1.0 (2023): MXFP4 = FP4 E2M1 elements with one E8M0 scale per "
            "block of 32, 4 + 8/32 = 4.25 bits; native on GPUs with MXFP4 tensor cores, else weight-only",
        ),  # fmt: skip
        WeightFormat(
            "nvfp4", 4 + 8 / 16, "fp4", "bf16",
            "NVIDIA, 'Introducing NVFP4 for Efficient and Accurate Low-Precision Inference' (developer.nvidia.com blog, "
            "2025): FP4 E2M1 elements, one FP8 E4M3 scale per block of 16 and one FP32 scale per tensor, "
            "4 + 8/16 = 4.5 bits (the per-tensor scale left out); native on Blackwell, else weight-only",
        ),  # fmt: skip
    )
}
# the precisions the serving model and the records know, by bytes per element (the weight formats less the FP4 ones)
BYTES_PER_DTYPE = {n: f.bytes_per_element for n, f in WEIGHT_FORMATS.items() if f.native != "fp4"}
SHORT_NAME = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # torch / vLLM dtype name -> short name
SERVING_WEIGHT_DTYPES = tuple(WEIGHT_FORMATS)  # every format the serving model costs (--weight-dtype of predict and plan)


def weight_format(name: str) -> WeightFormat:
    """The weight format called ``name``; unknown names list the known ones."""
    from core.errors import CatalogError

    if name not in WEIGHT_FORMATS:
        raise CatalogError(f"unknown weight format {name!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    return WEIGHT_FORMATS[name]


def has_native_support(fmt: WeightFormat, device: _HasPeaks) -> bool:
    """Whether ``device`` computes ``fmt``'s GEMMs natively: it has a peak of the native precision and, for FP4,
    lists the format among its FP4 formats (MI355X computes MXFP4, not NVFP4)."""
    if fmt.native not in device.peak_tflops:
        return False
    return fmt.native != "fp4" or fmt.name in device.fp4_formats


def compute_precision(format_name: str, device: _HasPeaks) -> str:
    """The precision whose peak bounds the GEMMs of weights stored in ``format_name`` on ``device``: the format's
    native precision where the GPU supports it, else the weight-only fallback (weights read at their stored size,
    dequantized, multiplied in BF16)."""
    fmt = weight_format(format_name)
    return fmt.native if has_native_support(fmt, device) else fmt.fallback


def kernel_dtype(run_dtype: str) -> str:
    """The short name of the kernels a run of ``run_dtype`` is timed and modelled with: fp16 runs use the bf16
    kernels' figures (the same rate on every device measured here)."""
    return "bf16" if run_dtype == "float16" else SHORT_NAME[run_dtype]
