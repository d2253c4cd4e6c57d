"""Fleet sizing with the per-operator serving model, through the one path ``fleetcal plan`` takes (estimator/options.py):
the model of a published deployment on that deployment's own layouts (core/data/deployments.toml: DeepSeek-V3's decode
on EP144 and prefill on EP32 with data-parallel attention, 32 redundant experts, prefill steps of 16K tokens per GPU,
disaggregated), any other model on the layout, precision and mode plan's search finds (estimator/plan_search.py).

At the request's peak in whole instances (what must be provisioned), or at its daily mean in whole GPUs (the capacity a
daily mean needs, comparable with an average node count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from core.deployments import reference_deployment
from core.hardware import Device
from estimator.arch import Arch, Layout, deployment_layouts, gemm_precision, load_arch, tp_limit
from estimator.kernels import Kernels, kernels_for, ranged, with_value
from estimator.memory import weight_bytes_per_gpu
from estimator.options import Option, disaggregated_option, gpus_at
from estimator.plan_search import nearest_reason, search
from estimator.planning import Rejection
from estimator.serving import Step
from estimator.traffic import Request


def default_layouts(a: Arch, model: str, gpu: Device, kernels: Kernels) -> tuple[Layout, Layout]:
    """(decode, prefill) layouts ``fleetcal predict`` starts from: a published deployment's, else the smallest TP group
    whose weights leave room beside the 2 GiB reserve in 0.9 of the GPU's memory."""
    node = tp_limit(gpu)  # its NVLink domain (72 GPUs on a GB200 NVL72), else a server's 8
    published = deployment_layouts(model)
    if published:
        return replace(published[1], gpus_per_node=node), replace(published[0], gpus_per_node=node)
    tp = 1
    usable = 0.9 * gpu.memory_bytes - kernels.reserve_bytes
    while weight_bytes_per_gpu(a, Layout(tp, tp=tp, ep=tp if a.shapes.num_experts else 1))["total"] > usable:
        tp *= 2
        if tp > 64:
            break
    lay = Layout(tp, tp=tp, ep=tp if a.shapes.num_experts else 1, gpus_per_node=node)
    return lay, lay


@dataclass(frozen=True)
class Sizing:
    """A fleet for a request: the option chosen, its pools, rates, what limited its batch, and the fleet's implied MFU."""

    option: Option
    decode_gpus: int
    prefill_gpus: int
    kernels_source: str
    mfu: float

    @property
    def gpus(self) -> int:
        return self.option.gpus

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.option.steps

    @property
    def decode_tokens_per_s_per_gpu(self) -> float:
        """Output tokens/s of one decode GPU (aggregated: of one GPU at its batch, prompts included)."""
        d = self.steps[0]
        return d.tokens / d.seconds if self.option.mode == "disaggregated" else self.option.point.output_tokens_per_s_per_gpu

    @property
    def prefill_tokens_per_s_per_gpu(self) -> float:
        """Uncached prompt tokens/s of one GPU running prefill steps."""
        p = self.steps[1]
        return p.tokens / p.seconds


def _summary(o: Option, a: Arch, gpu: Device, r: Request, whole_instances: bool, source: str) -> Sizing:
    """The option as a fleet: its pools' GPUs and the MFU the executed FLOPs imply over all its GPUs."""
    rate = r.peak_requests_per_s
    if o.mode == "disaggregated":
        pre, dec = (gpus_at((pool,), rate, whole_instances) for pool in o.pools)
    else:
        pre, dec = 0, o.gpus
    d, p = o.steps
    executed = rate * r.output_len * d.flops / d.tokens + rate * r.uncached_len * p.flops / p.tokens
    peak = gpu.peak_flops_per_s(gemm_precision(gpu, a.weight_dtype))
    return Sizing(o, dec, pre, source, executed / (o.gpus * peak) if o.gpus else 0.0)


