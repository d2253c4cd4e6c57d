"""One micro-batch on one GPU, what every operator is sized by, the operators a step's breakdown is keyed by, and the cost
of one operator: FLOPs and bytes per layer, the precision whose peak bounds its compute, the efficiency it runs at
(kernels.py) and the layers that run it. A GEMM reads its component's weights at the bytes of the format they are served
in and computes at that format's precision on the GPU (core/dtypes.compute_precision: native FP8 or FP4, else BF16 with
the weights dequantized after reading)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property

from core.dtypes import WEIGHT_FORMATS
from core.hardware import Device
from core.shapes import Shapes
from estimator.arch import Arch, Layout, gemm_precision
from estimator.engine_kernels import database_format
from estimator.kernels import Eff, Kernels


class Op(StrEnum):
    """The operators (and the rest of a step) a breakdown is keyed by: a renamed one fails where it is used, not zero."""

    ATTENTION_PROJECTIONS = "attention projections"
    ATTENTION = "attention"
    MIXER_PROJECTIONS = "mixer projections"  # linear-attention and Mamba-2 layers' in and out projections
    LINEAR_ATTENTION = "linear attention"  # gated DeltaNet's state update
    MAMBA_SCAN = "Mamba-2 scan"
    DENSE_FFN = "dense FFN"
    SHARED_EXPERTS = "shared experts"
    ROUTER = "router"
    ROUTED_EXPERTS = "routed experts"
    FFN_ACTIVATION = "FFN activation"
    NORMS = "norms and residuals"
    LM_HEAD = "LM head and sampling"
    MTP_MODULE = "MTP module"
    COMMUNICATION = "communication (not hidden)"
    SMS_LENT = "SMs lent to communication"
    KERNEL_LAUNCHES = "kernel launches"
    SCHEDULER = "scheduler (CPU, not overlapped)"
    PIPELINE_TRANSFER = "pipeline transfer"  # activations sent between pipeline stages


@dataclass(frozen=True)
class OpCost:
    """One operator's work in one layer (once, for the LM head) and the layers that run it."""

    name: Op
    flops: float
    nbytes: float
    precision: str  # whose peak bounds its compute: fp8 or bf16
    eff: Eff
    layers: float


@dataclass(frozen=True)
class Batch:
    """One micro-batch on one GPU: what the operators are sized by."""

    a: Arch
    gpu: Device
    layout: Layout
    k: Kernels
    phase: str  # decode or prefill
    tokens: float
    seqs: float
    context: float
    q_per_seq: float  # query tokens per sequence (decode: 1 + MTP drafts)
    kv_dtype: str
    uncached_share: float  # prefill: share of each prompt not served from cache
    prompt_len: float = 0.0  # prefill: tokens of each prompt (its uncached share follows the cached prefix)

    @cached_property
    def s(self) -> Shapes:
        return self.a.shapes

    @cached_property
    def gp(self) -> str:
        """The GEMM precision of the weights' headline format (what the router reads its input at)."""
        return gemm_precision(self.gpu, self.a.weight_dtype)

    @cached_property
    def m(self) -> float:
        """Tokens through a TP group's GEMMs."""
        return self.tokens * self.layout.tp

    def fmt(self, component: str) -> tuple[str, float, str]:
        """(format, bytes per weight, GEMM precision) of a linear component as served on this GPU."""
        fmt = self.a.format_of(component)
        return fmt, WEIGHT_FORMATS[fmt].bytes_per_element, gemm_precision(self.gpu, fmt)

    def gemm(self, name: Op, kk: int, nn: int, layers: float, mm: float | None = None, component: str = "attention",
             split: int | None = None, row_parallel: bool = False) -> OpCost:  # fmt: skip
        """A (mm × kk) by (kk × nn) GEMM of ``component``'s weights, split ``split`` ways (default: over the TP group),
        read at their format's bytes and computed at its precision on this GPU. Column-parallel (default) splits the
        outputs N; ``row_parallel`` (the attention output and FFN down projections, whose partial sums the all-reduce adds)
        splits the inputs K, as vLLM's RowParallelLinear and TensorRT-LLM's TensorParallelMode.ROW do: each GPU runs an
        (mm × K / TP) by (K / TP × N) GEMM, the shape its kernel is timed at."""
        mm = self.m if mm is None else mm
        fmt, wb, prec = self.fmt(component)
        ways, ab = self.layout.tp if split is None else split, activation_bytes(prec)
        k_, n_ = (kk / ways, nn) if row_parallel else (kk, nn / ways)
        flops, nbytes = 2 * mm * k_ * n_, k_ * n_ * wb + mm * k_ * ab + mm * n_ * 2
        measured = database_format(fmt, prec, self.a.fp8_block_scaled)  # the format measured kernels are named by
        eff = self.k.gemm(self.gpu, mm, n_, k_, measured, gemm_class(prec, wb), prec, flops, nbytes, k_ * ab + n_ * 2)
        return OpCost(name, flops, nbytes, prec, eff, layers)

    def borrowed(self, cls: str, what: str) -> Eff:
        """Operator class ``cls``'s efficiency for an operator with no published figure of its own, saying so."""
        e = self.k.figure(cls)
        return replace(e, source=f"borrowed from {cls} ({what}): {e.source}")

    def swiglu(self, rows: float, width: float, layers: float, component: str) -> OpCost:
        """SwiGLU between an FFN's two GEMMs: reads the gate and up outputs (2 x width, BF16), writes width values in the
        down projection's input precision (FP8 fused into the same kernel, as serving engines fuse silu_and_mul and quant)."""
        ab = activation_bytes(self.fmt(component)[2])
        return OpCost(Op.FFN_ACTIVATION, 0.0, rows * width * (2 * 2.0 + ab), "bf16", self.k.elementwise(rows), layers)


def gemm_class(precision: str, weight_bytes: float, grouped: bool = False) -> str:
    """The operator class of a GEMM at ``precision`` whose weights take ``weight_bytes`` each: native FP8 (gemm, or
    DeepGEMM's grouped figures for the experts), native FP4 (gemm_fp4), weight-only (narrower weights dequantized into a
    BF16 GEMM: gemm_weight_only, Marlin and Machete), else BF16 (gemm_bf16, grouped_gemm)."""
    if precision == "fp4":
        return "gemm_fp4"
    if precision == "bf16" and weight_bytes < 2.0:
        return "gemm_weight_only"
    return "grouped_gemm" if grouped else "gemm" if precision == "fp8" else "gemm_bf16"


def activation_bytes(precision: str) -> float:
    """Bytes per GEMM activation element: FP8 where the GEMMs run in FP8, NVFP4 (4.5 bits with its block scales) where
    they run in FP4 (W4A4), else BF16."""
    return {"fp8": 1.0, "fp4": WEIGHT_FORMATS["nvfp4"].bytes_per_element}.get(precision, 2.0)
