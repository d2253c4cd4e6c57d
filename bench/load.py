"""The serving client: streamed completions against an OpenAI-compatible server, closed or open loop.

Closed loop: ``concurrency`` clients, each sending its next request when the last one finished.
Open loop: requests sent at gamma-distributed arrival times of a given mean rate (vLLM's
``bench serve`` convention: shape ``burstiness``, 1 for a Poisson process), however many are then
in flight. Every request is timed as the client sees it (``bench.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from bench.metrics import RequestTimeline, serving_metrics
from bench.workload import Request, Workload
from core.bench_serve import arrival_offsets

OPEN_LOOP_REQUESTS = 20  # requests of one request-rate configuration, at least
SERVED_MODEL = "bench"  # the name our own server serves the model under


async def _one_request(session: Any, url: str, req: Request, temperature: float, model: str = SERVED_MODEL) -> RequestTimeline:
    """One streamed completion; chunk arrival times recorded as the client sees them."""
    payload = {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.output_len,
        "temperature": temperature,
        "top_p": 1.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tl = RequestTimeline(sent_s=time.perf_counter(), prompt_tokens=req.prompt_len)
    try:
        async with session.post(url, json=payload) as resp:
            if resp.status != 200:
                tl.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return tl
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                msg = json.loads(data)
                if msg.get("choices"):
                    tl.chunk_times_s.append(time.perf_counter())
                if msg.get("usage"):
                    tl.output_tokens = int(msg["usage"]["completion_tokens"])
                    tl.prompt_tokens = int(msg["usage"].get("prompt_tokens", tl.prompt_tokens))
        tl.success = bool(tl.chunk_times_s) and tl.output_tokens > 0
        if not tl.success:
            tl.error = "no content chunk or no usage received"
    except Exception as exc:  # a failed request is counted, never raised
        tl.error = f"{type(exc).__name__}: {exc}"[:200]
    return tl


CACHE_COUNTERS = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")  # tokens looked up in, and found in, the prefix cache


async def _cache_counters(session: Any, base_url: str) -> tuple[float, float] | None:
    """The server's prefix-cache counters (queries, hits), summed over its engines; None where it exposes none."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with session.get(f"{base_url}/metrics") as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        totals = {
            name: sum(s.value for s in samples if s.name == f"{name}_total")
            for name in CACHE_COUNTERS
            if any(s.name == f"{name}_total" for s in samples)
        }
    except Exception:  # no metrics endpoint, or not Prometheus text: the hit rate is unknown, the run goes on
        return None
    if set(totals) != set(CACHE_COUNTERS):
        return None
    return totals[CACHE_COUNTERS[0]], totals[CACHE_COUNTERS[1]]


@dataclass
class LoadResult:
    timelines: list[RequestTimeline]
    wall_s: float
    unsent: int  # requests not sent because the time budget ran out
    cache_hit_rate: float | None  # of the measured requests' prompt tokens; None where the server does not say


async def run_load(
    base_url: str,
    requests: list[Request],
    warmup: list[Request],
    concurrency: int | None,
    temperature: float = 1.0,
    offsets: list[float] | None = None,
    model: str = SERVED_MODEL,
    budget_s: float | None = None,
) -> LoadResult:
    """Send ``requests`` after the ``warmup`` ones (uncounted): each at its ``offsets`` time (open loop), with at most
    ``concurrency`` in flight (closed loop; None: no bound). After ``budget_s`` seconds no further request is sent;
    those in flight finish and count."""
    import aiohttp

    url = f"{base_url}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=3600)
    connector = aiohttp.TCPConnector(limit=concurrency or 0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if warmup:
            await asyncio.gather(*(_one_request(session, url, r, temperature, model) for r in warmup))
        before = await _cache_counters(session, base_url)
        sem = asyncio.Semaphore(concurrency or len(requests))
        t0 = time.perf_counter()

        async def scheduled(r: Request, at_s: float) -> RequestTimeline | None:
            await asyncio.sleep(max(0.0, t0 + at_s - time.perf_counter()))
            async with sem:
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    return None
                return await _one_request(session, url, r, temperature, model)

        sent = await asyncio.gather(*(scheduled(r, at) for r, at in zip(requests, offsets or [0.0] * len(requests))))
        wall = time.perf_counter() - t0
        after = await _cache_counters(session, base_url) if before is not None else None
    timelines = [t for t in sent if t is not None]
    hit_rate = None
    if before is not None and after is not None and after[0] > before[0]:
        hit_rate = round((after[1] - before[1]) / (after[0] - before[0]), 4)
    return LoadResult(timelines, wall, len(sent) - len(timelines), hit_rate)


def measure_serve(
    base_url: str,
    workload: Workload,
    vocab_size: int,
    concurrency: int | None,
    input_len: int,
    output_len: int,
    num_prompts: int,
    seed: int,
    temperature: float = 1.0,
    request_rate: float | None = None,
    burstiness: float = 1.0,
    model: str = SERVED_MODEL,
    budget_s: float | None = None,
    salt: str = "",
) -> tuple[dict[str, Any], list[RequestTimeline]]:
    """One serving configuration, closed loop (``concurrency`` clients: at least 5 x concurrency measured requests,
    concurrency warm-ups) or open loop (``request_rate`` arrivals: at least ``OPEN_LOOP_REQUESTS``, 2 warm-ups).
    Warm-up requests are requests of their own, so that no measured prompt is already cached."""
    if request_rate is not None:
        n, n_warmup = max(num_prompts, OPEN_LOOP_REQUESTS), 2
    else:
        assert concurrency is not None
        n, n_warmup = max(num_prompts, 5 * concurrency), concurrency
    if workload.trace is not None:  # its lengths and (scaled) arrival times; requests over the context are not sent
        assert request_rate is not None
        warmup, measured, offsets = workload.trace_schedule(n, n_warmup, request_rate, burstiness, vocab_size, seed, salt)
    else:
        reqs = workload.requests(n_warmup + n, input_len, output_len, vocab_size, seed, salt)
        warmup, measured = reqs[:n_warmup], reqs[n_warmup:]
        offsets = arrival_offsets(n, request_rate, burstiness, seed)
    res = asyncio.run(run_load(base_url, measured, warmup, concurrency, temperature, offsets, model, budget_s))
    metrics = serving_metrics(res.timelines, res.wall_s)
    metrics["num_prompts"] = n
    if workload.trace is not None:
        metrics["not_sent_over_context"] = min(n, len(workload.trace.arrival_s)) - len(measured)
    metrics["warmup_requests"] = n_warmup
    metrics["unsent_over_budget"] = res.unsent
    metrics["prefix_cache_hit_rate"] = res.cache_hit_rate
    if request_rate is not None:
        metrics["burstiness"] = burstiness
    return metrics, res.timelines


def describe_server(base_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """What an OpenAI-compatible server says of itself: its models (id, context length) and, where it has one, its version."""
    import urllib.error
    import urllib.request

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}{path}", timeout=timeout_s) as r:
            return json.loads(r.read().decode())

    models = get("/v1/models").get("data") or []
    try:
        version = get("/version").get("version")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):  # not every server has /version
        version = None
    return {
        "base_url": base_url.rstrip("/"),
        "models": [{"id": m.get("id"), "max_model_len": m.get("max_model_len")} for m in models],
        "version": version,
    }
