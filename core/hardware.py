"""Hardware catalog: one TOML file per GPU in ``core/data/gpus``, each number with its source, and a user's own GPU
files outside the package (``--gpu-file FILE``, and every ``*.toml`` of ``$FLEETCAL_GPU_DIR``, else
``~/.config/fleetcal/gpus``), checked like the catalog (``core.gpu_schema``).

Peaks are datasheet peaks (dense). Efficiency is never folded into a peak: it is measured by
``fleetcal bench`` or fitted by the calibration.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import CatalogError
from core.gpu_schema import PRECISIONS, read_gpu_file
from core.paths import DATA_DIR

GPU_DIR = DATA_DIR / "gpus"
USER_GPU_DIR_ENV = "FLEETCAL_GPU_DIR"
USER_GPU_DIR = Path("~/.config/fleetcal/gpus")
_user_gpus: dict[str, Device] = {}  # the user's GPUs of this invocation (use_gpu_files), by short name


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
    """Peak capabilities of one device (a catalogued GPU, a user's GPU file, or a measured CPU).

    ``peak_tflops`` maps precision to dense peak TFLOP/s (TOPS for int8).
    ``bandwidth_gb_per_s`` is memory bandwidth in GB/s (1e9 bytes/s).
    ``scaleup_gb_per_s`` is the scale-up link (NVLink, Infinity Fabric or PCIe) per GPU, both directions added, as
    NVIDIA's datasheets count NVLink (H100: 18 links x 50 GB/s = 900); ``scaleup_domain_gpus`` GPUs share it.
    ``architecture`` (hopper, blackwell, cdna3, ...) decides where measured efficiencies may cross: only within one.
    """

    name: str
    full_name: str
    peak_tflops: dict[str, float]
    memory_gb: float
    bandwidth_gb_per_s: float
    source: str
    kind: str = "cuda"
    tdp_w: float | None = None
    scaleup_gb_per_s: float | None = None
    aliases: tuple[str, ...] = ()
    usd_per_gpu_hour: float | None = None  # a dated rental price, with its source in ``price_source``
    price_source: str | None = None
    architecture: str = ""
    vendor: str = "nvidia"
    fp4_formats: tuple[str, ...] = ()  # the FP4 block formats its tensor cores compute (nvfp4, mxfp4)
    scaleup_link: str = "nvlink"
    scaleup_domain_gpus: int = 8
    origin: str = "catalog"  # where it was read: the catalog, or the user's file

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
    def nvlink_gb_per_s(self) -> float | None:
        """The scale-up bandwidth per GPU, both directions (the serving model's TP all-reduce reads one direction of
        it), whatever the link: NVLink, Infinity Fabric, or PCIe where a GPU has no scale-up fabric."""
        return self.scaleup_gb_per_s

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gb_per_s * 1e9

    @property
    def memory_bytes(self) -> float:
        """Datasheet memory is binary: this project's H200 record (results/runs, cuda-2403e867) reads 150.75e9 bytes,
        140.4 GiB, from NVML for the datasheet's 141 GB."""
        return self.memory_gb * 2**30

    def figures(self) -> dict[str, Any]:
        """What makes two files the same GPU: every datasheet figure (names, sources and price aside)."""
        keep = ("peak_tflops", "memory_gb", "bandwidth_gb_per_s", "tdp_w", "scaleup_gb_per_s", "architecture", "vendor",
                "fp4_formats", "scaleup_link", "scaleup_domain_gpus")  # fmt: skip
        return {k: getattr(self, k) for k in keep}


def load_gpu(path: Path, origin: str = "catalog") -> Device:
    """One GPU file, every field checked (``core.gpu_schema``); a wrong one is one line naming file and field."""
    return Device(**read_gpu_file(path), origin=origin)


@cache
def gpu_catalog() -> dict[str, Device]:
    """All catalogued GPUs (the package's own files) by their short name."""
    gpus = [load_gpu(p) for p in sorted(GPU_DIR.glob("*.toml"))]
    return {g.name: g for g in gpus}


def _key(name: str) -> str:
    return name.lower().replace("nvidia", "").replace("_", "-").replace(" ", "-").strip("-")


def _names(gpu: Device) -> tuple[str, ...]:
    return (gpu.name, gpu.full_name, *gpu.aliases)


def all_gpus() -> dict[str, Device]:
    """The catalog and the user's GPUs of this invocation (``use_gpu_files``), by short name."""
    return {**gpu_catalog(), **_user_gpus}


def user_gpu_dir() -> Path | None:
    """``$FLEETCAL_GPU_DIR`` (which must be a directory), else ``~/.config/fleetcal/gpus`` where it exists."""
    given = os.environ.get(USER_GPU_DIR_ENV)
    if given:
        if not Path(given).expanduser().is_dir():
            raise CatalogError(f"{USER_GPU_DIR_ENV}={given} is not a directory; point it at a folder of GPU .toml files")
        return Path(given).expanduser()
    default = USER_GPU_DIR.expanduser()
    return default if default.is_dir() else None


def _differing(a: Device, b: Device) -> str:
    fa, fb = a.figures(), b.figures()
    return next(k for k in fa if fa[k] != fb[k])


def _admit(gpu: Device, known: dict[str, Device]) -> bool:
    """Whether ``gpu`` is new; a name or alias that is already taken passes only for the same GPU (same figures)."""
    for other in known.values():
        taken = {_key(n) for n in _names(other)} & {_key(n) for n in _names(gpu)}
        if not taken:
            continue
        if gpu.figures() == other.figures():
            return False
        raise CatalogError(
            f"GPU file {gpu.origin}: name {gpu.name!r} is taken by {other.name} ({other.origin}) with another "
            f"{_differing(gpu, other)}; give the file a new name (and aliases) or the same figures"
        )
    return True


def use_gpu_files(paths: Sequence[Path] | None = None) -> tuple[Device, ...]:
    """Read the user's GPU directory and the ``--gpu-file`` files, check them like the catalog, and make them the
    user's GPUs of this invocation (replacing any earlier ones); returns those added."""
    folder = user_gpu_dir()
    files = [*(sorted(folder.glob("*.toml")) if folder else []), *(Path(p) for p in paths or ())]
    known, added = dict(gpu_catalog()), {}
    for path in files:
        gpu = load_gpu(path, origin=str(path))
        if _admit(gpu, known):
            known[gpu.name] = added[gpu.name] = gpu
    _user_gpus.clear()
    _user_gpus.update(added)
    return tuple(added.values())


def add_gpu_file_arg(p: argparse.ArgumentParser) -> None:
    """``--gpu-file FILE`` (repeatable) on a planner command; its ``main`` calls ``use_gpu_files(args.gpu_file)``."""
    p.add_argument(
        "--gpu-file",
        action="append",
        type=Path,
        metavar="FILE",
        help=f"a GPU not in the catalog, described in a TOML file like core/data/gpus/h100-sxm.toml (repeatable); the "
        f"*.toml files of ${USER_GPU_DIR_ENV} (default {USER_GPU_DIR}) are read too",
    )


def get_gpu(name: str) -> Device:
    """Look a GPU up by name or alias, case-insensitively, in the catalog and the user's GPUs; unknown names list
    the close ones."""
    lookup: dict[str, Device] = {}
    for gpu in all_gpus().values():
        for n in _names(gpu):
            lookup[_key(n)] = gpu
    key = _key(name)
    if key in lookup:
        return lookup[key]
    close = difflib.get_close_matches(key, list(lookup), n=4, cutoff=0.4)
    names = sorted({lookup[c].name for c in close}) or sorted(all_gpus())
    raise CatalogError(f"unknown GPU {name!r}; did you mean one of: {', '.join(names)} (or describe it in a --gpu-file)")


def match_gpu(device_name: str) -> Device | None:
    """Catalog entry for a name as the driver reports it (e.g. 'NVIDIA H100 80GB HBM3'), if any."""
    key = _key(device_name)
    candidates = []
    for gpu in all_gpus().values():
        for n in (gpu.name, *gpu.aliases):
            if _key(n) in key:
                candidates.append((len(_key(n)), gpu))
    if not candidates:
        return None
    if "pcie" in key:
        pcie = [c for c in candidates if "pcie" in _key(c[1].name)]
        candidates = pcie or candidates
    return max(candidates, key=lambda c: c[0])[1]
