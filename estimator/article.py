"""The article's estimate (科创板日报, 2025-02-08, citing Guotai Junan), reproduced digit for digit.

demand = visits/day × questions/visit × tokens/reply / 86,400 s × 2 × parameters/token
GPUs   = demand / (utilization × peak)

The published figures come from two roundings, both reproduced here and named:
1. the demand, 1.5532e19 ops/s, is published as 1.6e19 (two significant digits), and the
   GPU counts are computed from the rounded 1.6e19;
2. the H100's FP8 peak of 1,978.9 TFLOPS is taken as 1,978 (whole TFLOPS), and each GPU count
   is truncated to a whole card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from core.hardware import PRECISIONS, CatalogError, Device, check_numbers, get_gpu

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class ArticleInputs:
    """Every assumption of the article, named and overridable (defaults as published)."""

    daily_visits: float = 1e8
    questions_per_visit: float = 10
    tokens_per_reply: float = 1_000
    params_per_token: float = 671e9  # DeepSeek-V3/R1 total parameters
    utilization: float = 0.5
    precision: str = "fp8"  # the A100 has no FP8: its INT8 peak stands in, as in the article
    demand_significant_digits: int | None = 2  # the article's rounding of the demand; None: none
    peak_whole_tflops: bool = True  # the article's 1,978 for 1,978.9

    def __post_init__(self) -> None:
        check_numbers(self, ("daily_visits", "questions_per_visit", "tokens_per_reply", "params_per_token", "utilization"))
        if self.precision not in PRECISIONS:
            raise CatalogError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("daily_visits", "questions_per_visit", "tokens_per_reply", "params_per_token"):
            if not getattr(self, name) > 0:
                raise CatalogError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.utilization <= 1:
            raise CatalogError(f"utilization must be in (0, 1], got {self.utilization}")


class DailyTraffic(Protocol):
    """What a day's traffic is counted in (the article's inputs and the fleet's traffic alike)."""

    daily_visits: float
    questions_per_visit: float
    tokens_per_reply: float


def tokens_per_s(inputs: DailyTraffic) -> float:
    """Reply tokens per second averaged over a day: visits × questions × tokens / 86,400."""
    return inputs.daily_visits * inputs.questions_per_visit * inputs.tokens_per_reply / SECONDS_PER_DAY


def demand_ops_per_s_exact(inputs: ArticleInputs) -> float:
    """Operations per second before rounding: tokens/s × 2 × parameters per token (1.5532e19 as published)."""
    return tokens_per_s(inputs) * 2 * inputs.params_per_token


def round_significant(x: float, digits: int) -> float:
    """Round to ``digits`` significant digits (1.5532e19 -> 1.6e19 with 2)."""
    if x == 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(abs(x))) - digits + 1)
    return float(round(x / scale)) * scale


def demand_ops_per_s(inputs: ArticleInputs) -> float:
    """The demand the article divides by: rounded as published unless rounding is switched off."""
    exact = demand_ops_per_s_exact(inputs)
    if inputs.demand_significant_digits is None:
        return exact
    return round_significant(exact, inputs.demand_significant_digits)


def article_peak_flops_per_s(gpu: Device, inputs: ArticleInputs) -> float:
    """The peak the article used: the datasheet figure, in whole TFLOPS when ``peak_whole_tflops``."""
    peak_tflops = gpu.peak_flops_per_s(inputs.precision) / 1e12
    if inputs.peak_whole_tflops:
        peak_tflops = math.floor(peak_tflops + 1e-9)
    return peak_tflops * 1e12


def article_gpus(gpu: Device, inputs: ArticleInputs) -> dict[str, float | int]:
    """GPU count by the article's formula, truncated to whole cards, with the unrounded value."""
    peak = article_peak_flops_per_s(gpu, inputs)
    exact = demand_ops_per_s(inputs) / (inputs.utilization * peak)
    return {
        "gpus": int(math.floor(exact + 1e-9)),
        "gpus_exact": exact,
        "peak_tflops_used": peak / 1e12,
        "gpus_without_rounding": demand_ops_per_s_exact(inputs) / (inputs.utilization * gpu.peak_flops_per_s(inputs.precision)),
    }


def article_estimate(inputs: ArticleInputs, gpu_names: tuple[str, ...] = ("H100", "A100")) -> dict:
    """The article's whole estimate as one document (what ``estimate --scenario article`` prints)."""
    results = {name: article_gpus(get_gpu(name), inputs) for name in gpu_names}
    return {
        "scenario": "article",
        "inputs": inputs.__dict__,
        "tokens_per_s": tokens_per_s(inputs),
        "demand_ops_per_s": demand_ops_per_s(inputs),
        "demand_ops_per_s_exact": demand_ops_per_s_exact(inputs),
        "gpus": {name: r["gpus"] for name, r in results.items()},
        "details": results,
        "rounding": (
            f"demand {demand_ops_per_s_exact(inputs):.4e} rounded to {inputs.demand_significant_digits} significant digits; "
            "peak taken in whole TFLOPS; GPU count truncated to whole cards"
        ),
    }
