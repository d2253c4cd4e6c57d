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
from estimator.article import SECONDS_PER_DAY
from estimator.fleet import SCENARIO_FUNCTIONS, Inputs, article_inputs, roofline_fleet
from estimator.percentile import Traffic
from estimator.percentile_fleet import describe, size_fleet_by_percentile
from estimator.planning import Rejection
from estimator.sizing import note
from estimator.traffic import Request

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
    spec = get_model(d.model)
    shapes = spec.shapes
    out_s = d.output_tokens_per_day / SECONDS_PER_DAY
    unc_s = (d.input_tokens_per_day - d.cached_input_tokens_per_day) / SECONDS_PER_DAY
    dense = 2 * spec.matmul_params
    attn_decode = shapes.decode_attention_flops(d.average_kv_len) * shapes.num_layers
    attn_prefill = mla_prefill_attention_flops(shapes, d.input_len * (1 + d.cache_hit_rate) / 2) * shapes.num_layers
    flops = out_s * (dense + attn_decode) + unc_s * (dense + attn_prefill)
    return flops / (d.gpus_average * get_gpu(d.gpu).peak_flops_per_s("fp8"))


def backtest(measured: dict[str, Any] | None = None, ops: pd.DataFrame | None = None, traffic: Traffic | None = None) -> pd.DataFrame:
    """One row per deployment and method: predicted GPUs (daily mean unless named peak), published GPUs, error in %,
    and for the serving model (and the published rates) decode batch, output and uncached prompt tokens/s per GPU.

    ``article``, ``active`` and ``measured`` are those scenarios (estimator/fleet.py) on the deployment's traffic;
    ``roofline peak`` the ``roofline`` scenario on its peak traffic (whole instances, against the peak nodes).
    ``roofline`` is the same per-operator serving model at the daily mean in whole GPUs, with the kernels this project
    measured swapped in; ``roofline (published kernels)`` on published kernel figures only (the figure before any GPU
    was measured). With ``traffic``, ``roofline pNN (simulated)`` is the same model sized by simulated latency percentiles
    under that traffic (estimator/percentile_fleet.py), daily mean in whole GPUs, with what share of the gap between
    ``roofline`` and the published fleet it closes.
    """
    rows = []
    for d in load_deployments():
        gpu, spec, request = get_gpu(d.gpu), get_model(d.model), Request.of_deployment(d)
        article = article_inputs(d.model, daily_visits=d.output_tokens_per_day / 1000, questions_per_visit=1, tokens_per_reply=1000,
                                 demand_significant_digits=None)  # fmt: skip
        x = Inputs(d.model, spec, replace(request, peak_to_average=1.0), article, measured=measured, ops=ops)
        uncached = 1 - d.cache_hit_rate
        rates: dict[str, tuple[float | None, float | None, float | None]] = {
            "published per-node throughput": (
                None,
                d.per_node_decode_tokens_per_s / d.gpus_per_node,
                d.per_node_prefill_tokens_per_s * uncached / d.gpus_per_node,
            )
        }
        preds = {sc: _prediction(SCENARIO_FUNCTIONS[sc](x, gpu)) for sc in ("article", "active", "measured")}
        for method, published_only in (("roofline", False), ("roofline (published kernels)", True)):
            rates[method], preds[method] = _serving_model(d, gpu, request, ops, published_only)
        gpus, how = _prediction(SCENARIO_FUNCTIONS["roofline"](replace(x, request=request), gpu))
        preds["roofline peak"] = (gpus, f"{how}; {d.nodes_peak:g} nodes = {d.nodes_peak * d.gpus_per_node:g} GPUs published")
        if traffic is not None:
            preds[f"roofline p{traffic.percentile:g} (simulated)"] = _by_percentile(d, gpu, request, ops, traffic, preds["roofline"][0])
        nodes = nodes_from_per_node_throughput(d)
        preds["published per-node throughput"] = (nodes * d.gpus_per_node, f"{nodes:.1f} nodes (consistency check, not a prediction)")
        rows += [_row(d, gpu.name, method, gpus, how, rates.get(method, (None, None, None))) for method, (gpus, how) in preds.items()]
    return pd.DataFrame(rows)


def _serving_model(d: Deployment, gpu: Any, request: Request, ops: pd.DataFrame | None,
                   published_only: bool) -> tuple[tuple[float | None, float | None, float | None], tuple[float | None, str]]:  # fmt: skip
    """The serving model's daily-mean fleet (whole GPUs) for a deployment: its rates and its prediction."""
    r = roofline_fleet(d.model, gpu, request, ops, peak=False, published_only=published_only)
    if isinstance(r, Rejection):
        return (None, None, None), (None, f"no layout meets the limits ({r.text})")
    rates = (r.option.point.batch_per_gpu, r.decode_tokens_per_s_per_gpu, r.prefill_tokens_per_s_per_gpu)
    how = (f"{r.kernels_source}; decode {r.decode_gpus} + prefill {r.prefill_gpus} GPUs; "
           f"{note(r, load_arch(d.model), gpu, request)}; implied MFU {r.mfu:.1%} vs DeepSeek's {deepseek_mfu(d):.1%}")  # fmt: skip
    return rates, (r.gpus, how)


def _by_percentile(d: Deployment, gpu: Any, request: Request, ops: pd.DataFrame | None, traffic: Traffic,
                   steady: float | None) -> tuple[float | None, str]:  # fmt: skip
    """The daily-mean fleet by simulated percentile: DeepSeek published a per-user speed (20-22 tok/s, held here as the
    percentile's TPOT limit at its low end) and no TTFT, so none is assumed: the prefill pool runs up to the largest rate
    the simulation does not call saturated."""
    sized = size_fleet_by_percentile(d.model, gpu, replace(request, peak_to_average=1.0), ops, traffic, whole_instances=False)
    if isinstance(sized, Rejection):
        return None, f"no layout meets the limits ({sized.text})"
    pc, choice = sized
    published, gap = d.gpus_average, d.gpus_average - (steady or 0)
    share = f"; closes {(pc.gpus - steady) / gap:.0%} of the gap between roofline ({steady:,.0f}) and the published {published:,.0f}" \
        if steady and gap else ""  # fmt: skip
    return pc.gpus, (f"TPOT <= {request.tpot_ms:g} ms ({1000 / request.tpot_ms:g} tok/s per user, published) at p{traffic.percentile:g}, "
                     f"no TTFT limit (none published); {describe(pc, choice, traffic)}{share}")  # fmt: skip


def _prediction(row: dict[str, Any]) -> tuple[float | None, str]:
    return row.get("gpus"), row["how"]


def _row(d: Deployment, gpu: str, method: str, gpus: float | None, how: str, rates: tuple[float | None, ...]) -> dict[str, Any]:
    """The error is of the unrounded prediction; the prediction is shown in whole GPUs (the consistency check to 0.1)."""
    published = d.nodes_peak * d.gpus_per_node if method == "roofline peak" else d.gpus_average
    shown = None if gpus is None else round(gpus, 1) if method == "published per-node throughput" else int(math.ceil(gpus - 1e-9))
    return {"deployment": d.name, "gpu": gpu, "method": method, "predicted_gpus": shown, "published_gpus": published,
            "error_pct": None if gpus is None else round((gpus / published - 1) * 100, 1), "how": how,
            **dict(zip(RATE_COLUMNS, rates))}  # fmt: skip
