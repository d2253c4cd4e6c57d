"""Serving metrics from request timelines, by the definitions of vLLM's ``bench serve`` (TPOT and the percentile
statistics are core/bench_serve.py's, shared with the simulator).

- TTFT: request sent -> first streamed chunk with content (queueing and prefill included).
- ITL: gaps between consecutive content chunks, pooled over all requests.
- TPOT: per request, (E2E latency − TTFT) / (output tokens − 1); one-token requests excluded.
- E2E latency: request sent -> last chunk.
- Output throughput: output tokens of successful requests / wall time; total adds prompt tokens.
- Interactivity: 1000 / TPOT_ms, the output tokens per second one user sees: the one per-user rate
  every table, plot and scenario uses (``output_tokens_per_s_per_user``, tokens / E2E latency, is kept
  in records for reference only).
- Goodput: completed requests per second whose TTFT and TPOT each meet the SLO (vLLM's definition).
- Steady window: from the first measured request sent to the last one sent; output tokens whose
  chunks arrive inside it, over its length, leave out the drain at the end (no new requests, the
  batch shrinking) that the whole-run throughput includes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.bench_serve import stats_ms, tpot_s


@dataclass
class RequestTimeline:
    """What the client saw of one request; times in seconds from ``time.perf_counter``."""

    sent_s: float
    prompt_tokens: int
    chunk_times_s: list[float] = field(default_factory=list)  # arrival of each content chunk
    output_tokens: int = 0
    success: bool = False
    error: str = ""

    @property
    def ttft_s(self) -> float:
        return self.chunk_times_s[0] - self.sent_s

    @property
    def e2el_s(self) -> float:
        return self.chunk_times_s[-1] - self.sent_s

    @property
    def itls_s(self) -> list[float]:
        t = self.chunk_times_s
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def tpot_s(self) -> float | None:
        if self.output_tokens <= 1:
            return None
        return float(tpot_s(self.e2el_s, self.ttft_s, self.output_tokens))


def steady_window(timelines: list[RequestTimeline]) -> dict[str, float | None]:
    """Output tokens/s inside [first request sent, last request sent]; None where every request was sent at once."""
    start, end = min(t.sent_s for t in timelines), max(t.sent_s for t in timelines)
    if end - start <= 0:
        return {"window_s": None, "steady_output_tokens_per_s": None}
    tokens = 0.0
    for t in timelines:
        if t.success and t.chunk_times_s:
            per_chunk = t.output_tokens / len(t.chunk_times_s)  # a chunk may carry more than one token
            tokens += per_chunk * sum(1 for c in t.chunk_times_s if start <= c <= end)
    return {"window_s": round(end - start, 4), "steady_output_tokens_per_s": round(tokens / (end - start), 3)}


def goodput(timelines: list[RequestTimeline], wall_s: float, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> float | None:
    """Completed requests per second whose own TTFT and TPOT meet the SLO (a bound left None is not checked)."""
    if wall_s <= 0:
        return None

    def meets(t: RequestTimeline) -> bool:
        ttft_ok = slo_ttft_ms is None or t.ttft_s * 1000 <= slo_ttft_ms
        tpot_ok = slo_tpot_ms is None or (t.tpot_s is not None and t.tpot_s * 1000 <= slo_tpot_ms)
        return ttft_ok and tpot_ok

    return round(sum(1 for t in timelines if t.success and t.chunk_times_s and meets(t)) / wall_s, 4)


def serving_metrics(timelines: list[RequestTimeline], wall_s: float) -> dict[str, Any]:
    """Aggregate metrics of one benchmark run over ``wall_s`` seconds of wall time."""
    ok = [t for t in timelines if t.success and t.chunk_times_s]
    failed = len(timelines) - len(ok)
    out_tokens = sum(t.output_tokens for t in ok)
    in_tokens = sum(t.prompt_tokens for t in ok)
    tpots = [t.tpot_s for t in ok if t.tpot_s is not None]
    itls = [gap for t in ok for gap in t.itls_s]
    tpot = stats_ms(tpots)
    per_user = [t.output_tokens / t.e2el_s for t in ok if t.e2el_s > 0]
    return {
        "sent": len(timelines),
        "completed": len(ok),
        "failed": failed,
        "errors": sorted({t.error for t in timelines if t.error})[:5],
        "duration_s": round(wall_s, 4),
        "request_throughput_per_s": round(len(ok) / wall_s, 4) if wall_s > 0 else None,
        "output_tokens_per_s": round(out_tokens / wall_s, 3) if wall_s > 0 else None,
        "total_tokens_per_s": round((out_tokens + in_tokens) / wall_s, 3) if wall_s > 0 else None,
        "ttft_ms": stats_ms([t.ttft_s for t in ok]),
        "tpot_ms": tpot,
        "itl_ms": stats_ms(itls),
        "e2el_ms": stats_ms([t.e2el_s for t in ok]),
        "mean_prompt_tokens": round(in_tokens / len(ok), 2) if ok else None,
        "mean_output_tokens": round(out_tokens / len(ok), 2) if ok else None,
        "output_tokens_per_s_per_user": round(float(np.mean(per_user)), 3) if per_user else None,
        "interactivity_tokens_per_s": round(1000.0 / tpot["mean"], 3) if tpot["mean"] else None,
        **(steady_window(timelines) if timelines else {"window_s": None, "steady_output_tokens_per_s": None}),
    }
