"""Operator classes this project measured on a GPU (``fleetcal bench --mode ops``, results/runs), as efficiencies of the
serving model's operator classes (estimator/kernels.py decides where they count).

A measured efficiency stands for an operator class only where the measured kernel is the kind production serving uses:
dense GEMMs (cuBLAS through ``torch.matmul`` / ``torch._scaled_mm``), causal prefill attention (PyTorch's flash/cuDNN
SDPA) and norms. MLA decode attention (measured as two bmm, not FlashMLA) and fp8 grouped GEMMs (measured as a loop, not
DeepGEMM's grouped kernel) are not measured here, nor is communication (one GPU cannot measure an all-to-all). A measured
dense GEMM is a curve over its rows M. Efficiencies never cross from a CPU to a GPU, nor between GPU architectures.
"""

from __future__ import annotations

import pandas as pd

from core.hardware import Device, all_gpus
from estimator.eff import Eff

# measured operator -> the class it can stand for (and the precision whose record counts)
MEASURED_STANDS_FOR = {
    ("gemm", "fp8"): "gemm",
    ("gemm", "bf16"): "gemm_bf16",
    ("attention_prefill", "bf16"): "attention_prefill",
    ("rmsnorm", "bf16"): "elementwise",
}
# The engines whose own kernel for a class is the one this project measures, so that a measurement of the GPU itself comes
# before the engine's figures in the measured database. The BF16 GEMM measured here is torch.matmul (bench/ops.py), cuBLAS:
# what vLLM's and SGLang's unquantized linear layers call (torch.nn.functional.linear: vLLM's
# vllm/model_executor/layers/utils.py default_unquantized_gemm, SGLang's UnquantizedLinearMethod.apply; the database names
# their kernels torch.nn.functional.linear and sglang_torch_linear). TensorRT-LLM's PyTorch-flow GEMM is its own op, and the
# FP8 GEMM measured here (torch._scaled_mm, row-wise scales) is neither vLLM's CUTLASS scaled_mm nor TensorRT-LLM's: none.
SAME_KERNEL = {"gemm_bf16": ("vllm", "sglang")}


def measured_on(ops: pd.DataFrame | None, gpu: Device) -> bool:
    """Whether ``ops`` hold operators measured on ``gpu`` itself (a catalogued GPU of its name), not a sibling of its
    architecture."""
    return ops is not None and not ops.empty and bool((ops["catalog_name"] == gpu.name).any())


def measured_efficiencies(ops: pd.DataFrame, gpu: Device) -> dict[str, Eff]:
    """Operator classes measured on a GPU of ``gpu``'s architecture (itself first), from operator records.

    compute: the best datasheet MFU over the shapes; memory: the best datasheet MBU. GEMMs also keep their
    curve over M (median over layers at each M), which the serving model reads at each GEMM's own M.
    Only catalogued GPUs count: their efficiencies are against datasheets.
    """
    if ops is None or ops.empty:
        return {}
    same = ops[ops["catalog_name"] == gpu.name]
    if same.empty and gpu.architecture:
        arch_of = {name: g.architecture for name, g in all_gpus().items()}  # each GPU file's architecture field
        same = ops[ops["catalog_name"].map(arch_of.get) == gpu.architecture]
    out: dict[str, Eff] = {}
    for (op, dtype), cls in MEASURED_STANDS_FOR.items():
        g = same[(same["operator"] == op) & (same["dtype"] == dtype)]
        if g.empty or g["mfu"].isna().all():
            continue
        curve: tuple[tuple[float, float, float], ...] = ()
        if op == "gemm":
            med = g.groupby("m")[["mfu", "mbu"]].median().dropna()
            compute, memory = float(med["mfu"].max()), float(med["mbu"].max())
            # at each M only the resource that bound it follows the curve; the other keeps its best (a compute-bound
            # GEMM's low MBU says nothing of the bandwidth it could reach, nor a memory-bound one's MFU of its FLOP/s)
            curve = tuple(
                (
                    float(m),
                    min(float(r.mfu) if r.mfu / compute >= r.mbu / memory else compute, 1.0),
                    min(memory if r.mfu / compute >= r.mbu / memory else float(r.mbu), 1.0),
                )
                for m, r in med.iterrows()
                if m > 0
            )
        else:
            compute, memory = float(g["mfu"].max()), float(g["mbu"].max())
        devices = ", ".join(sorted(set(g["device_name"])))
        out[cls] = Eff(
            min(compute, 1.0), min(memory, 1.0), f"measured: {op} {dtype} on {devices} ({len(g)} shapes, results/runs)", devices, curve
        )
    return out
