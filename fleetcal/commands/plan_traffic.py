"""``fleetcal plan --traffic``: each GPU type's fleet sized by simulated latency percentiles (estimator/percentile_sizing.py),
beside the steady-state answer it starts from, and how to print it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from core.hardware import Device
from estimator.kernels import one_sided_ranges
from estimator.options import describe
from estimator.percentile import Traffic
from estimator.percentile_sizing import PercentileChoice, percentile_interval, size_by_percentile
from estimator.plan_search import Choice, nearest_reason
from estimator.planning import Rejection
from estimator.traffic import Request
from fleetcal.report.plan import plan_row


def _pool_rows(pc: PercentileChoice) -> list[dict[str, Any]]:
    return [{"role": s.role, "gpus_per_instance": s.layout.num_gpus, "steady_requests_per_s_per_instance": round(s.steady_per_instance, 4),
             "percentile_requests_per_s_per_instance": round(s.per_instance, 4), "headroom": round(s.headroom, 4),
             "probes": len(s.search.probes), "bracketed": s.search.bracketed, "instances": n}
            for s, n in zip(pc.searches, pc.instances or (None,) * len(pc.searches))]  # fmt: skip


def percentile_row(choices: list[Choice], gpu: Device, r: Request, traffic: Traffic, price: float | None, samples: int,
                   seed: int) -> tuple[dict[str, Any], Choice] | Rejection:  # fmt: skip
    """(the plan's row for ``gpu`` by percentile, the choice with the percentile's pools and GPUs for the extras and the
    cheapest mix), or why no candidate meets the limits."""
    pc, reasons = size_by_percentile(choices, gpu, r, traffic)
    if pc is None:
        return nearest_reason(reasons)
    steady = choices[0].option.gpus
    layout = pc.choice.option.layout if len(pc.searches) == 1 else " + ".join(
        f"{s.role} {n * s.layout.num_gpus} on {describe(s.layout)}" for s, n in zip(pc.searches, pc.instances))  # fmt: skip
    sized = replace(pc.choice, option=replace(pc.choice.option, gpus=pc.gpus, pools=pc.pools, layout=layout))
    lo_hi = percentile_interval(pc, r, samples, seed) if samples else None
    row = plan_row(sized, r, price, lo_hi, one_sided_ranges(pc.choice.kernels) if lo_hi else [])
    row.update(steady_gpus=steady, steady_option=f"{choices[0].option.mode}, {choices[0].option.layout}",
               headroom_pct=round((pc.gpus / steady - 1) * 100, 1), slo_percentile=traffic.percentile, traffic=traffic.describe(),
               pools=_pool_rows(pc), fleet_check=pc.check)  # fmt: skip
    return row, sized


def text_lines(rows: list[dict[str, Any]], r: dict[str, Any], traffic: Traffic) -> list[str]:
    """What the printed plan adds by percentile: the traffic and, per GPU, the steady state beside it, each pool's rates and
    the fleet check."""
    p = f"p{traffic.percentile:g}"
    limits = [f"TTFT <= {r['ttft_ms']:g} ms" if r.get("ttft_ms") else "", f"TPOT <= {r['tpot_ms']:g} ms" if r.get("tpot_ms") else "",
              f"E2E <= {traffic.e2e_ms:g} ms" if traffic.e2e_ms else ""]  # fmt: skip
    lines = [f"by percentile: {p} of {', '.join(x for x in limits if x)} over {traffic.describe()}; gpus is that fleet, "
             "steady_gpus the steady-state answer (no queueing) it starts from"]  # fmt: skip
    for row in rows:
        pools = "; ".join(f"{q['role']} {q['percentile_requests_per_s_per_instance']:.3g} requests/s per {q['gpus_per_instance']}-GPU "
                          f"instance (steady state {q['steady_requests_per_s_per_instance']:.3g})" for q in row["pools"])  # fmt: skip
        c = row["fleet_check"]
        if c.get("checked"):
            check = (f"the fleet simulated whole ({c['engines']} engines, {c['requests']:,} requests): {p} TTFT {c['ttft_ms']} ms, "
                     f"TPOT {c['tpot_ms']} ms, E2E {c['e2e_ms']} ms, {'met' if c['met'] else 'NOT met'}"
                     + (f" after adding {sum(c['added_instances'])} instance(s)" if sum(c["added_instances"]) else ""))  # fmt: skip
        else:
            check = f"not simulated whole ({c.get('why')}): one engine per pool searched"
        lines.append(f"{row['gpu']}: {row['gpus']} GPUs by {p} against {row['steady_gpus']} at steady state ({row['steady_option']}): "
                     f"{row['headroom_pct']:+.1f}%; {pools}; {check}")  # fmt: skip
    return lines
