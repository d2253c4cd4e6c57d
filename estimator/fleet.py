"""Fleet projections: the article's scenario, then its assumptions replaced one by one.

Scenarios (each gives GPUs per catalogued GPU type):
  article      the article as published (total parameters, 50%, output tokens only, daily mean)
  active       the article's formula with active instead of total parameters
  measured     the article's formula with the measured utilization instead of 50%
  roofline     the per-operator serving model (the name is the CLI contract's): prefill and decode apart, input
               tokens with cache hits, batch limited by KV memory and a per-user speed target, peak traffic,
               whole replicas
  direct       measured tokens/s per device, where this model was measured on this device
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from core.hardware import CatalogError, Device, get_gpu
from core.models import ModelSpec, get_model
from estimator.arch import load_arch
from estimator.article import SECONDS_PER_DAY, ArticleInputs, article_gpus
from estimator.kernels import kernels_for, published_kernels
from estimator.sizing import Sizing, size_fleet
from estimator.traffic import Traffic


def roofline_fleet(model: str, gpu: Device, traffic: Traffic, ops: pd.DataFrame | None = None, peak: bool = True,
                   published_only: bool = False) -> tuple[Sizing, str]:  # fmt: skip
    """The per-operator serving model's fleet for ``traffic``: at the peak (whole instances) or the daily mean (whole GPUs)."""
    arch = load_arch(model)
    kernels, source = (published_kernels(), "published kernel figures") if published_only else kernels_for(gpu, ops, arch.fp8_block_scaled)
    sizing = size_fleet(arch, gpu, kernels, traffic, scale=traffic.peak_to_average if peak else 1.0, whole_instances=peak)
    return sizing, source


def direct_fleet(spec: ModelSpec, gpu_name: str, traffic: Traffic, runs: pd.DataFrame) -> dict[str, Any] | None:
    """GPUs from measured output tokens/s per device, where this model was measured on this device.

    Preference: serving runs of random prompts (no prefix reused from a cache: the traffic's own hit rate is not
    known to them) whose users got at least the speed target (1000 / mean TPOT, the one per-user rate); else decode runs whose
    step time met it (decode tokens/s); else throughput runs. The best rate of the first kind
    found is used, at peak traffic.
    """
    if runs is None or runs.empty:
        return None
    rows = runs[
        (runs["status"] == "ok")
        & ((runs["catalog_name"] == gpu_name) | (runs["device_name"] == gpu_name))
        & (runs["model_key"] == spec.name)
    ].copy()
    if rows.empty:
        return None
    rows["rate"] = rows["decode_tokens_per_s"].where(rows["mode"] == "decode", rows["output_tokens_per_s"])
    budget_ms = 1000.0 / traffic.tokens_per_s_per_user
    pools = (
        rows[
            (rows["mode"] == "serve")
            & rows["concurrency"].notna()
            & (rows["interactivity_tokens_per_s"] >= traffic.tokens_per_s_per_user)
            & rows["workload"].fillna("random").str.startswith("random")
        ],
        rows[(rows["mode"] == "decode") & (rows["decode_step_ms"] <= budget_ms)],
        rows[rows["mode"] == "throughput"],
    )
    pool = next((p for p in pools if not p.empty), None)
    if pool is None:
        return None
    best = pool.sort_values(["rate", "run_file"], ascending=[False, True]).iloc[0]
    num_gpus = best["num_gpus"] if pd.notna(best["num_gpus"]) and best["num_gpus"] else 1
    per_gpu = best["rate"] / num_gpus
    peak_out = traffic.output_tokens_per_s * traffic.peak_to_average
    size = best["concurrency"] if best["mode"] == "serve" else best["batch_size"]
    return {
        "gpus": math.ceil(peak_out / per_gpu),
        "tokens_per_s_per_gpu": float(per_gpu),
        "from": f"{best['mode']} at {int(size)}, {best['run_file']}",
    }


