"""Hardware catalog: one TOML file per GPU in ``core/data/gpus``, each number with its source.

Peaks are datasheet peaks (dense). Efficiency is never folded into a peak: it is measured by
``fleetcal bench`` or fitted by the calibration.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import CatalogError
from core.paths import DATA_DIR

GPU_DIR = DATA_DIR / "gpus"
PRECISIONS = ("fp8", "int8", "bf16", "fp16", "tf32", "fp32")


MAX_INPUT = 1e15  # no traffic or model input is larger; past it products of inputs overflow


def check_numbers(obj: object, names: tuple[str, ...]) -> None:
    """Every named field of ``obj`` a real number (not text, not true/false), finite and at most ``MAX_INPUT``."""
    for name in names:
        v = getattr(obj, name)
        flag = name.replace("_", "-")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise CatalogError(f"{flag} must be a number, got {v!r}")
        if not math.isfinite(v) or abs(v) > MAX_INPUT:
            raise CatalogError(f"{flag} must be a finite number of at most {MAX_INPUT:g}, got {v!r}")


@dataclass(frozen=True)
class Peaks:
    """Peak capabilities the efficiencies are relative to, for one device."""

    name: str
    flops_per_s: float
    bytes_per_s: float
    memory_bytes: float | None = None


@dataclass(frozen=True)
class Device:
    """Peak capabilities of one device (a catalogued GPU or a measured CPU).

    ``peak_tflops`` maps precision to dense peak TFLOP/s (TOPS for int8).
    ``bandwidth_gb_per_s`` is memory bandwidth in GB/s (1e9 bytes/s).
    """

    name: str
    full_name: str
    peak_tflops: dict[str, float]
    memory_gb: float
    bandwidth_gb_per_s: float
    source: str
    kind: str = "cuda"
    tdp_w: float | None = None
    nvlink_gb_per_s: float | None = None
    aliases: tuple[str, ...] = ()
    usd_per_gpu_hour: float | None = None  # a dated rental price, with its source in ``price_source``
    price_source: str | None = None

    def __post_init__(self) -> None:
        if not self.peak_tflops:
            raise CatalogError(f"{self.name}: no peak_tflops given")
        for precision, value in self.peak_tflops.items():
            if precision not in PRECISIONS:
                raise CatalogError(f"{self.name}: unknown precision {precision!r}; use one of {PRECISIONS}")
            if not value > 0:
                raise CatalogError(f"{self.name}: peak_tflops.{precision} must be > 0")
        if not self.memory_gb > 0 or not self.bandwidth_gb_per_s > 0:
            raise CatalogError(f"{self.name}: memory capacity and bandwidth must be > 0")
        if not self.source:
            raise CatalogError(f"{self.name}: every catalog entry needs a source")
        if self.usd_per_gpu_hour is not None and not (self.usd_per_gpu_hour > 0 and self.price_source):
            raise CatalogError(f"{self.name}: a price must be > 0 and carry its date and source")

    def peak_flops_per_s(self, precision: str) -> float:
        """Dense peak in FLOP/s for ``precision``; fp8 falls back to int8 (the article's A100 reading)."""
        if precision in self.peak_tflops:
            return self.peak_tflops[precision] * 1e12
        if precision == "fp8" and "int8" in self.peak_tflops:
            return self.peak_tflops["int8"] * 1e12
        if precision in ("bf16", "fp16"):
            for alt in ("bf16", "fp16"):
                if alt in self.peak_tflops:
                    return self.peak_tflops[alt] * 1e12
        raise CatalogError(f"{self.name} has no {precision} peak; it has {sorted(self.peak_tflops)}")

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gb_per_s * 1e9

    @property
    def memory_bytes(self) -> float:
        """Datasheet memory is binary: this project's H200 record (results/runs, cuda-2403e867) reads 150.75e9 bytes,
        140.4 GiB, from NVML for the datasheet's 141 GB."""
        return self.memory_gb * 2**30


def _load_gpu(path: Path) -> Device:
    try:
        data = tomllib.loads(path.read_text())
        return Device(
            name=data["name"],
            full_name=data["full_name"],
            peak_tflops={k: float(v) for k, v in data["peak_tflops"].items()},
            memory_gb=float(data["memory"]["capacity_gb"]),
            bandwidth_gb_per_s=float(data["memory"]["bandwidth_gb_per_s"]),
            source=data["source"],
            tdp_w=data.get("power", {}).get("tdp_w"),
            nvlink_gb_per_s=data.get("interconnect", {}).get("nvlink_gb_per_s"),
            aliases=tuple(data.get("aliases", ())),
            **_price(data.get("price")),
        )
    except (KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"GPU catalog file {path.name} is malformed: {exc}") from exc


def _price(price: dict[str, Any] | None) -> dict[str, Any]:
    if price is None:
        return {}
    return {"usd_per_gpu_hour": float(price["usd_per_gpu_hour"]), "price_source": f"{price['source']} (as of {price['as_of']})"}


@cache
def gpu_catalog() -> dict[str, Device]:
    """All catalogued GPUs by their short name."""
    gpus = [_load_gpu(p) for p in sorted(GPU_DIR.glob("*.toml"))]
    return {g.name: g for g in gpus}


def _key(name: str) -> str:
    return name.lower().replace("nvidia", "").replace("_", "-").replace(" ", "-").strip("-")


def get_gpu(name: str) -> Device:
    """Look a GPU up by name or alias, case-insensitively; unknown names list the close ones."""
    lookup: dict[str, Device] = {}
    for gpu in gpu_catalog().values():
        for n in (gpu.name, gpu.full_name, *gpu.aliases):
            lookup[_key(n)] = gpu
    key = _key(name)
    if key in lookup:
        return lookup[key]
    close = difflib.get_close_matches(key, list(lookup), n=4, cutoff=0.4)
    names = sorted({lookup[c].name for c in close}) or sorted(gpu_catalog())
    raise CatalogError(f"unknown GPU {name!r}; did you mean one of: {', '.join(names)}")


def match_gpu(device_name: str) -> Device | None:
    """Catalog entry for a name as the driver reports it (e.g. 'NVIDIA H100 80GB HBM3'), if any."""
    key = _key(device_name)
    candidates = []
    for gpu in gpu_catalog().values():
        for n in (gpu.name, *gpu.aliases):
            if _key(n) in key:
                candidates.append((len(_key(n)), gpu))
    if not candidates:
        return None
    if "pcie" in key:
        pcie = [c for c in candidates if "pcie" in _key(c[1].name)]
        candidates = pcie or candidates
    return max(candidates, key=lambda c: c[0])[1]
