"""Energy and cost of a measured configuration.

On an NVIDIA GPU the energy counter (NVML ``nvmlDeviceGetTotalEnergyConsumption``, millijoules
since the driver loaded, Volta and later) is read around the timed part of each configuration
only, so warm-ups and compilation do not dilute the power. On a CPU there is no such counter
here: the fields are null with the reason.
"""

from __future__ import annotations

from typing import Any

from bench.device import nvml


def energy_mj(device: str) -> list[int] | None:
    """The energy counters of every visible GPU in mJ, or None where they cannot be read."""
    if device != "cuda":
        return None
    try:
        with nvml() as pynvml:
            return [
                pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())
            ]
    except Exception:  # an old GPU or a driver without the counter: no energy figures
        return None


def joules_between(before: list[int] | None, after: list[int] | None) -> float | None:
    """Joules used by every GPU between two readings, or None where there is no counter."""
    if before is None or after is None:
        return None
    return sum(a - b for a, b in zip(after, before)) / 1000.0


def energy_fields(joules: float | None, seconds: float, tokens: float, prefill_tokens: float | None = None) -> dict[str, Any]:
    """Joules per output (or prefill) token over the timed window only: warm-ups and compilation are outside it."""
    if joules is None or seconds <= 0:
        return {"joules_per_output_token": None, "energy_note": "no energy counter on this device (NVML reads NVIDIA GPUs only)"}
    out: dict[str, Any] = {"energy_j": round(joules, 3), "power_w_mean": round(joules / seconds, 2), "energy_window": "timed"}
    if tokens:
        out["joules_per_output_token"] = round(joules / tokens, 6)
        out["output_tokens_per_s_per_watt"] = round(tokens / joules, 5) if joules > 0 else None
    if prefill_tokens:
        out["joules_per_prefill_token"] = round(joules / prefill_tokens, 6)
    return out


def cost_fields(rate: float | None, gpu_hour_usd: float | None, num_gpus: int) -> dict[str, Any]:
    """Dollars per million output tokens at ``rate`` output tokens/s on ``num_gpus`` GPUs rented at ``gpu_hour_usd``."""
    if not gpu_hour_usd or not rate:
        return {}
    return {"usd_per_million_output_tokens": round(gpu_hour_usd * num_gpus / 3600.0 / rate * 1e6, 4), "gpu_hour_usd": gpu_hour_usd}