@dataclass(frozen=True)
class Inputs:
    """What every scenario may draw on: the model, the traffic, the article's assumptions and what was measured."""

    model: str
    spec: ModelSpec
    traffic: Traffic
    article: ArticleInputs
    runs: pd.DataFrame | None = None
    measured: dict[str, Any] | None = None
    ops: pd.DataFrame | None = None


ROW_KEYS = ("scenario", "gpu", "gpus", "utilization", "how", "decode_gpus", "prefill_gpus", "decode_batch", "decode_step_ms", "feasible",
            "usd_per_gpu_hour", "usd_per_day", "usd_per_million_output_tokens", "price_source")  # fmt: skip


def _article(x: Inputs, gpu: Device) -> dict[str, Any]:
    a = x.article
    return {"gpus": article_gpus(gpu, a)["gpus"], "utilization": a.utilization,
            "how": f"{a.params_per_token:.3g} params/token, output tokens only, daily mean, {_peak_label(gpu)}"}  # fmt: skip


def _active(x: Inputs, gpu: Device) -> dict[str, Any]:
    a = replace(x.article, params_per_token=float(x.spec.matmul_params))
    return {
        "gpus": article_gpus(gpu, a)["gpus"],
        "utilization": a.utilization,
        "how": f"{x.spec.matmul_params:.3g} active params/token (embedding lookup left out), daily mean, {_peak_label(gpu)}",
    }


def _measured(x: Inputs, gpu: Device) -> dict[str, Any]:
    m = x.measured
    if m is None:
        return {"how": "no measured utilization in results/"}
    a = replace(x.article, utilization=min(m["utilization"], 1.0))
    speed = f", {m['tokens_per_s_per_user']:g} tok/s per user" if m.get("tokens_per_s_per_user") else ""
    how = (f"{m['utilization']:.1%} of peak measured as the formula counts (2 x parameters x output tok/s; {m['engine']} {m['mode']} "
           f"at {m['size']}{speed}, {m['model']} on {m['device_name']}, vs its {m['against']}) in the article's formula, {_peak_label(gpu)}"
           + ("; a CPU figure, which does not transfer to a GPU" if m.get("device_kind", "cpu") == "cpu" else ""))  # fmt: skip
    return {"gpus": article_gpus(gpu, a)["gpus"], "utilization": a.utilization, "how": how}


def _roofline(x: Inputs, gpu: Device) -> dict[str, Any]:
    r, source = roofline_fleet(x.model, gpu, x.traffic, x.ops, peak=True)
    how = (
        f"per-operator serving model at peak traffic (x{x.traffic.peak_to_average:.2f}), whole instances; {source}; "
        f"decode {r.decode_batch_per_gpu} sequences per GPU ({r.limited_by}), {r.tokens_per_s_per_user:.1f} tok/s per user, "
        f"{r.decode_tokens_per_s_per_gpu:,.0f} output tok/s per GPU; prefill {r.prefill_tokens_per_s_per_gpu:,.0f} uncached tok/s per "
        f"GPU; {r.note}"
    )
    return {"gpus": r.gpus, "decode_gpus": r.decode_gpus, "prefill_gpus": r.prefill_gpus, "decode_batch": r.decode_batch_per_gpu,
            "decode_step_ms": round(r.decode_step_ms, 3), "feasible": r.feasible, "how": how,
            "utilization": round(r.mfu, 5)}  # implied MFU of the whole fleet at peak traffic  # fmt: skip


def _direct(x: Inputs, gpu: Device) -> dict[str, Any]:
    d = direct_fleet(x.spec, gpu.name, x.traffic, x.runs if x.runs is not None else pd.DataFrame())
    if d is None:
        return {"how": f"{x.spec.name} not measured on {gpu.name}"}
    return {"gpus": d["gpus"], "how": f"{d['tokens_per_s_per_gpu']:.1f} output tok/s per GPU measured ({d['from']})"}