def size_on(a: Arch, gpu: Device, k: Kernels, r: Request, layouts: tuple[Layout, Layout], whole_instances: bool = True,
            source: str = "") -> Sizing | Rejection:  # fmt: skip
    """The request disaggregated on given (prefill, decode) layouts at its peak."""
    o = disaggregated_option(a, gpu, layouts[0], layouts[1], k, r, whole_instances)
    return o if isinstance(o, Rejection) else _summary(o, a, gpu, r, whole_instances, source)


def size_fleet(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None = None, whole_instances: bool = True) -> Sizing | Rejection:
    """GPUs serving ``r`` at its peak: on the published layouts of the model's deployment, else plan's search (the fewest
    GPUs over layouts, precisions and modes). ``ops``: measured operators to swap in (None: published kernel figures)."""
    published = deployment_layouts(model)
    if published:
        a = load_arch(model)
        k, source = kernels_for(gpu, ops, a.fp8_block_scaled)
        return size_on(a, gpu, k, r, published, whole_instances, source)
    choice, reasons = search(model, gpu, r, ops, whole_instances=whole_instances)
    if choice is None:
        return nearest_reason(reasons)
    source = kernels_for(gpu, ops, choice.arch.fp8_block_scaled)[1]
    return _summary(choice.option, choice.arch, gpu, r, whole_instances, source)


def note(s: Sizing, a: Arch, gpu: Device, r: Request) -> str:
    """How a fleet was laid out and what limited it, in words."""
    o = s.option
    return (f"{o.mode}, {o.layout}, {o.point.batch_per_gpu:g} sequences per GPU ({o.limited_by}), "
            f"{o.point.tokens_per_s_per_user:.1f} tok/s per user, {s.decode_tokens_per_s_per_gpu:,.0f} output tok/s per decode GPU; "
            f"prefill {s.prefill_tokens_per_s_per_gpu:,.0f} uncached tok/s per GPU at {o.prefill_tokens_per_gpu:,} tokens per GPU per "
            f"step; {gemm_precision(gpu, o.weight_dtype)} GEMMs, {r.kv_dtype} KV, MTP {r.mtp_tokens if a.mtp_modules else 0}")  # fmt: skip


# Request field -> its range, the rest held at their central values; the kernels' ranges come from data/kernels.toml
SERVICE_RANGES = {"tokens_per_s_per_user": (15.0, 30.0), "cached_fraction": (0.3, 0.7),
                  "peak_to_average": (1.0, reference_deployment().peak_to_average)}  # fmt: skip


def _with_service(r: Request, name: str, value: float) -> Request:
    return replace(r, tpot_ms=1000 / value) if name == "tokens_per_s_per_user" else replace(r, **{name: value})


def sensitivity(a: Arch, gpu: Device, kernels: Kernels, r: Request, layouts: tuple[Layout, Layout]) -> list[dict[str, Any]]:
    """The daily-mean fleet (whole GPUs) at each end of every assumption's range, the rest at their central values: what to
    measure first. ``r``'s own peak_to_average is left out of the central fleet (the daily mean)."""
    mean = replace(r, peak_to_average=1.0)

    def gpus(k: Kernels, req: Request) -> float:
        s = size_on(a, gpu, k, req, layouts, whole_instances=False)
        return float("nan") if isinstance(s, Rejection) else s.gpus

    base = gpus(kernels, mean)
    rows = []
    for knob, (lo, hi) in ranged(kernels):
        ends = [gpus(with_value(kernels, knob, v), mean) for v in (lo, hi)]
        rows.append({"assumption": str(knob), "low": lo, "high": hi, "gpus_at_low": ends[0], "gpus_at_high": ends[1], "central_gpus": base})
    for name, (lo, hi) in SERVICE_RANGES.items():
        ends = [gpus(kernels, _with_service(mean, name, v)) for v in (lo, hi)]
        rows.append({"assumption": name, "low": lo, "high": hi, "gpus_at_low": ends[0], "gpus_at_high": ends[1], "central_gpus": base})
    for row in rows:
        row["swing"] = abs(row["gpus_at_high"] - row["gpus_at_low"])
    return sorted(rows, key=lambda row: (-row["swing"], row["assumption"]))

