"""Backtest: published deployments against what each method predicts from their traffic."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pandas as pd

from core.deployments import Deployment, load_deployments
from core.hardware import get_gpu
from core.models import get_model
from core.opcounts import mla_prefill_attention_flops
from estimator.arch import load_arch
from estimator.article import SECONDS_PER_DAY, article_gpus
from estimator.fleet import roofline_fleet
from estimator.traffic import Traffic

RATE_COLUMNS = ("decode_batch_per_gpu", "decode_tokens_per_s_per_gpu", "prefill_uncached_tokens_per_s_per_gpu")


def nodes_from_per_node_throughput(d: Deployment) -> float:
    """Nodes implied by the published per-node throughputs: input/prefill rate + output/decode rate."""
    return (
        d.input_tokens_per_day / SECONDS_PER_DAY / d.per_node_prefill_tokens_per_s
        + d.output_tokens_per_day / SECONDS_PER_DAY / d.per_node_decode_tokens_per_s
    )


def deepseek_mfu(d: Deployment) -> float:
    """MFU DeepSeek's fleet implies: 2 × active matmul parameters per token over output and uncached input
    tokens, plus MLA attention (absorbed decode at the average KV length; prefill not absorbed, an uncached
    token attending its cached prefix and half its uncached part, of the token-weighted prompt length), over
    the average GPUs' FP8 peak. A figure derived from the published traffic, for comparison only."""
    shapes = load_arch(d.model).shapes
    t = Traffic.of_deployment(d)
    out_s = d.output_tokens_per_day / SECONDS_PER_DAY
    unc_s = (d.input_tokens_per_day - d.cached_input_tokens_per_day) / SECONDS_PER_DAY
    dense = 2 * get_model(d.model).matmul_params
    attn_decode = shapes.decode_attention_flops(d.average_kv_len) * shapes.num_layers
    attn_prefill = mla_prefill_attention_flops(shapes, t.prompt_len * (1 + t.cache_hit_rate) / 2) * shapes.num_layers
    flops = out_s * (dense + attn_decode) + unc_s * (dense + attn_prefill)
    return flops / (d.gpus_average * get_gpu(d.gpu).peak_flops_per_s("fp8"))


def backtest(fits: list[Any] | None = None, measured: dict[str, Any] | None = None, ops: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per deployment and method: predicted GPUs (daily mean unless named peak), published GPUs, error in %,
    and for the serving model (and the published rates) decode batch, output and uncached prompt tokens/s per GPU.

    ``roofline`` is the per-operator serving model with the kernels this project measured swapped in;
    ``roofline (published kernels)`` the same model on published kernel figures only (the figure before any
    GPU was measured); ``roofline peak`` sizes whole instances at the published peak against the peak nodes.
    """
    rows = []
    for d in load_deployments():
        gpu = get_gpu(d.gpu)
        spec = get_model(d.model)
        traffic = Traffic.of_deployment(d)
        base = traffic.article_inputs(demand_significant_digits=None)
        uncached = 1 - d.cached_input_tokens_per_day / d.input_tokens_per_day
        rates: dict[str, tuple[float | None, float | None, float | None]] = {"published per-node throughput": (
            None, d.per_node_decode_tokens_per_s / d.gpus_per_node, d.per_node_prefill_tokens_per_s * uncached / d.gpus_per_node)}
        preds: dict[str, tuple[float | None, str]] = {
            "article": (article_gpus(gpu, base)["gpus"], "2 x total params x output tokens at 50%"),
            "active": (article_gpus(gpu, replace(base, params_per_token=float(spec.matmul_params)))["gpus"], "active params at 50%"),
        }
        if measured:
            a = replace(base, utilization=min(measured["utilization"], 1.0))
            preds["measured"] = (article_gpus(gpu, a)["gpus"], f"article formula at {measured['utilization']:.1%} of peak, as the formula counts it, measured "
                                 f"({measured['engine']} {measured['mode']}, {measured['model']} on {measured['device_name']})")
        else:
            preds["measured"] = (None, "no measured utilization")
        implied = deepseek_mfu(d)
        for method, published_only in (("roofline", False), ("roofline (published kernels)", True)):
            r, source = roofline_fleet(d.model, gpu, traffic, ops, peak=False, published_only=published_only)
            rates[method] = (r.decode_batch_per_gpu, r.decode_tokens_per_s_per_gpu, r.prefill_tokens_per_s_per_gpu)
            preds[method] = (r.gpus, f"{source}; decode {r.decode_gpus} ({r.decode_batch_per_gpu} seq/GPU, {r.decode_tokens_per_s_per_gpu:,.0f} tok/s/GPU, "
                                     f"{r.tokens_per_s_per_user:.1f} tok/s/user) + prefill {r.prefill_gpus} ({r.prefill_tokens_per_s_per_gpu:,.0f} uncached tok/s/GPU); "
                                     f"implied MFU {r.mfu:.1%} vs DeepSeek's {implied:.1%}")  # fmt: skip
        peak_traffic = replace(traffic, peak_to_average=d.nodes_peak / d.nodes_average)
        r, source = roofline_fleet(d.model, gpu, peak_traffic, ops, peak=True)
        preds["roofline peak"] = (r.gpus, f"{source}; whole instances at the peak ({d.nodes_peak:g} nodes = {d.nodes_peak * d.gpus_per_node:g} GPUs published)")
        nodes = nodes_from_per_node_throughput(d)
        preds["published per-node throughput"] = (nodes * d.gpus_per_node, f"{nodes:.1f} nodes (consistency check, not a prediction)")
        for method, (gpus, how) in preds.items():
            published = d.nodes_peak * d.gpus_per_node if method == "roofline peak" else d.gpus_average
            err = None if gpus is None else round((gpus / published - 1) * 100, 1)
            rows.append({
                "deployment": d.name, "gpu": gpu.name, "method": method,
                "predicted_gpus": None if gpus is None else int(math.ceil(gpus - 1e-9)) if method != "published per-node throughput" else round(gpus, 1),
                "published_gpus": published, "error_pct": err, "how": how,
                **dict(zip(RATE_COLUMNS, rates.get(method, (None, None, None)))),
            })  # fmt: skip
    return pd.DataFrame(rows)
