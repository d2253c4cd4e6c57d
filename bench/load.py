"""The serving client: streamed completions against an OpenAI-compatible server, closed or open loop.

Closed loop: ``concurrency`` clients, each sending its next request when the last one finished.
Open loop: requests sent at gamma-distributed arrival times of a given mean rate (vLLM's
``bench serve`` convention: shape ``burstiness``, 1 for a Poisson process), however many are then
in flight. Every request is timed as the client sees it (``bench.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import numpy as np

from bench.engines import make_prompts
from bench.metrics import RequestTimeline, serving_metrics

OPEN_LOOP_REQUESTS = 20  # requests of one request-rate configuration, at least
SERVED_MODEL = "bench"  # the name our own server serves the model under


async def _one_request(session: Any, url: str, prompt: list[int], output_len: int, temperature: float, model: str = SERVED_MODEL) -> RequestTimeline:
    """One streamed completion; chunk arrival times recorded as the client sees them."""
    payload = {
        "model": model,
        "prompt": prompt,
        "max_tokens": output_len,
        "temperature": temperature,
        "top_p": 1.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tl = RequestTimeline(sent_s=time.perf_counter(), prompt_tokens=len(prompt))
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


def arrival_offsets(n: int, rate: float | None, burstiness: float, seed: int) -> list[float]:
    """Send times (s from the start) of ``n`` requests: gamma inter-arrivals of mean 1/``rate`` and shape ``burstiness``
    (vLLM's bench serve: shape 1 is a Poisson process); all at 0 for no rate or an infinite one. Seeded, isolated RNG."""
    if rate is None or not math.isfinite(rate):
        return [0.0] * n
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0  # the first request goes at once
    return [float(x) for x in np.cumsum(gaps)]


async def run_load(
    base_url: str, prompts: list[list[int]], output_len: int, concurrency: int | None, warmup: int, temperature: float = 1.0,
    offsets: list[float] | None = None, model: str = SERVED_MODEL,
) -> tuple[list[RequestTimeline], float]:
    """Send ``prompts`` after ``warmup`` uncounted requests: each at its ``offsets`` time (open loop), with at most
    ``concurrency`` in flight (closed loop; None: no bound)."""
    import aiohttp

    url = f"{base_url}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=3600)
    connector = aiohttp.TCPConnector(limit=concurrency or 0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if warmup:
            await asyncio.gather(*(_one_request(session, url, prompts[i % len(prompts)], output_len, temperature, model) for i in range(warmup)))
        sem = asyncio.Semaphore(concurrency or len(prompts))
        t0 = time.perf_counter()

        async def scheduled(p: list[int], at_s: float) -> RequestTimeline:
            await asyncio.sleep(max(0.0, t0 + at_s - time.perf_counter()))
            async with sem:
                return await _one_request(session, url, p, output_len, temperature, model)

        timelines = await asyncio.gather(*(scheduled(p, at) for p, at in zip(prompts, offsets or [0.0] * len(prompts))))
        wall = time.perf_counter() - t0
    return list(timelines), wall


def measure_serve(
    base_url: str, vocab_size: int, concurrency: int | None, input_len: int, output_len: int, num_prompts: int, seed: int, temperature: float = 1.0,
    request_rate: float | None = None, burstiness: float = 1.0, model: str = SERVED_MODEL,
) -> tuple[dict[str, Any], list[RequestTimeline]]:
    """One serving configuration, closed loop (``concurrency`` clients: at least 5 x concurrency measured requests,
    concurrency warm-ups) or open loop (``request_rate`` arrivals: at least ``OPEN_LOOP_REQUESTS``, 2 warm-ups)."""
    if request_rate is not None:
        n, warmup = max(num_prompts, OPEN_LOOP_REQUESTS), 2
    else:
        assert concurrency is not None
        n, warmup = max(num_prompts, 5 * concurrency), concurrency
    prompts = make_prompts(n, input_len, vocab_size, seed=seed)
    offsets = arrival_offsets(n, request_rate, burstiness, seed)
    timelines, wall = asyncio.run(run_load(base_url, prompts, output_len, concurrency, warmup=warmup, temperature=temperature, offsets=offsets, model=model))
    metrics = serving_metrics(timelines, wall)
    metrics["num_prompts"] = n
    metrics["warmup_requests"] = warmup
    if request_rate is not None:
        metrics["burstiness"] = burstiness
    return metrics, timelines


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
    return {"base_url": base_url.rstrip("/"), "models": [{"id": m.get("id"), "max_model_len": m.get("max_model_len")} for m in models], "version": version}
