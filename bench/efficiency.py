"""MFU and MBU of a measured configuration, counted with the estimator's model formulas.

MFU = model FLOP/s achieved / peak FLOP/s; MBU = bytes moved per second / peak bandwidth
(definitions in the reference notes). Each is given against the datasheet peak, when the
device is catalogued, and against the peaks this run's microbenchmarks measured.
"""

from __future__ import annotations

from typing import Any

from estimator.work import Work


def efficiency_fields(
    work: Work, seconds: float, peaks: dict[str, Any], measured: dict[str, Any] | None, num_gpus: int = 1
) -> dict[str, float | None]:
    """MFU/MBU against datasheet ``peaks`` (may hold None) and this run's ``measured`` peaks.

    ``peaks`` carries ``flops_per_s`` and ``bytes_per_s`` of one device; with several GPUs
    the work is shared, so peaks are multiplied by ``num_gpus``.
    """

    def ratio(amount: float, peak: float | None) -> float | None:
        if not peak or seconds <= 0:
            return None
        return round(amount / seconds / (peak * num_gpus), 5)

    m = measured or {}
    return {
        "model_tflops_per_s": round(work.flops / seconds / 1e12, 6) if seconds > 0 else None,
        "model_gb_per_s": round(work.bytes / seconds / 1e9, 4) if seconds > 0 else None,
        "mfu": ratio(work.flops, peaks.get("flops_per_s")),
        "mbu": ratio(work.bytes, peaks.get("bytes_per_s")),
        "mfu_measured_peak": ratio(work.flops, m.get("flops_per_s")),
        "mbu_measured_peak": ratio(work.bytes, m.get("bytes_per_s")),
    }
