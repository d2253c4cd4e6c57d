"""Shared fixtures. Engine tests drive real engines on the bundled model (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def bundled_model_dir():
    from bench.bundled import ensure_bundled_model

    return ensure_bundled_model()


@pytest.fixture(scope="session")
def cpu_dtype() -> str:
    """The precision this CPU runs natively (fp32 where bf16 would be emulated): engine tests size their work by it.
    FLEETCAL_TEST_DTYPE forces one (CI runs the engine tests again with float32, what a CPU without native bf16 gets)."""
    forced = os.environ.get("FLEETCAL_TEST_DTYPE")
    if forced:
        return forced
    from bench.precision import choose_dtype
    from core.identity import describe_cpu

    return choose_dtype("auto", describe_cpu())[0]


def has_cuda() -> bool:
    from bench.device import cuda_available

    return cuda_available()


requires_gpu = pytest.mark.skipif(not has_cuda(), reason="needs an NVIDIA GPU; none is visible on this machine")


# --- processes a run leaves behind ------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def uptime_ticks() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * TICKS


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, start time in clock ticks since boot, command line) of every process readable in /proc."""
    from bench.reaper import process_table

    out = {}
    for pid, (ppid, start) in process_table().items():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[pid] = (ppid, float(start), cmd)
    return out


def left_behind(since_ticks: float, include_children: bool = False) -> list[str]:
    """Python or vLLM processes started since ``since_ticks`` that are still alive, other than this test process's
    ancestors and (unless ``include_children``) its own descendants."""
    procs = _processes()
    mine = {os.getpid()}
    ancestor = procs.get(os.getpid(), (0,))[0]
    while ancestor in procs and ancestor not in mine:  # whatever runs this test (a shell, a timeout) is not the run's
        mine.add(ancestor)
        ancestor = procs[ancestor][0]
    changed = not include_children
    while changed:
        new = {pid for pid, (ppid, _, _) in procs.items() if ppid in mine} - mine
        mine |= new
        changed = bool(new)
    return [
        f"{pid}: {cmd[:120]}"
        for pid, (_, start, cmd) in procs.items()
        if start >= since_ticks and pid not in mine and any(s in cmd.lower() for s in ("python", "vllm", "resource_tracker"))
    ]


def assert_nothing_left(since_ticks: float, wait_s: float = 10.0) -> None:
    """No process started since ``since_ticks`` outlives the run (waiting ``wait_s`` for the kernel to reap what was stopped)."""
    import time

    deadline = time.monotonic() + wait_s
    while (leftovers := left_behind(since_ticks)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers == [], "processes the run started outlived it"


def stop_once_recorded(proc: Any, out: Path, records: int, timeout_s: float = 600) -> int:
    """Wait until the results file in ``out`` holds at least ``records`` records, then freeze ``proc``'s whole group
    (SIGSTOP), so what it has written stays put until the test signals it; return the records at that moment.
    Fails, saying so, if the run ends or ``timeout_s`` passes first: the condition, not a time, decides."""
    import signal
    import time

    from core.schema import load_document

    deadline = time.monotonic() + timeout_s
    while True:
        files = list(out.glob("*.json")) if out.exists() else []
        if files and len(load_document(files[0])["records"]) >= records:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"the run {'ended' if proc.poll() is not None else 'ran past the timeout'} before its results file held {records} records"
            )
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGSTOP)
    if proc.poll() is not None:
        pytest.fail("the run ended before it could be stopped: give it more configurations")
    return len(load_document(files[0])["records"])


def sigterm_after_records(
    argv: list[str], out: Path, records: int, timeout_s: float = 600, env: dict | None = None
) -> tuple[int, str, int]:
    """Run ``fleetcal argv`` in its own session; once its results file in ``out`` holds ``records`` records, stop it,
    send it SIGTERM and let it go on. Return (exit status, stderr, records when it was signalled). Whatever is left of
    its group is SIGKILLed."""
    import signal
    import subprocess
    import sys
    import tempfile

    env = env or {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a long run's progress cannot fill it and block
        proc = subprocess.Popen([sys.executable, "-m", "fleetcal.cli", *argv], cwd=Path(__file__).resolve().parent.parent, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True)  # fmt: skip
        try:
            at_signal = stop_once_recorded(proc, out, records, timeout_s)
            proc.send_signal(signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGCONT)
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0)
        return proc.returncode, err.read(), at_signal
