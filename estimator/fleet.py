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
from estimator.hardware import CatalogError, Device, get_gpu
from estimator.models import ModelSpec, flops_per_token, get_model, kv_cache_bytes_per_token, weight_bytes
from estimator.roofline import Efficiency, Peaks, decode_step, prefill_batch, published_efficiencies

SCENARIOS = ("article", "active", "measured", "roofline", "direct")


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
    max_replica_gpus: int = 256

    def __post_init__(self) -> None:
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


def compute_precision(gpu: Device, weight_dtype: str) -> str:
    """FP8 weights compute in FP8 where the GPU has it; elsewhere (A100) in BF16 with FP8 weights unpacked."""
    if weight_dtype == "fp8" and "fp8" in gpu.peak_tflops:
        return "fp8"
    return "bf16"


@dataclass(frozen=True)
class RooflineResult:
    gpus: int
    replica_gpus: int
    decode_gpus: int
    prefill_gpus: int
    decode_batch: int
    decode_step_ms: float
    decode_tokens_per_s_per_gpu: float
    decode_bound: str
    limited_by: str  # what capped the batch: 'speed target', 'kv memory' or 'max batch'
    feasible: bool
    mfu: float  # model FLOPs at peak traffic / (fleet size × peak FLOP/s)
    note: str


def min_replica_gpus(spec: ModelSpec, gpu: Device, headroom: float) -> int:
    """Smallest power-of-two GPU count whose memory holds the weights."""
    n = 1
    while weight_bytes(spec) > headroom * gpu.memory_bytes * n:
        n *= 2
    return n


