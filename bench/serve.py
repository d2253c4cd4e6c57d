"""Serving mode: vLLM's OpenAI-compatible server in its own process, driven by an asyncio client.

The server runs in a new process group on 127.0.0.1 and is stopped (SIGTERM, then SIGKILL)
on success, on error and on Ctrl-C, so no process outlives the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.engines import EngineConfig, make_prompts
from bench.metrics import RequestTimeline, serving_metrics

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's child process: ask Linux to send it SIGTERM when fleetcal dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the server is still stopped on every exit fleetcal sees
        pass


def server_command(cfg: EngineConfig, port: int) -> list[str]:
    """The command line that starts vLLM's OpenAI-compatible server for ``cfg``."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", cfg.model, "--served-model-name", "bench",
        "--host", HOST, "--port", str(port),
        "--dtype", cfg.dtype, "--max-model-len", str(cfg.max_model_len),
        "--max-num-seqs", str(cfg.max_num_seqs), "--load-format", cfg.load_format,
        "--seed", str(cfg.seed), "--kv-cache-dtype", cfg.kv_cache_dtype,
        "--enable-prefix-caching" if cfg.enable_prefix_caching else "--no-enable-prefix-caching",
        "--tensor-parallel-size", str(cfg.tensor_parallel_size),
        "--pipeline-parallel-size", str(cfg.pipeline_parallel_size),
        "--data-parallel-size", str(cfg.data_parallel_size),
    ]  # fmt: skip
    if cfg.enforce_eager:
        cmd.append("--enforce-eager")
    if cfg.quantization:
        cmd += ["--quantization", cfg.quantization]
    if cfg.enable_expert_parallel:
        cmd.append("--enable-expert-parallel")
    if cfg.max_num_batched_tokens:
        cmd += ["--max-num-batched-tokens", str(cfg.max_num_batched_tokens)]
    if cfg.kv_cache_gb is not None:
        cmd += ["--kv-cache-memory-bytes", str(int(cfg.kv_cache_gb * 2**30))]
    if cfg.distributed_executor_backend:
        cmd += ["--distributed-executor-backend", cfg.distributed_executor_backend]
    return cmd


def live_group_members(pgid: int) -> list[int]:
    """PIDs of processes in group ``pgid`` that are still running (zombies excluded), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp
            pids.append(int(stat.parent.name))
    return pids


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


PORT_ATTEMPTS = 3


class PortTaken(RuntimeError):
    """The server's port was bound by another process first."""


class Server:
    """Context manager around one server process; ``log_path`` keeps its output for diagnosis."""

    def __init__(self, cfg: EngineConfig, log_path: Path, startup_timeout_s: float = 600.0):
        self.cfg = cfg
        self.port = free_port()
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        return self.start()

    def start(self) -> Server:
        """Start the server and return once it answers (stopping it again if it never does).

        The port is found free by binding and releasing it, so another process can take it before the
        server binds; the server then exits with "address already in use" and starts again on another port.
        """
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return self._start_once()
            except PortTaken:
                self.port = free_port()
        return self._start_once()

    def _start_once(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            server_command(self.cfg, self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stopping it stops its workers too
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text()[-1500:]
                if "address already in use" in tail.lower():
                    raise PortTaken(f"port {self.port} was taken before the server bound it")
                raise RuntimeError(f"server exited with status {self.proc.returncode} during startup: {tail}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        raise TimeoutError(f"server did not answer within {self.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL to whatever of it is left after 30 s."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (self.proc.poll() is None or live_group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if live_group_members(pgid) or self.proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            deadline = time.monotonic() + 10
            while live_group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.proc = None
        self._log.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _one_request(session: Any, url: str, prompt: list[int], output_len: int, temperature: float) -> RequestTimeline:
    """One streamed completion; chunk arrival times recorded as the client sees them."""
    payload = {
        "model": "bench",
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


async def run_load(
    base_url: str, prompts: list[list[int]], output_len: int, concurrency: int, warmup: int, temperature: float = 1.0
) -> tuple[list[RequestTimeline], float]:
    """Send ``prompts`` with at most ``concurrency`` in flight after ``warmup`` uncounted requests."""
    import aiohttp

    url = f"{base_url}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=3600)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if warmup:
            await asyncio.gather(*(_one_request(session, url, prompts[i % len(prompts)], output_len, temperature) for i in range(warmup)))
        sem = asyncio.Semaphore(concurrency)

        async def limited(p: list[int]) -> RequestTimeline:
            async with sem:
                return await _one_request(session, url, p, output_len, temperature)

        t0 = time.perf_counter()
        timelines = await asyncio.gather(*(limited(p) for p in prompts))
        wall = time.perf_counter() - t0
    return list(timelines), wall


def measure_serve(
    base_url: str, vocab_size: int, concurrency: int, input_len: int, output_len: int, num_prompts: int, seed: int, temperature: float = 1.0
) -> dict[str, Any]:
    """One serving configuration: at least 5 × concurrency measured requests, concurrency warm-ups."""
    n = max(num_prompts, 5 * concurrency)
    prompts = make_prompts(n, input_len, vocab_size, seed=seed)
    timelines, wall = asyncio.run(run_load(base_url, prompts, output_len, concurrency, warmup=concurrency, temperature=temperature))
    metrics = serving_metrics(timelines, wall)
    metrics["num_prompts"] = n
    metrics["warmup_requests"] = concurrency
    return metrics
