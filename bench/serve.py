"""Serving mode: vLLM's OpenAI-compatible server in its own process, driven by an asyncio client.

The server runs in a new process group on 127.0.0.1 and is stopped (SIGTERM, then SIGKILL)
on success, on error and on Ctrl-C, so no process outlives the benchmark.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.engines import EngineConfig
from bench.load import SERVED_MODEL

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
        "--model", cfg.model, "--served-model-name", SERVED_MODEL,
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
