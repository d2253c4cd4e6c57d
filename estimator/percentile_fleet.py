"""Fleets by simulated percentiles for ``estimate`` and the backtest, through the same path as ``plan --traffic``
(estimator/percentile_sizing.py): a published deployment's model on that deployment's layouts (as estimator/sizing.py
sizes it at steady state), any other model over plan's options."""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.hardware import Device
from estimator.arch import deployment_layouts, gemm_precision, load_arch
from estimator.kernels import Kernels, kernels_for
from estimator.options import Option, disaggregated_option
from estimator.percentile import Traffic
from estimator.percentile_sizing import PercentileChoice, size_by_percentile
from estimator.plan_search import MODES, Choice, nearest_reason, options
from estimator.planning import Rejection
from estimator.traffic import Request


def fleet_choices(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None, whole_instances: bool = True,
                  modes: tuple[str, ...] = MODES, weight_dtype: str | None = None) -> tuple[list[Choice], list[Rejection]]:  # fmt: skip
    """The steady-state options a percentile sizing starts from: the published deployment's layouts of the model
    (disaggregated), else plan's options, fewest GPUs first."""
    published = deployment_layouts(model)
    if not published:
        return options(model, gpu, r, ops, modes, weight_dtype, whole_instances)
    a = load_arch(model, weight_dtype)
    k, _ = kernels_for(gpu, ops, a.fp8_block_scaled)

    def evaluate(kk: Kernels) -> Option | Rejection:
        return disaggregated_option(a, gpu, published[0], published[1], kk, r, whole_instances)

    o = evaluate(k)
    return ([], [o]) if isinstance(o, Rejection) else ([Choice(o, k, evaluate, a, published)], [])


def size_fleet_by_percentile(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None, traffic: Traffic,
                             whole_instances: bool = True) -> tuple[PercentileChoice, Choice] | Rejection:  # fmt: skip
    """(the fleet by percentile, the steady-state option it starts from) for ``r`` at its peak (whole instances) or its
    daily mean (whole GPUs); the nearest reason when no candidate meets the limits."""
    choices, reasons = fleet_choices(model, gpu, r, ops, whole_instances)
    if choices:
        pc, more = size_by_percentile(choices, gpu, r, traffic, whole_instances)
        if pc is not None:
            return pc, choices[0]
        reasons += more
    return nearest_reason(reasons)


def describe(pc: PercentileChoice, steady: Choice, traffic: Traffic) -> str:
    """How a fleet by percentile came about, in words: the steady state beside it, each pool's rates, the check."""
    pools = "; ".join(f"{s.role} {s.per_instance:.3g} requests/s per {s.layout.num_gpus}-GPU instance (steady state "
                      f"{s.steady_per_instance:.3g})" for s in pc.searches)  # fmt: skip
    c = pc.check
    check = (f"fleet simulated whole: p{traffic.percentile:g} TTFT {c['ttft_ms']} ms, TPOT {c['tpot_ms']} ms, "
             f"{'met' if c['met'] else 'NOT met'}" if c.get("checked") else f"not simulated whole ({c.get('why')})")  # fmt: skip
    return (f"{traffic.describe()}: {pc.gpus:,} GPUs against {steady.option.gpus:,} at steady state "
            f"({pc.gpus / steady.option.gpus - 1:+.1%}), {pc.choice.option.mode} as {pc.choice.option.layout} at steady state; {pools}; "
            f"{check}")  # fmt: skip


def roofline_by_percentile(model: str, gpu: Device, r: Request, ops: pd.DataFrame | None, traffic: Traffic) -> dict[str, Any]:
    """``estimate``'s roofline scenario sized by percentile at the request's peak, whole instances."""
    head = f"per-operator serving model by simulated percentile at peak traffic (x{r.peak_to_average:.2f}), whole instances"
    sized = size_fleet_by_percentile(model, gpu, r, ops, traffic)
    if isinstance(sized, Rejection):
        return {"feasible": False, "how": f"{head}: no layout meets the limits ({sized.text})"}
    pc, steady = sized
    by_role = {s.role: n * s.layout.num_gpus for s, n in zip(pc.searches, pc.instances)}
    a = load_arch(model, pc.choice.option.weight_dtype)
    return {"gpus": pc.gpus, "decode_gpus": by_role.get("decode", by_role.get("aggregated")), "prefill_gpus": by_role.get("prefill", 0),
            "decode_batch": pc.choice.option.point.batch_per_gpu, "feasible": True,
            "how": f"{head}; {gemm_precision(gpu, a.weight_dtype)} GEMMs; {describe(pc, steady, traffic)}"}  # fmt: skip
