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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from core.deployments import reference_deployment
from core.errors import UsageError
from core.hardware import CatalogError, Device, get_gpu
from core.models import ModelSpec, get_model, model_catalog, resolve_model_key
from estimator.arch import load_arch
from estimator.article import ArticleInputs, article_gpus, tokens_per_s
from estimator.percentile import Traffic
from estimator.percentile_fleet import roofline_by_percentile
from estimator.planning import Rejection
from estimator.provisioning import usd_per_day, usd_per_million_output_tokens
from estimator.sizing import Sizing, note, size_fleet
from estimator.traffic import Request


def roofline_fleet(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None = None, peak: bool = True,
                   published_only: bool = False) -> Sizing | Rejection:  # fmt: skip
    """The per-operator serving model's fleet for ``r`` (estimator/sizing.py, plan's path): at its peak in whole instances,
    or at its daily mean in whole GPUs; ``published_only``: on published kernel figures, none measured swapped in."""
    at = r if peak else replace(r, peak_to_average=1.0)
    return size_fleet(model, gpu, at, None if published_only else ops, whole_instances=peak)


def direct_fleet(spec: ModelSpec, gpu_name: str, r: Request, runs: pd.DataFrame) -> dict[str, Any] | None:
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
    speed = r.tokens_per_s_per_user or 0.0
    budget_ms = r.tpot_ms or float("inf")
    pools = (
        rows[
            (rows["mode"] == "serve")
            & rows["concurrency"].notna()
            & (rows["interactivity_tokens_per_s"] >= speed)
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
    peak_out = r.output_tokens_per_s * r.peak_to_average
    size = best["concurrency"] if best["mode"] == "serve" else best["batch_size"]
    return {
        "gpus": math.ceil(peak_out / per_gpu),
        "tokens_per_s_per_gpu": float(per_gpu),
        "from": f"{best['mode']} at {int(size)}, {best['run_file']}",
    }


def article_params(model: str) -> float:
    """Parameters per token in the article's formula for ``model``: the catalog's published total (DeepSeek-V3: 671e9, the
    article's own figure), else the count of its config."""
    key = resolve_model_key(model)
    published = model_catalog()[key].get("published_total_params") if key else None
    return float(published) if published else float(get_model(model).total_params)


def article_inputs(model: str = "deepseek-v3", **assumptions: Any) -> ArticleInputs:
    """The article's inputs for ``model``: its volume and assumptions, the model's own parameters unless given."""
    return ArticleInputs(**{"params_per_token": article_params(model), **assumptions})


def default_request(model: str, article: ArticleInputs) -> Request:
    """The article's volume (output tokens a day) served as DeepSeek's day-6 requests were (core/data/deployments.toml): its
    token-weighted lengths, cache hits, per-user speed and peak over average; as many drafted tokens as ``model`` has MTP
    modules."""
    d = reference_deployment()
    return Request(model, d.input_len, d.output_len, tokens_per_s(article) / d.output_len, d.peak_to_average, None,
                   1000 / d.tokens_per_s_per_user, d.cache_hit_rate, "bf16", get_model(model).shapes.mtp_modules)  # fmt: skip


@dataclass(frozen=True)
class Inputs:
    """What every scenario may draw on: the model, the traffic, the article's assumptions and what was measured."""

    model: str
    spec: ModelSpec
    request: Request
    article: ArticleInputs
    runs: pd.DataFrame | None = None
    measured: dict[str, Any] | None = None
    ops: pd.DataFrame | None = None
    traffic: Traffic | None = None  # roofline sized by simulated latency percentiles under this traffic


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
    if x.traffic is not None:
        return roofline_by_percentile(x.model, gpu, x.request, x.ops, x.traffic)
    r = roofline_fleet(x.model, gpu, x.request, x.ops, peak=True)
    head = f"per-operator serving model at peak traffic (x{x.request.peak_to_average:.2f}), whole instances"
    if isinstance(r, Rejection):
        return {"feasible": False, "how": f"{head}: no layout meets the limits ({r.text})"}
    how = f"{head}; {r.kernels_source}; {note(r, load_arch(x.model, r.option.weight_dtype), gpu, x.request)}"
    return {"gpus": r.gpus, "decode_gpus": r.decode_gpus, "prefill_gpus": r.prefill_gpus, "decode_batch": r.option.point.batch_per_gpu,
            "decode_step_ms": round(r.steps[0].seconds * 1000, 3), "feasible": True, "how": how,
            "utilization": round(r.mfu, 5)}  # implied MFU of the whole fleet at peak traffic  # fmt: skip


def _direct(x: Inputs, gpu: Device) -> dict[str, Any]:
    d = direct_fleet(x.spec, gpu.name, x.request, x.runs if x.runs is not None else pd.DataFrame())
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
    request: Request | None = None,
    article: ArticleInputs | None = None,
    runs: pd.DataFrame | None = None,
    measured: dict[str, Any] | None = None,
    ops: pd.DataFrame | None = None,
    prices: Mapping[str, float] | None = None,
    traffic: Traffic | None = None,
) -> list[dict[str, Any]]:
    """Rows of (scenario, GPU, GPUs needed, how, ...) for every scenario and GPU asked for; every row has ``ROW_KEYS``.

    A row's cost is its GPUs rented for 24 hours at the price ``prices`` gives it, else at the catalog's dated price (none: null),
    and that per million output tokens of the day's traffic."""
    unknown = [sc for sc in scenarios if sc not in SCENARIO_FUNCTIONS]
    if unknown:
        raise CatalogError(f"unknown scenario {unknown[0]!r}; use any of {', '.join(SCENARIOS)}")
    article = article or article_inputs(model)
    request = request or default_request(model, article)
    x = Inputs(model, get_model(model), request, article, runs, measured, ops, traffic)
    rows: list[dict[str, Any]] = []
    for name in gpu_names:
        gpu = get_gpu(name)
        for sc in scenarios:
            row = {**dict.fromkeys(ROW_KEYS), "scenario": sc, "gpu": gpu.name, "how": "", **SCENARIO_FUNCTIONS[sc](x, gpu)}
            rows.append({**row, **fleet_cost(row["gpus"], gpu, request.output_tokens_per_s, prices)})
    return rows


def parse_gpu_prices(text: str) -> dict[str, float]:
    """Dollars per GPU-hour from ``2.5`` (every GPU: key "*") or ``H100=2.5,A100-80GB=1.2`` (catalog names or aliases,
    resolved), each above 0 and at most 10,000; a UsageError saying what to give otherwise."""
    prices: dict[str, float] = {}
    for part in [x.strip() for x in text.split(",") if x.strip()] or [""]:
        name, _, value = part.rpartition("=")
        try:
            price = float(value)
        except ValueError:
            raise UsageError(f"--gpu-hour-usd {text!r}: give a price (e.g. 2.5) or GPU=price pairs (e.g. H100=2.5,A100=1.2)") from None
        if not 0 < price <= 1e4:  # nan fails both comparisons
            raise UsageError(f"--gpu-hour-usd must be a price in dollars above 0 and at most 10000, got {value}")
        prices[get_gpu(name).name if name else "*"] = price
    return prices


def gpu_price(gpu: Device, prices: Mapping[str, float] | None = None) -> tuple[float | None, str | None]:
    """(dollars per GPU-hour, where that comes from): the price given for this GPU (or for every GPU) with --gpu-hour-usd,
    else the catalog's dated price, else none."""
    given = (prices or {}).get(gpu.name, (prices or {}).get("*"))
    return (given, "--gpu-hour-usd") if given is not None else (gpu.usd_per_gpu_hour, gpu.price_source)


def price_notes(gpu_names: tuple[str, ...], prices: Mapping[str, float] | None = None) -> list[str]:
    """One "GPU: $x per GPU-hour, source" line per GPU, "no price" where neither the catalog nor --gpu-hour-usd gives one."""
    priced = [(g.name, *gpu_price(g, prices)) for g in map(get_gpu, gpu_names)]
    return [f"{name}: ${price:.2f} per GPU-hour, {source}" if price is not None else f"{name}: no price (give --gpu-hour-usd {name}=...)"
            for name, price, source in priced]  # fmt: skip


def fleet_cost(gpus: float | None, gpu: Device, output_tokens_per_s: float, prices: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Dollars a day for ``gpus`` GPUs rented around the clock, and per million output tokens of the day's traffic."""
    price, source = gpu_price(gpu, prices)
    if price is None or gpus is None:
        return {"usd_per_gpu_hour": price, "price_source": source}
    per_day = usd_per_day(gpus, price)
    return {
        "usd_per_gpu_hour": price,
        "usd_per_day": round(per_day, 2),
        "usd_per_million_output_tokens": round(usd_per_million_output_tokens(per_day, output_tokens_per_s), 6),
        "price_source": source,
    }


def _peak_label(gpu: Device) -> str:
    if "fp8" in gpu.peak_tflops:
        return f"FP8 {gpu.peak_tflops['fp8']:g} TFLOPS"
    int8, bf16 = gpu.peak_tflops.get("int8", 0), gpu.peak_tflops["bf16"]
    return f"no FP8: INT8 {int8:g} TOPS as the article reads it (BF16 {bf16:g} would double the count)"
