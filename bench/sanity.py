"""Sanity bounds on measured records: a record that breaks one keeps its raw figures but becomes ``suspect``.

Suspect records are kept in the run file (with the reason) and printed as warnings; calibration,
the ``measured`` scenario and the README's key figures use only records with status ``ok``.
"""

from __future__ import annotations

from typing import Any

from core.records import MODELS, Mode
from core.schema import role_fields

# A measured peak below these is a failed measurement (a stalled or emulated kernel), not a device:
# even a single core of the smallest CPU this runs on does more than 1 GFLOP/s and 1 GB/s.
MIN_PLAUSIBLE_TFLOPS = 1e-3
MIN_PLAUSIBLE_GB_PER_S = 1.0
DURATION_KEYS = role_fields("duration")  # elapsed_s, decode_step_ms, time_to_first_token_ms, duration_s, ... (core/records.py)


def microbench_problems(rec: dict[str, Any]) -> list[str]:
    """Why a microbenchmark's peaks cannot be used, if they cannot."""
    out = []
    dtype = rec.get("peak_dtype", "bf16")
    tflops = rec.get("matmul_tflops", rec.get("matmul_bf16_tflops"))
    if tflops is None or not tflops >= MIN_PLAUSIBLE_TFLOPS:
        out.append(f"measured {dtype} matmul peak {tflops} TFLOP/s is implausible (below {MIN_PLAUSIBLE_TFLOPS})")
    bw = rec.get("memory_bandwidth_gb_per_s")
    if bw is None or not bw >= MIN_PLAUSIBLE_GB_PER_S:
        out.append(f"measured copy bandwidth {bw} GB/s is implausible (below {MIN_PLAUSIBLE_GB_PER_S})")
    return out


def record_problems(rec: dict[str, Any]) -> list[str]:
    """Why a measured configuration cannot be believed: a utilization above 100%, a duration not above zero."""
    if rec.get("mode") == "microbench":
        return microbench_problems(rec)
    out = []
    # shares of a peak: an operator at a small shape can beat the one-size microbenchmark (caches), so for an operator
    # case only the datasheet's bound holds (OpsRecord gives its measured-peak shares no role)
    for key in role_fields("utilization", MODELS[Mode(rec["mode"])]):
        value = rec.get(key)
        if value is not None and value > 1.0:
            out.append(f"{key} {value:.1%} exceeds 100% of the peak it is measured against")
    for key in DURATION_KEYS:
        value = rec.get(key)
        if value is not None and value <= 0:
            out.append(f"{key} {value} is not positive")
    return out


def checked(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` unchanged when it passes, else marked ``suspect`` with the reasons (raw figures kept)."""
    if rec.get("status") != "ok":
        return rec
    problems = record_problems(rec)
    if not problems:
        return rec
    return {**rec, "status": "suspect", "reason": "; ".join(problems)}