SCENARIO_FUNCTIONS: dict[str, Callable[[Inputs, Device], dict[str, Any]]] = {
    "article": _article, "active": _active, "measured": _measured, "roofline": _roofline, "direct": _direct,
}  # fmt: skip
SCENARIOS = tuple(SCENARIO_FUNCTIONS)


def project(
    model: str = "deepseek-v3",
    gpu_names: tuple[str, ...] = ("H100", "A100"),
    scenarios: tuple[str, ...] = SCENARIOS,
    traffic: Traffic | None = None,
    article: ArticleInputs | None = None,
    runs: pd.DataFrame | None = None,
    measured: dict[str, Any] | None = None,
    ops: pd.DataFrame | None = None,
    gpu_hour_usd: float | None = None,
) -> list[dict[str, Any]]:
    """Rows of (scenario, GPU, GPUs needed, how, ...) for every scenario and GPU asked for; every row has ``ROW_KEYS``.

    A row's cost is its GPUs rented for 24 hours at ``gpu_hour_usd``, else at the catalog's dated price (none: null),
    and that per million output tokens of the day's traffic."""
    unknown = [sc for sc in scenarios if sc not in SCENARIO_FUNCTIONS]
    if unknown:
        raise CatalogError(f"unknown scenario {unknown[0]!r}; use any of {', '.join(SCENARIOS)}")
    traffic = traffic or Traffic()
    x = Inputs(model, get_model(model), traffic, article or traffic.article_inputs(), runs, measured, ops)
    rows: list[dict[str, Any]] = []
    for name in gpu_names:
        gpu = get_gpu(name)
        for sc in scenarios:
            row = {**dict.fromkeys(ROW_KEYS), "scenario": sc, "gpu": gpu.name, "how": "", **SCENARIO_FUNCTIONS[sc](x, gpu)}
            rows.append({**row, **fleet_cost(row["gpus"], gpu, traffic, gpu_hour_usd)})
    return rows


def gpu_price(gpu: Device, gpu_hour_usd: float | None = None) -> tuple[float | None, str | None]:
    """(dollars per GPU-hour, where that comes from): ``gpu_hour_usd`` where given, else the catalog's dated price (or none)."""
    return (gpu_hour_usd, "--gpu-hour-usd") if gpu_hour_usd is not None else (gpu.usd_per_gpu_hour, gpu.price_source)


def price_notes(gpu_names: tuple[str, ...], gpu_hour_usd: float | None = None) -> list[str]:
    """One "GPU: $x per GPU-hour, source" line per GPU that has a price."""
    priced = [(g.name, *gpu_price(g, gpu_hour_usd)) for g in map(get_gpu, gpu_names)]
    return [f"{name}: ${price:.2f} per GPU-hour, {source}" for name, price, source in priced if price is not None]


def fleet_cost(gpus: float | None, gpu: Device, traffic: Traffic, gpu_hour_usd: float | None = None) -> dict[str, Any]:
    """Dollars a day for ``gpus`` GPUs rented around the clock, and per million output tokens of the traffic's day."""
    price, source = gpu_price(gpu, gpu_hour_usd)
    if price is None or gpus is None:
        return {"usd_per_gpu_hour": price, "price_source": source}
    per_day = gpus * price * 24
    return {
        "usd_per_gpu_hour": price,
        "usd_per_day": round(per_day, 2),
        "usd_per_million_output_tokens": round(per_day / (traffic.output_tokens_per_s * SECONDS_PER_DAY / 1e6), 6),
        "price_source": source,
    }


def _peak_label(gpu: Device) -> str:
    if "fp8" in gpu.peak_tflops:
        return f"FP8 {gpu.peak_tflops['fp8']:g} TFLOPS"
    int8, bf16 = gpu.peak_tflops.get("int8", 0), gpu.peak_tflops["bf16"]
    return f"no FP8: INT8 {int8:g} TOPS as the article reads it (BF16 {bf16:g} would double the count)"
