"""The search behind ``fleetcal plan`` (and the serving-model scenario of ``fleetcal estimate``): for each GPU type, every
candidate layout, weight precision and serving mode (estimator/options.py), the option with the fewest GPUs; its GPU count
over sampled assumptions (a central value and a 90% interval); the per-user speed against throughput frontier; and the
cheapest mix of GPU types."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.hardware import Device
from core.models import get_model
from estimator.arch import Arch, Layout, deployment_layouts, layout_problem, load_arch, tp_limit
from estimator.kernels import Kernels, kernels_for, published_kernels, sample_kernels
from estimator.memory import weight_bytes_per_gpu
from estimator.options import Option, aggregated_option, disaggregated_option, gpus_at
from estimator.planning import Limit, Rejection, aggregated_point, max_batch
from estimator.provisioning import usd_per_day
from estimator.traffic import Request

MODES = ("aggregated", "disaggregated")


def candidate_layouts(a: Arch, model: str, gpu: Device, k: Kernels | None = None) -> list[Layout]:
    """The layouts vLLM could serve ``a`` in on ``gpu`` (arch.layout_problem refuses the rest):
    - tensor parallelism over 1 to 8 GPUs of one node; for an MoE model with its experts split over the TP group (vLLM's
      default, no --enable-expert-parallel), so a small MoE runs on 1, 2 or 4 GPUs;
    - for an MoE model, TP8 x EP8, and expert parallelism with data-parallel attention over 2 to 64 GPUs, the GPU's whole
      scale-up domain where it is larger than a node (the 72 GPUs of a GB200 NVL72, its all-to-all over NVLink), and the
      sizes of its published deployment's layouts (DeepSeek-V3: EP32 and EP144, core/data/deployments.toml), from the
      smallest of those with at least its redundant experts (32), as many as make the experts divide by EP;
    - pipeline parallelism (2 and 4 stages of TP8) for models whose weights do not fit one node at TP8.
    A layout's node is the GPU's (arch.tp_limit: its NVLink domain, or a server's 8 GPUs over PCIe)."""
    node = tp_limit(gpu)
    lays = [Layout(t, tp=t, gpus_per_node=node) for t in (1, 2, 4, 8)]
    if a.shapes.num_experts:
        e, published = a.shapes.num_experts, deployment_layouts(model) or ()
        sizes = sorted({2, 4, 8, 16, 32, 64} | ({node} if node > 8 else set()) | {lay.ep for lay in published})
        spare, first = max((lay.redundant_experts for lay in published), default=0), min((lay.ep for lay in published), default=0)
        lays += [Layout(8, tp=8, ep=8, gpus_per_node=node)] + [
            Layout(n, ep=n, dp_attention=True, redundant_experts=-(-(e + spare) // n) * n - e if spare and n >= first else 0,
                   gpus_per_node=node) for n in sizes]  # fmt: skip
    reserve = (k or published_kernels()).reserve_bytes
    if weight_bytes_per_gpu(a, Layout(8, tp=8))["total"] > 0.9 * gpu.memory_bytes - reserve:
        lays += [Layout(8 * pp, tp=8, pp=pp, gpus_per_node=node) for pp in (2, 4)]
    return [lay for lay in lays if layout_problem(a, lay) is None]


def weight_dtypes(model: str, gpu: Device, asked: str | None) -> list[str]:
    """The model's own format (its checkpoint's, component by component), FP8 where the GPU computes in it, and the GPU's
    own FP4 format where it has FP4 tensor cores (NVFP4 on Blackwell, MXFP4 on CDNA 4); only ``asked`` when given."""
    if asked:
        return [asked]
    own = get_model(model).weight_dtype
    fp4 = [f for f in ("nvfp4", "mxfp4") if f in gpu.fp4_formats and "fp4" in gpu.peak_tflops][:1]
    return [own] + [d for d in (["fp8"] if "fp8" in gpu.peak_tflops else []) + fp4 if d != own]


@dataclass(frozen=True)
class Choice:
    """The best option for one GPU type and how to evaluate its layout again under other kernel figures."""

    option: Option
    kernels: Kernels
    evaluate: Callable[[Kernels], Option | Rejection]
    arch: Arch
    layouts: tuple[Layout, ...]


def options(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None, modes: tuple[str, ...] = MODES, weight_dtype: str | None = None,
            whole_instances: bool = True) -> tuple[list[Choice], list[Rejection]]:  # fmt: skip
    """Every option the limits admit for ``gpu`` at the request's peak, fewest GPUs first (ties: more output tokens/s per
    GPU, then the order tried), and why each rejected candidate failed."""
    found: list[Choice] = []
    reasons: list[Rejection] = []
    for dt in weight_dtypes(model, gpu, weight_dtype):
        a = load_arch(model, dt)
        k, _ = kernels_for(gpu, ops, a.fp8_block_scaled)
        every = candidate_layouts(a, model, gpu, k)
        lays = [lay for lay in every if max_batch(a, gpu, lay, k, r)[0] >= 1]
        if not lays:
            reasons.append(Rejection(Limit.KV_ROOM, f"{dt} weights leave no KV room for one {r.full_len:,.0f}-token request on up to "
                                                    f"{max((lay.num_gpus for lay in every), default=0)} GPUs"))  # fmt: skip
            continue
        tries: list[tuple[Callable[[Kernels], Option | Rejection], tuple[Layout, ...]]] = []
        if "aggregated" in modes:
            tries += [((lambda kk, lay=lay, a=a: aggregated_option(a, gpu, lay, kk, r, whole_instances)), (lay,)) for lay in lays]
        if "disaggregated" in modes:
            tries += [((lambda kk, p=p, d=d, a=a: disaggregated_option(a, gpu, p, d, kk, r, whole_instances)), (p, d))
                      for p in lays for d in lays]  # fmt: skip
        for evaluate, layouts in tries:
            o = evaluate(k)
            if isinstance(o, Rejection):
                reasons.append(Rejection(o.limit, f"{dt} {'/'.join(str(x.num_gpus) for x in layouts)}-GPU: {o.text}", o.score))
            else:
                found.append(Choice(o, k, evaluate, a, layouts))
    found.sort(key=lambda c: (c.option.gpus, -c.option.point.output_tokens_per_s_per_gpu))  # stable: the order tried breaks ties
    return found, reasons


def search(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None, modes: tuple[str, ...] = MODES, weight_dtype: str | None = None,
           whole_instances: bool = True) -> tuple[Choice | None, list[Rejection]]:  # fmt: skip
    """The fewest-GPU option for ``gpu`` at the request's peak (ties: more output tokens/s per GPU), and why each rejected
    candidate failed."""
    found, reasons = options(model, gpu, r, ops, modes, weight_dtype, whole_instances)
    return (found[0] if found else None), reasons


def nearest_reason(reasons: list[Rejection]) -> Rejection:
    """The rejection to show when nothing works: the layout whose batch of one came nearest the limits, else the first."""
    return min(reasons, key=lambda r: r.score, default=Rejection(Limit.WEIGHTS, "no candidate layout"))


def interval(choice: Choice, samples: int, seed: int, gpus_of: Callable[[Option], float] = lambda o: o.gpus) -> tuple[float, float, float]:
    """(5th percentile, 95th percentile, share of draws with no feasible batch) of the chosen option's GPUs (``gpus_of``
    each draw's option), with every ranged assumption drawn around its central value (planning.sample_kernels), the layout
    and mode kept."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(samples):
        o = choice.evaluate(sample_kernels(choice.kernels, rng))
        vals.append(gpus_of(o) if isinstance(o, Option) else math.nan)
    arr = np.array(vals, dtype=float)
    if np.isnan(arr).all():
        return math.nan, math.nan, 1.0
    lo, hi = np.nanpercentile(arr, [5, 95])
    return float(lo), float(hi), float(np.isnan(arr).mean())


def frontier(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None, weight_dtype: str | None = None) -> pd.DataFrame:
    """Aggregated serving at batches from 1 to the KV room on every candidate layout and precision: the points no other
    point beats on both per-user speed and output tokens/s per GPU (the Pareto frontier), latency limits ignored."""
    rows = []
    for dt in weight_dtypes(model, gpu, weight_dtype):
        a = load_arch(model, dt)
        k, _ = kernels_for(gpu, ops, a.fp8_block_scaled)
        for lay in candidate_layouts(a, model, gpu, k):
            top = max_batch(a, gpu, lay, k, r)[0]
            for b in sorted({int(round(v)) for v in np.geomspace(1, max(top, 1), 24)}) if top >= 1 else []:
                p = aggregated_point(a, gpu, lay, k, r, b)
                if p.fits:
                    rows.append(
                        {
                            "gpu": gpu.name,
                            "weight_dtype": dt,
                            "layout": lay.num_gpus,
                            "batch_per_gpu": b,
                            "tokens_per_s_per_user": p.tokens_per_s_per_user,
                            "output_tokens_per_s_per_gpu": p.output_tokens_per_s_per_gpu,
                            "ttft_ms": p.ttft_ms,
                            "tpot_ms": p.tpot_ms,
                        }
                    )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values(["tokens_per_s_per_user", "output_tokens_per_s_per_gpu"], ascending=[False, False])
    keep, best = [], -1.0
    for i, r in df.iterrows():  # fastest per user first: a point stays if it beats every faster one on throughput
        if r["output_tokens_per_s_per_gpu"] > best:
            keep.append(i)
            best = r["output_tokens_per_s_per_gpu"]
    return df.loc[keep].reset_index(drop=True)


def cheapest_mix(options: list[tuple[Option, float]], rate: float, steps: int = 20) -> tuple[float, list[tuple[str, float]]]:
    """Cheapest split of ``rate`` requests/s between two of the (option, USD per GPU-hour) pairs, in steps of 1/``steps``
    of the rate, each part in whole instances: (USD per day, [(GPU, requests/s)]); one type alone is the split 1 : 0."""

    def cost(o: Option, price: float, r: float) -> float:
        return usd_per_day(gpus_at(o.pools, r), price) if r > 0 else 0.0

    best: tuple[float, list[tuple[str, float]]] = (math.inf, [])
    for i, (o, po) in enumerate(options):
        for j, pj in options[i:]:
            for f in range(steps + 1):
                r1 = rate * f / steps
                c = cost(o, po, r1) + cost(j, pj, rate - r1)
                if c < best[0] - 1e-9:
                    best = (c, [(g, r) for g, r in ((o.gpu, r1), (j.gpu, rate - r1)) if r > 0])
    return best
