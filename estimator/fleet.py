"""Fleet projections: the article's scenario, then its assumptions replaced one by one.

Scenarios (each gives GPUs per catalogued GPU type):
  article      the article as published (total parameters, 50%, output tokens only, daily mean)
  active       the article's formula with active instead of total parameters
  measured     the article's formula with the measured utilization instead of 50%
  roofline     calibrated roofline: prefill and decode apart, input tokens with cache hits, batch
               limited by KV memory and a per-user speed target, peak traffic, whole replicas
  direct       measured tokens/s per device, where this model was measured on this device
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import pandas as pd

from estimator.article import SECONDS_PER_DAY, ArticleInputs, article_gpus
from estimator.hardware import CatalogError, Device, check_numbers, get_gpu
from estimator.kernels import kernels_for, published_kernels
from estimator.models import ModelSpec, get_model
from estimator.serving import load_arch
from estimator.sizing import Service, Sizing, size_fleet

SCENARIOS = ("article", "active", "measured", "roofline", "direct")
KV_DTYPES = ("bf16", "fp8")  # KV-cache precisions the serving model knows


@dataclass(frozen=True)
class Traffic:
    """Traffic and service-level inputs; defaults are the article's traffic with DeepSeek's published ratios."""

    daily_visits: float = 1e8
    questions_per_visit: float = 10
    tokens_per_reply: float = 1_000
    input_tokens_per_output_token: float = 608 / 168  # DeepSeek day-6: 608e9 input / 168e9 output tokens
    cache_hit_rate: float = 342 / 608  # DeepSeek day-6: 342e9 of 608e9 input tokens hit the on-disk KV cache
    peak_to_average: float = 278 / 226.75  # DeepSeek day-6: peak / average nodes
    tokens_per_s_per_user: float = 20.0  # DeepSeek day-6: 20-22 output tokens/s per user
    decode_context_len: float = 4_989  # DeepSeek day-6: average KV length per output token
    memory_headroom: float = 0.9  # fraction of GPU memory usable for weights + KV cache
    kv_dtype: str = "bf16"

    def __post_init__(self) -> None:
        check_numbers(self, tuple(f.name for f in fields(self) if f.name != "kv_dtype"))
        if self.kv_dtype not in KV_DTYPES:
            raise CatalogError(f"kv-dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}")
        for f in ("daily_visits", "questions_per_visit", "tokens_per_reply", "tokens_per_s_per_user", "decode_context_len"):
            if not getattr(self, f) > 0:
                raise CatalogError(f"{f.replace('_', '-')} must be positive, got {getattr(self, f)}")
        if self.input_tokens_per_output_token < 0:
            raise CatalogError("input-tokens-per-output-token must be >= 0")
        if not 0 <= self.cache_hit_rate < 1:
            raise CatalogError(f"cache-hit-rate must be in [0, 1), got {self.cache_hit_rate}")
        if self.peak_to_average < 1:
            raise CatalogError(f"peak-to-average must be >= 1, got {self.peak_to_average}")
        if not 0 < self.memory_headroom <= 1:
            raise CatalogError(f"memory-headroom must be in (0, 1], got {self.memory_headroom}")

    @property
    def output_tokens_per_s(self) -> float:
        """Daily-mean output tokens per second."""
        return self.daily_visits * self.questions_per_visit * self.tokens_per_reply / SECONDS_PER_DAY

    @property
    def prompt_len(self) -> float:
        return self.input_tokens_per_output_token * self.tokens_per_reply


def service_of(traffic: Traffic, mtp_tokens: int = 1) -> Service:
    """The serving targets of a traffic description."""
    return Service(
        tokens_per_user=traffic.tokens_per_s_per_user, decode_context=traffic.decode_context_len, prompt_len=traffic.prompt_len,
        cached_fraction=traffic.cache_hit_rate, mtp_tokens=mtp_tokens, kv_dtype=traffic.kv_dtype, memory_headroom=traffic.memory_headroom,
    )  # fmt: skip


def roofline_fleet(model: str, gpu: Device, traffic: Traffic, ops: pd.DataFrame | None = None, peak: bool = True,
                   published_only: bool = False) -> tuple[Sizing, str]:  # fmt: skip
    """The per-operator serving model's fleet for ``traffic``: at the peak (whole instances) or the daily mean (whole GPUs)."""
    arch = load_arch(model)
    kernels, source = (published_kernels(), "published kernel figures") if published_only else kernels_for(gpu, ops)
    factor = traffic.peak_to_average if peak else 1.0
    out = traffic.output_tokens_per_s * factor
    sizing = size_fleet(arch, gpu, kernels, out, out * traffic.input_tokens_per_output_token, service_of(traffic), whole_instances=peak)
    return sizing, source


