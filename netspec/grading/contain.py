"""The grading child contained: its own session (setsid), so that everything it starts (DataLoader
workers) is one group that is measured as a whole and killed as a whole; and a clock that counts
the submission's work, not the grader's start-up nor the machine's load.

The clock is CPU time: the user and system seconds of every process of the group (and of those
it has reaped), after the child says its start-up is done and while it is not paused (importing
torch before training). A loaded machine stretches wall time, not CPU time, so a grade does not
depend on how busy the grader is. Threads waiting for work sleep (OMP_WAIT_POLICY=PASSIVE in the
child) rather than spin, so waiting is not counted as work. A child that uses no CPU for long
(blocked) is stopped by a wall-clock backstop.

Memory is the proportional set size (PSS) summed over the group: pages shared by forked workers
count once, a worker's own pages count. Linux's /proc is read; elsewhere only the child itself is
measured (resident memory unknown: 0) and killed.
"""
from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STALL_FACTOR = 20  # a child using no CPU is stopped after this many times the limit in wall time
STALL_EXTRA_S = 60.0


def enter_own_group() -> None:
    """In the child, first: a session of its own (its processes are one group: measured and
    killed together), no core files, and waiting threads that sleep rather than spin."""
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 0


def group_pids(sid: int) -> list[int]:
    """The live processes of session `sid`."""
    pids = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return [sid]
    for name in names:
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and fields[0] != "Z" and int(fields[3]) == sid:
                pids.append(int(name))
    return pids


def group_cpu_s(sid: int) -> float:
    """CPU seconds of session `sid`: its live processes and the children they have reaped."""
    ticks = 0
    for pid in group_pids(sid):
        fields = _stat_fields(pid)
        if fields is not None:  # utime stime cutime cstime are fields 14-17 of stat (11-14 here)
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLOCK_TICKS


def _pss_kb(pid: int) -> int:
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return 0


def group_memory_mb(sid: int) -> int:
    """Memory of session `sid`: the PSS of every process, summed."""
    return sum(_pss_kb(pid) for pid in group_pids(sid)) >> 10


def kill_group(sid: int, wait_s: float = 5.0) -> None:
    """SIGKILL to every process of the group, then wait until none is left (nothing left behind
    to hold memory or the grader's output open)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(sid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        left = [p for p in group_pids(sid) if p != sid] if Path("/proc").is_dir() else []
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)


class Clock:
    """The submission's CPU time: started and paused by the child's messages, read from the group."""

    def __init__(self, sid: int):
        self.sid = sid
        self.running = False
        self.counted = 0.0  # CPU seconds of earlier running spans
        self._since_cpu = 0.0
        self.wall = 0.0  # wall seconds while running (the backstop's)
        self._since_wall = 0.0

    def start(self) -> None:
        if not self.running:
            self.running, self._since_cpu, self._since_wall = True, group_cpu_s(self.sid), time.monotonic()

    def pause(self) -> None:
        if self.running:
            self.counted, self.wall = self.cpu_s(), self.wall_s()
            self.running = False

    def cpu_s(self) -> float:
        return self.counted + (group_cpu_s(self.sid) - self._since_cpu if self.running else 0.0)

    def wall_s(self) -> float:
        return self.wall + (time.monotonic() - self._since_wall if self.running else 0.0)
