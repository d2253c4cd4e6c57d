"""Which floating-point precision a run computes in, chosen by what the device does natively.

vLLM's CPU backend runs fp32 and bf16; bf16 is native only where the CPU has AVX-512 BF16 or AMX
(vLLM's CPU installation guide), and emulated elsewhere, measured about 3x slower than fp32 on an
AVX2-only machine. GPUs of compute capability 8.0 and above (A100, H100, ...) run bf16 natively;
older ones run fp16.
"""

from __future__ import annotations

from typing import Any

from core.errors import UsageError
from core.identity import NATIVE_BF16_CPU_FEATURES, cpu_has_native_bf16

DTYPES = ("auto", "bfloat16", "float16", "float32")


def choose_dtype(requested: str, device_info: dict[str, Any]) -> tuple[str, str]:
    """(dtype, reason): ``requested`` unless it is 'auto', then what the device runs natively."""
    if requested not in DTYPES:
        raise UsageError(f"--dtype {requested}: unknown; use one of {', '.join(DTYPES)}")
    if requested != "auto":
        return requested, "asked for with --dtype"
    if device_info.get("kind") == "cuda":
        cc = device_info.get("compute_capability")
        if cc is None or float(cc) >= 8.0:
            return "bfloat16", f"auto: this GPU (compute capability {cc or 'unknown'}) runs bf16 natively"
        return "float16", f"auto: compute capability {cc} has no native bf16"
    if cpu_has_native_bf16(device_info):
        found = [f for f in NATIVE_BF16_CPU_FEATURES if f in device_info["flags"]]
        return "bfloat16", f"auto: the CPU has {' and '.join(found)} (native bf16)"
    return "float32", "auto: the CPU has neither AVX-512 BF16 nor AMX, so bf16 would be emulated (about 3x slower than fp32)"
