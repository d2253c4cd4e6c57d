"""What is served and how it is laid out: an architecture at its serving precision, and one instance's GPUs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.hardware import CatalogError, Device
from core.models import get_model, model_catalog, resolve_model_key
from core.shapes import Shapes


@dataclass(frozen=True)
class Arch:
    """An architecture's shapes plus what the serving model needs beyond them."""

    shapes: Shapes
    weight_dtype: str  # of the linear layers' weights as served (DeepSeek-V3: fp8)
    fp8_block_scaled: bool = False  # FP8 weights in scaled blocks (DeepSeek-V3: 128 x 128), served by block-scaled GEMM kernels

    @property
    def mtp_modules(self) -> int:
        """Multi-token-prediction modules in the checkpoint."""
        return self.shapes.mtp_modules

    def mtp_served(self, mtp_tokens: int) -> int:
        """MTP modules held on the GPUs when ``mtp_tokens`` extra tokens are drafted per step: all of the checkpoint's, or none."""
        return self.mtp_modules if mtp_tokens else 0


# What core reads of an architecture (core/shapes.py) that the serving model does not cost yet, by the name the
# description gives it (an attention kind, a weight format, a feature). load_arch refuses a model that has any, rather
# than answer as if it had none; an entry goes when layer_ops, memory and planning cost it.
NOT_YET_COSTED = {
    "sliding": "sliding-window attention",
    "chunked": "chunked local attention",
    "linear": "linear attention (gated DeltaNet)",
    "mamba": "Mamba-2 layers",
    "none": "blocks without attention",
    "sinks": "attention sinks",
    "mxfp4": "MXFP4 weights",
    "nvfp4": "NVFP4 weights",
    "int4": "INT4 weights",
}


def not_yet_costed(s: Shapes, weight_dtype: str) -> list[str]:
    """The features of ``s`` served at ``weight_dtype`` that the serving model does not cost yet (NOT_YET_COSTED)."""
    present = set(s.layer_kinds) | {weight_dtype} | ({"sinks"} if s.details.sinks else set())
    return [what for feature, what in NOT_YET_COSTED.items() if feature in present]


def load_arch(model: str, weight_dtype: str | None = None) -> Arch:
    """The architecture of a catalogued model or a config directory, served at ``weight_dtype`` (default: its own);
    one line naming what it has that the serving model does not cost yet (``not_yet_costed``), rather than an answer."""
    key, spec = resolve_model_key(model), get_model(model)
    dtype = weight_dtype or spec.weight_dtype
    missing = not_yet_costed(spec.shapes, dtype)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise CatalogError(f"{spec.name}: {', '.join(missing)} {verb} read but not yet modelled by the serving model")
    block = bool(key) and model_catalog()[key].get("fp8_scaling") == "block" and dtype == "fp8"
    return Arch(spec.shapes, dtype, block)


@dataclass(frozen=True)
class Layout:
    """How one serving instance spreads the model over its GPUs."""

    num_gpus: int
    tp: int = 1  # tensor parallelism of attention, dense FFN and shared experts
    ep: int = 1  # expert parallelism: routed experts spread over this many GPUs
    dp_attention: bool = False  # each GPU attends its own sequences; non-routed weights replicated
    redundant_experts: int = 0
    gpus_per_node: int = 8
    step_tokens: int = 0  # prefill tokens per GPU per step this layout is run at; 0: the service's

    def __post_init__(self) -> None:
        if self.num_gpus < 1 or self.tp < 1 or self.ep < 1 or self.num_gpus % self.tp or self.ep > self.num_gpus:
            raise CatalogError(
                f"layout: {self.num_gpus} GPUs cannot hold TP {self.tp} and EP {self.ep}; TP must divide the GPU count, EP at most it"
            )
        if self.dp_attention and self.tp != 1:
            raise CatalogError("layout: data-parallel attention runs with TP 1")


def gemm_precision(gpu: Device, weight_dtype: str) -> str:
    """GEMMs compute in FP8 where weights are FP8 and the GPU has FP8; elsewhere in BF16 (weights read as stored)."""
    return "fp8" if weight_dtype == "fp8" and "fp8" in gpu.peak_tflops else "bf16"


def experts_per_gpu(s: Shapes, layout: Layout) -> int:
    return math.ceil((s.num_experts + layout.redundant_experts) / layout.ep) if s.num_experts else 0
