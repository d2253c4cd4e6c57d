"""The GPU file format, checked field by field: one TOML file per GPU, in the catalog (``core/data/gpus``) or a
user's own (``--gpu-file``, ``$FLEETCAL_GPU_DIR``). A wrong field is one line naming the file and the field.

    name, full_name, aliases, vendor, architecture, source, fp4_formats (where the GPU has an fp4 peak), notes
    [peak_tflops]   dense peak per precision (TOPS for int8): fp8, int8, bf16, fp16, tf32, fp32, fp4
    [memory]        capacity_gb, bandwidth_gb_per_s, kind
    [power]         tdp_w
    [interconnect]  kind (nvlink | infinity-fabric | pcie), gb_per_s (per GPU, both directions added),
                    domain_gpus (GPUs of one scale-up domain), source
    [price]         usd_per_gpu_hour, as_of, source, tier (optional table)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from core.errors import CatalogError

PRECISIONS = ("fp8", "int8", "bf16", "fp16", "tf32", "fp32", "fp4")
VENDORS = ("nvidia", "amd")
FP4_FORMATS = ("nvfp4", "mxfp4")
LINKS = ("nvlink", "infinity-fabric", "pcie")
_IDENT = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TOP = {"name", "full_name", "aliases", "vendor", "architecture", "source", "fp4_formats", "notes",
        "peak_tflops", "memory", "power", "interconnect", "price"}  # fmt: skip
_TABLES = {
    "memory": ({"capacity_gb", "bandwidth_gb_per_s"}, {"kind", "source"}),
    "power": ({"tdp_w"}, {"source"}),
    "interconnect": ({"kind", "gb_per_s", "domain_gpus"}, {"source"}),
    "price": ({"usd_per_gpu_hour", "as_of", "source"}, {"tier"}),
}


class _Fields:
    """Reads fields of one file, each wrong one raised as ``GPU file <label>: <field> ...``."""

    def __init__(self, data: dict[str, Any], label: str) -> None:
        self.data, self.label = data, label

    def fail(self, field: str, problem: str) -> CatalogError:
        return CatalogError(f"GPU file {self.label}: {field} {problem}")

    def get(self, field: str, required: bool = True) -> Any:
        node: Any = self.data
        for part in field.split("."):
            if not isinstance(node, dict) or part not in node:
                if required:
                    raise self.fail(field, "is missing")
                return None
            node = node[part]
        return node

    def text(self, field: str, required: bool = True) -> str | None:
        v = self.get(field, required)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise self.fail(field, f"must be a non-empty string, got {v!r}")
        return v

    def number(self, field: str, required: bool = True) -> float | None:
        v = self.get(field, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e9:
            raise self.fail(field, f"must be a number above 0, got {v!r}")
        return float(v)

    def choice(self, field: str, allowed: tuple[str, ...]) -> str:
        v = self.text(field)
        if v not in allowed:
            raise self.fail(field, f"must be one of {', '.join(allowed)}, got {v!r}")
        return v

    def strings(self, field: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        v = self.get(field, required=False) or []
        if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
            raise self.fail(field, f"must be a list of strings, got {v!r}")
        bad = [s for s in v if allowed is not None and s not in allowed]
        if bad:
            raise self.fail(field, f"has {bad[0]!r}; use {', '.join(allowed or ())}")
        return tuple(v)


def read_gpu_file(path: Path) -> dict[str, Any]:
    """The keyword arguments of ``core.hardware.Device`` that ``path`` describes, every field checked."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"GPU file {path}: cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"GPU file {path}: is not valid TOML ({str(exc).splitlines()[0]})") from exc
    return device_fields(data, str(path))


def _check_keys(f: _Fields) -> None:
    unknown = sorted(set(f.data) - _TOP)
    if unknown:
        raise f.fail(unknown[0], f"is not a field of a GPU file; the fields are {', '.join(sorted(_TOP))}")
    for table, (required, optional) in _TABLES.items():
        sub = f.data.get(table)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise f.fail(table, "must be a table ([" + table + "])")
        extra = sorted(set(sub) - required - optional)
        if extra:
            raise f.fail(f"{table}.{extra[0]}", f"is not a field of [{table}]; use {', '.join(sorted(required | optional))}")


def _peaks(f: _Fields) -> dict[str, float]:
    peaks = f.get("peak_tflops")
    if not isinstance(peaks, dict) or not peaks:
        raise f.fail("peak_tflops", "must be a table of dense peaks, e.g. bf16 = 989.4")
    for precision in peaks:
        if precision not in PRECISIONS:
            raise f.fail(f"peak_tflops.{precision}", f"is not a precision; use {', '.join(PRECISIONS)}")
    return {p: f.number(f"peak_tflops.{p}") for p in peaks}  # type: ignore[misc]


def _identity(f: _Fields) -> dict[str, Any]:
    arch = f.text("architecture")
    if not _IDENT.match(arch or ""):
        raise f.fail("architecture", f"must be a lowercase name such as hopper, blackwell or cdna3, got {arch!r}")
    return {
        "name": f.text("name"),
        "full_name": f.text("full_name"),
        "aliases": f.strings("aliases"),
        "vendor": f.choice("vendor", VENDORS),
        "architecture": arch,
        "source": f.text("source"),
        "fp4_formats": f.strings("fp4_formats", FP4_FORMATS),
    }


def device_fields(data: dict[str, Any], label: str) -> dict[str, Any]:
    """Keyword arguments of ``Device`` from one parsed GPU file; ``label`` names the file in errors."""
    f = _Fields(data, label)
    _check_keys(f)
    out = _identity(f)
    out["peak_tflops"] = _peaks(f)
    if ("fp4" in out["peak_tflops"]) != bool(out["fp4_formats"]):
        raise f.fail("fp4_formats", "must list the FP4 formats (nvfp4, mxfp4) exactly when peak_tflops has fp4")
    domain = f.get("interconnect.domain_gpus")
    if isinstance(domain, bool) or not isinstance(domain, int) or domain < 1:
        raise f.fail("interconnect.domain_gpus", f"must be a whole number of GPUs of at least 1, got {domain!r}")
    out.update(
        memory_gb=f.number("memory.capacity_gb"),
        bandwidth_gb_per_s=f.number("memory.bandwidth_gb_per_s"),
        tdp_w=f.number("power.tdp_w", required=False),
        scaleup_link=f.choice("interconnect.kind", LINKS),
        scaleup_gb_per_s=f.number("interconnect.gb_per_s"),
        scaleup_domain_gpus=domain,
    )
    if f.get("price", required=False) is not None:
        out["usd_per_gpu_hour"] = f.number("price.usd_per_gpu_hour")
        out["price_source"] = f"{f.text('price.source')} (as of {f.text('price.as_of')})"
    return out