def direct_fleet(spec: ModelSpec, gpu_name: str, traffic: Traffic, runs: pd.DataFrame) -> dict[str, Any] | None:
    """GPUs from measured output tokens/s per device, where this model was measured on this device.

    Preference: serving runs whose users got at least the speed target; else decode runs whose
    step time met it (decode tokens/s); else throughput runs. The best rate of the first kind
    found is used, at peak traffic.
    """
    if runs is None or runs.empty:
        return None
    rows = runs[(runs["status"] == "ok") & ((runs["catalog_name"] == gpu_name) | (runs["device_name"] == gpu_name)) & (runs["model_key"] == spec.name)].copy()
    if rows.empty:
        return None
    rows["rate"] = rows["decode_tokens_per_s"].where(rows["mode"] == "decode", rows["output_tokens_per_s"])
    budget_ms = 1000.0 / traffic.tokens_per_s_per_user
    pools = (
        rows[(rows["mode"] == "serve") & (rows["output_tokens_per_s_per_user"] >= traffic.tokens_per_s_per_user)],
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
    return {"gpus": math.ceil(peak_out / per_gpu), "tokens_per_s_per_gpu": float(per_gpu), "from": f"{best['mode']} at {int(size)}, {best['run_file']}"}


def project(
    model: str = "deepseek-v3",
    gpu_names: tuple[str, ...] = ("H100", "A100"),
    scenarios: tuple[str, ...] = SCENARIOS,
    traffic: Traffic | None = None,
    article: ArticleInputs | None = None,
    runs: pd.DataFrame | None = None,
    fits: list[Any] | None = None,
    measured: dict[str, Any] | None = None,
    ops: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Rows of (scenario, GPU, GPUs needed, how) for every scenario and GPU asked for."""
    traffic = traffic or Traffic()
    spec = get_model(model)
    article = article or ArticleInputs(
        daily_visits=traffic.daily_visits, questions_per_visit=traffic.questions_per_visit, tokens_per_reply=traffic.tokens_per_reply
    )
    rows: list[dict[str, Any]] = []
    for name in gpu_names:
        gpu = get_gpu(name)
        for sc in scenarios:
            row: dict[str, Any] = {"scenario": sc, "gpu": gpu.name, "gpus": None, "utilization": None, "how": ""}
            if sc == "article":
                r = article_gpus(gpu, article)
                row.update(gpus=r["gpus"], utilization=article.utilization, how=f"{article.params_per_token:.3g} params/token, output tokens only, daily mean, {_peak_label(gpu)}")
            elif sc == "active":
                a = replace(article, params_per_token=float(active_matmul_params(spec)))
                row.update(gpus=article_gpus(gpu, a)["gpus"], utilization=a.utilization,
                           how=f"{active_matmul_params(spec):.3g} active params/token (embedding lookup left out), daily mean, {_peak_label(gpu)}")  # fmt: skip
            elif sc == "measured":
                if measured is None:
                    row["how"] = "no measured utilization in results/"
                else:
                    a = replace(article, utilization=min(measured["utilization"], 1.0))
                    row.update(
                        gpus=article_gpus(gpu, a)["gpus"], utilization=a.utilization,
                        how=(f"MFU {measured['utilization']:.1%} measured ({measured['engine']} {measured['mode']}, {measured['model']} on {measured['device_name']}, "
                             f"vs {measured['against']}) in the article's formula, {_peak_label(gpu)}"
                             + ("; a CPU figure, which does not transfer to a GPU" if measured.get("device_kind", "cpu") == "cpu" else "")),
                    )  # fmt: skip
            elif sc == "roofline":
                r, source = roofline_fleet(model, gpu, traffic, ops, peak=True)
                row.update(
                    gpus=r.gpus, decode_gpus=r.decode_gpus, prefill_gpus=r.prefill_gpus, decode_batch=r.decode_batch_per_gpu,
                    decode_step_ms=round(r.decode_step_ms, 3), feasible=r.feasible,
                    how=(f"per-operator serving model at peak traffic (x{traffic.peak_to_average:.2f}), whole instances; {source}; "
                         f"decode {r.decode_batch_per_gpu} sequences per GPU ({r.limited_by}), {r.tokens_per_s_per_user:.1f} tok/s per user, "
                         f"{r.decode_tokens_per_s_per_gpu:,.0f} output tok/s per GPU; prefill {r.prefill_tokens_per_s_per_gpu:,.0f} uncached tok/s per GPU; {r.note}"),
                )  # fmt: skip
                row["utilization"] = round(r.mfu, 5)  # implied MFU of the whole fleet at peak traffic
            elif sc == "direct":
                d = direct_fleet(spec, gpu.name, traffic, runs if runs is not None else pd.DataFrame())
                if d is None:
                    row["how"] = f"{spec.name} not measured on {gpu.name}"
                else:
                    row.update(gpus=d["gpus"], how=f"{d['tokens_per_s_per_gpu']:.1f} output tok/s per GPU measured ({d['from']})")
            else:
                raise CatalogError(f"unknown scenario {sc!r}; use any of {', '.join(SCENARIOS)}")
            rows.append(row)
    return rows


def active_matmul_params(spec: ModelSpec) -> float:
    """Active parameters that multiply per token: the input embedding is a lookup, not a matrix product."""
    return spec.active_params - (spec.embedding_params if not spec.tied_embeddings else 0)


def _peak_label(gpu: Device) -> str:
    if "fp8" in gpu.peak_tflops:
        return f"FP8 {gpu.peak_tflops['fp8']:g} TFLOPS"
    return f"no FP8: INT8 {gpu.peak_tflops.get('int8', 0):g} TOPS as the article reads it (BF16 {gpu.peak_tflops['bf16']:g} would double the count)"


def traffic_fields() -> list[str]:
    return [f.name for f in fields(Traffic)]
