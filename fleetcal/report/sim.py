"""The plot ``fleetcal simulate --plot FILE`` writes: latency percentiles against the request rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fleetcal.report.files import save_plot

METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2el_ms", "end-to-end latency"))


def latency_vs_load(doc: dict[str, Any], path: Path) -> None:
    """p50, p90, p99 of TTFT, TPOT and E2E latency against the rate; saturated rates marked on the rate axis, not plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorded = doc["traffic"].get("recorded_rate_per_s")  # a trace replayed as recorded sits at its own rate
    rows = [{"request_rate_per_s": r["request_rate_per_s"] or recorded, "saturated": r["saturated"],
             **{f"{m}_{s}": r[m][s] for m, _ in METRICS for s in ("p50", "p90", "p99")}} for r in doc["rates"]]  # fmt: skip
    data = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ok = data[~data["saturated"]]
    for ax, (m, title) in zip(axes, METRICS):
        for s, style in (("p50", "-o"), ("p90", "--s"), ("p99", ":^")):
            ax.plot(ok["request_rate_per_s"], ok[f"{m}_{s}"], style, label=s)
        for x in data.loc[data["saturated"], "request_rate_per_s"]:
            ax.axvline(x, color="grey", alpha=0.4)
        ax.set(title=title, xlabel="requests/s", ylabel="ms", yscale="log")
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc['model']} on {doc['device']}: simulated latency against load (grey: saturated)", fontsize=10)
    save_plot(fig, path, data)
    plt.close(fig)
