"""A watchdog that stops what ``fleetcal bench`` started when it dies, however it dies (SIGKILL included).

vLLM's engine core, its workers and Python's resource tracker are children of the bench process;
when that process is killed outright they are reparented and keep running, holding memory and
cores. ``start`` launches this module as a small separate process (its own session, so a Ctrl-C
meant for the bench does not stop it first) that notes the bench's descendants every
``POLL_S`` seconds and, once the bench is gone, sends them SIGTERM and, after ``GRACE_S``, SIGKILL.
Processes are matched by pid and start time, so a reused pid is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5
GRACE_S = 5.0


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of one process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[19])


def _start_time(pid: int) -> int | None:
    st = _stat(pid)
    return st[1] if st else None


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks since boot) of every process readable in /proc, in one pass."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(d.name)) is not None:
            table[int(d.name)] = st
    return table


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below ``root``."""
    table = process_table()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return {pid: table[pid][1] for pid in found}


def _signal_all(procs: dict[int, int], sig: int) -> dict[int, int]:
    """Signal every process still alive as itself; return those."""
    alive = {pid: t for pid, t in procs.items() if _start_time(pid) == t}
    for pid in alive:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return alive


def watch(parent: int) -> None:
    """Follow ``parent``'s descendants until it dies, then stop them."""
    born = _start_time(parent)
    seen: dict[int, int] = {}
    while _start_time(parent) == born:
        seen = {pid: t for pid, t in _descendants(parent).items() if pid != os.getpid()}
        time.sleep(POLL_S)
    left = _signal_all(seen, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pid: t for pid, t in left.items() if _start_time(pid) == t}
    _signal_all(left, signal.SIGKILL)


def start() -> None:
    """Launch the watchdog for this process (Linux only; elsewhere nothing is done)."""
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        return
    subprocess.Popen([sys.executable, "-m", "bench.reaper", str(os.getpid())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)  # fmt: skip


if __name__ == "__main__":
    watch(int(sys.argv[1]))