def roofline_fleet(spec: ModelSpec, gpu: Device, traffic: Traffic, eff: dict[str, Efficiency]) -> RooflineResult:
    """GPUs needed at peak traffic, decode and prefill sized apart, whole replicas.

    Decode: for each replica size (powers of two from the smallest that holds the weights),
    the largest batch whose step time keeps every user at ``tokens_per_s_per_user`` and whose
    KV cache fits beside the weights; the replica size with the most tokens/s per GPU wins.
    Prefill: uncached input tokens at the prefill efficiency, in replicas of the smallest size.
    """
    precision = compute_precision(gpu, spec.weight_dtype)
    peaks = Peaks(gpu.name, gpu.peak_flops_per_s(precision), gpu.bandwidth_bytes_per_s, gpu.memory_bytes)
    step_budget = 1.0 / traffic.tokens_per_s_per_user
    ctx = traffic.decode_context_len
    kv_per_seq = kv_cache_bytes_per_token(spec, traffic.kv_dtype) * ctx
    n_min = min_replica_gpus(spec, gpu, traffic.memory_headroom)
    best = None
    n = n_min
    while n <= max(traffic.max_replica_gpus, n_min):
        kv_room = traffic.memory_headroom * gpu.memory_bytes * n - weight_bytes(spec)
        b_kv = int(kv_room // kv_per_seq)
        if b_kv >= 1:
            b, limited = _largest_batch(spec, peaks, eff["decode"], n, ctx, step_budget, b_kv)
            if b >= 1:
                step = decode_step(spec, b, ctx, peaks, eff["decode"], n, traffic.kv_dtype)
                per_gpu = b / step.seconds / n
                if best is None or per_gpu > best[0]:
                    best = (per_gpu, n, b, step, limited)
        n *= 2
    peak_out = traffic.output_tokens_per_s * traffic.peak_to_average
    feasible = best is not None
    if best is None:  # the speed target cannot be met even at batch 1: size at batch 1 on the smallest replica
        step = decode_step(spec, 1, ctx, peaks, eff["decode"], n_min, traffic.kv_dtype)
        best = (1 / step.seconds / n_min, n_min, 1, step, "speed target unreachable")
    per_gpu, n_dec, b, step, limited = best
    decode_replicas = math.ceil(peak_out / (per_gpu * n_dec))
    # prefill: uncached prompt tokens, large batches (compute-bound), replicas of the smallest size
    uncached_per_s = peak_out * traffic.input_tokens_per_output_token * (1 - traffic.cache_hit_rate)
    prompt = max(int(traffic.prompt_len), 1)
    batch = max(1, int(16384 // prompt))  # about 16k tokens per forward pass
    pre = prefill_batch(spec, batch, prompt, peaks, eff["prefill"], n_min, traffic.kv_dtype)
    prefill_tok_per_s_per_replica = batch * prompt / pre.seconds
    prefill_replicas = math.ceil(uncached_per_s / prefill_tok_per_s_per_replica) if uncached_per_s > 0 else 0
    decode_gpus = decode_replicas * n_dec
    prefill_gpus = prefill_replicas * n_min
    model_flops_per_s = peak_out * flops_per_token(spec, ctx) + uncached_per_s * flops_per_token(spec, prompt / 2)
    mfu = model_flops_per_s / ((decode_gpus + prefill_gpus) * peaks.flops_per_s)
    note = f"{precision} compute, replicas of {n_dec} (decode) and {n_min} (prefill) GPUs; communication not modelled"
    return RooflineResult(
        gpus=decode_gpus + prefill_gpus, replica_gpus=n_dec, decode_gpus=decode_gpus, prefill_gpus=prefill_gpus,
        decode_batch=b, decode_step_ms=step.seconds * 1000, decode_tokens_per_s_per_gpu=per_gpu,
        decode_bound=step.bound, limited_by=limited, feasible=feasible, mfu=mfu, note=note,
    )  # fmt: skip


def _largest_batch(spec: ModelSpec, peaks: Peaks, eff: Efficiency, n: int, ctx: float, budget_s: float, b_max: int) -> tuple[int, str]:
    """Largest batch ≤ b_max whose decode step fits ``budget_s`` (step time grows with batch: bisect)."""
    if decode_step(spec, 1, ctx, peaks, eff, n).seconds > budget_s:
        return 0, "speed target"
    if decode_step(spec, b_max, ctx, peaks, eff, n).seconds <= budget_s:
        return b_max, "kv memory"
    lo, hi = 1, b_max
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decode_step(spec, mid, ctx, peaks, eff, n).seconds <= budget_s:
            lo = mid
        else:
            hi = mid
    return lo, "speed target"


def efficiencies_for(gpu_name: str, fits: list[Any]) -> tuple[dict[str, Efficiency], str]:
    """Efficiencies to use on a GPU: fitted on that GPU, else on any GPU measured, else published."""
    by_phase: dict[str, Efficiency] = {}
    source = "published (no GPU measured)"
    for exact in (True, False):
        for f in fits:
            if f.device_kind == "cuda" and f.engine == "vllm" and (f.device_name == gpu_name or not exact):
                by_phase.setdefault(f.phase, f.efficiency)
        if by_phase:
            source = f"calibrated on {'this GPU' if exact else 'another GPU'}"
            break
    pub = published_efficiencies()
    for phase in ("prefill", "decode"):
        by_phase.setdefault(phase, pub[phase])
    return by_phase, source


def direct_fleet(spec: ModelSpec, gpu_name: str, traffic: Traffic, runs: pd.DataFrame) -> dict[str, Any] | None:
    """GPUs from measured output tokens/s per device, where this model was measured on this device.

    Preference: serving runs whose users got at least the speed target; else decode runs whose
    step time met it (decode tokens/s); else throughput runs. The best rate of the first kind
    found is used, at peak traffic.
    """
    if runs is None or runs.empty:
        return None
    rows = runs[(runs["status"] == "ok") & (runs["device_name"] == gpu_name) & (runs["model_key"] == spec.name)].copy()
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
                row.update(gpus=r["gpus"], utilization=article.utilization, how=f"{article.params_per_token:.3g} params/token, output tokens only, daily mean")
            elif sc == "active":
                a = replace(article, params_per_token=float(spec.active_params))
                row.update(gpus=article_gpus(gpu, a)["gpus"], utilization=a.utilization, how=f"{spec.active_params:.3g} active params/token")
            elif sc == "measured":
                if measured is None:
                    row["how"] = "no measured utilization in results/"
                else:
                    a = replace(article, utilization=min(measured["utilization"], 1.0))
                    row.update(
                        gpus=article_gpus(gpu, a)["gpus"], utilization=a.utilization,
                        how=f"MFU {measured['utilization']:.1%} measured ({measured['engine']} {measured['mode']}, {measured['model']} on {measured['device_name']}, vs {measured['against']})",
                    )  # fmt: skip
            elif sc == "roofline":
                eff, source = efficiencies_for(gpu.name, fits or [])
                r = roofline_fleet(spec, gpu, traffic, eff)
                row.update(
                    gpus=r.gpus, decode_gpus=r.decode_gpus, prefill_gpus=r.prefill_gpus, replica_gpus=r.replica_gpus,
                    decode_batch=r.decode_batch, decode_step_ms=round(r.decode_step_ms, 3), feasible=r.feasible,
                    how=f"efficiencies {source}; batch {r.decode_batch} per {r.replica_gpus}-GPU replica ({r.limited_by}, {r.decode_bound}-bound); {r.note}",
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


def traffic_fields() -> list[str]:
    return [f.name for f in fields(Traffic)]
