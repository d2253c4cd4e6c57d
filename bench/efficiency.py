"""MFU and MBU of a measured configuration, counted with the estimator's model formulas.

MFU = model FLOP/s achieved / peak FLOP/s; MBU = bytes moved per second / peak bandwidth
(definitions in the reference notes). Each is given against the datasheet peak, when the
device is catalogued, and against the peaks this run's microbenchmarks measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.hardware import Peaks
from core.work import Work


@dataclass(frozen=True)
class MeasureContext:
    """What every configuration of one sweep is measured with."""

    seed: int = 0
    budget_s: float = 0.0  # seconds per offline configuration when no prompt count is given
    device: str = "cpu"
    datasheet: Peaks | None = None  # of one device, when catalogued in the run's precision
    measured: Peaks | None = None  # this run's microbenchmark peaks
    num_gpus: int = 1


def datasheet_peaks(recorded: dict[str, Any]) -> Peaks | None:
    """The run header's ``datasheet_peaks`` as Peaks; None where the device or its precision is not catalogued."""
    if not recorded.get("flops_per_s") or not recorded.get("bytes_per_s"):
        return None
    return Peaks(recorded["catalog_name"], recorded["flops_per_s"], recorded["bytes_per_s"])


def efficiency_fields(
    work: Work, seconds: float, datasheet: Peaks | None, measured: Peaks | None, num_gpus: int = 1
) -> dict[str, float | None]:
    """MFU/MBU against the ``datasheet`` peaks of one device and this run's ``measured`` peaks (either may be None).

    With several GPUs the work is shared, so datasheet peaks are multiplied by ``num_gpus``.
    """

    def ratio(amount: float, peak: float | None) -> float | None:
        if not peak or seconds <= 0:
            return None
        return round(amount / seconds / (peak * num_gpus), 5)

    return {
        "model_tflops_per_s": round(work.flops / seconds / 1e12, 6) if seconds > 0 else None,
        "model_gb_per_s": round(work.bytes / seconds / 1e9, 4) if seconds > 0 else None,
        "mfu": ratio(work.flops, datasheet.flops_per_s if datasheet else None),
        "mbu": ratio(work.bytes, datasheet.bytes_per_s if datasheet else None),
        "mfu_measured_peak": ratio(work.flops, measured.flops_per_s if measured else None),
        "mbu_measured_peak": ratio(work.bytes, measured.bytes_per_s if measured else None),
    }
