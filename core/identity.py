"""Device identity: what tells one machine apart from another, and a short stable id derived from it.

Part of ``core`` (imports nothing above it): the bench records identities, the estimator groups
runs by them, and ``predict --device cpu`` asks which CPU it runs on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import cache
from typing import Any

# What tells one device apart from another, in this order; absent keys (older records) are skipped.
IDENTITY_KEYS = {
    "cpu": ("vendor", "name", "family", "model", "stepping", "flags", "cores", "memory_gb"),
    "cuda": ("name", "count", "memory_gb", "sm_count", "driver", "cuda_driver_version", "power_limit_w"),
}

NATIVE_BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")  # without one of them bf16 is emulated (vLLM's CPU guide)


def cpu_has_native_bf16(device_info: dict[str, Any]) -> bool:
    """True where the CPU computes bf16 natively: what ``--dtype auto`` runs in bf16."""
    return any(f in (device_info.get("flags") or ()) for f in NATIVE_BF16_CPU_FEATURES)


def device_id(info: dict[str, Any]) -> str:
    """A short stable id of a device description: its kind and 8 hex digits of a hash of what identifies it.

    Memory is rounded to whole GB so that a VM reporting a few MB more or less is the same machine.
    """
    kind = info.get("kind", "cpu")
    ident: dict[str, Any] = {"kind": kind}
    for key in IDENTITY_KEYS.get(kind, ()):
        if info.get(key) is not None:
            value = info[key]
            ident[key] = round(value) if key == "memory_gb" else value
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    return f"{kind}-{digest}"


def device_label(info: dict[str, Any]) -> str:
    """How tables name a device: its name and id, so machines sold under one name stay apart."""
    return f"{info.get('name') or info.get('kind')} [{info.get('id') or device_id(info)}]"


# The CPU features that decide which kernels run: bf16 is native only with AVX-512 BF16 or AMX
# (vLLM's CPU backend emulates it otherwise, about 3x slower than fp32).
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "neon", "sve")


@cache
def _cpu_info() -> dict[str, Any]:
    """py-cpuinfo's reading (about a second: it runs a probe), once per process."""
    import cpuinfo

    return cpuinfo.get_cpu_info()


def describe_cpu() -> dict[str, Any]:
    """CPU identity and provenance from py-cpuinfo: vendor, model, family/model/stepping, features, cores, memory."""
    info = _cpu_info()
    flags = set(info.get("flags", []))
    mem_gb = None
    if hasattr(os, "sysconf"):
        try:
            mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)
        except (ValueError, OSError):
            pass
    out: dict[str, Any] = {
        "kind": "cpu",
        "name": info.get("brand_raw") or platform.processor() or "cpu",
        "vendor": info.get("vendor_id_raw"),
        "family": info.get("family"),
        "model": info.get("model"),
        "stepping": info.get("stepping"),
        "count": 1,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "arch": info.get("arch"),
        "flags": sorted(f for f in CPU_FEATURES if f in flags),
        "memory_gb": mem_gb,
    }
    out["id"] = device_id(out)
    return out
