"""Stopping (runs, sweeps, grading): Ctrl-C and SIGTERM only record a stop request, read at safe points, not raised in
library code. With `hold=False`, one outside `held()` raises KeyboardInterrupt at once, as Ctrl-C twice always does."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from netspec.errors import Interrupted, NetspecError, os_error_text, RunError
from netspec.spec.datasets import memory_bytes

INTERRUPTED_EXIT = 130
KILL_S = 60  # a worker told to stop is killed if it has not ended a minute later
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


@dataclass
class StopRequest:
    """Whether this process was asked to stop, and by what. One per process (signals are)."""

    reason: str | None = None
    signals: list[int] = field(default_factory=list)
    listening: int = 0  # listeners installed (main thread)
    held: int = 0  # regions where a signal is recorded, never raised
    always_hold: bool = False  # a worker or a sweep: every signal is recorded only
    final: int = 0  # the run folder's last writing: not even Ctrl-C pressed again is raised


_REQUEST = StopRequest()


def requested() -> str | None:
    """Why this process was asked to stop (\"Ctrl-C\", \"SIGTERM\", ...), or None."""
    return _REQUEST.reason


def request(reason: str) -> None:
    """Ask this process to stop, as a signal would (the orphan watch, a test); the first reason is kept."""
    _REQUEST.reason = _REQUEST.reason or reason


def _on_signal(signum, frame) -> None:  # noqa: ARG001 - signal's signature
    again = signum == signal.SIGINT and signum in _REQUEST.signals  # a person pressing Ctrl-C again
    request(NAMES.get(signum, f"signal {signum}"))
    _REQUEST.signals.append(signum)
    if (again and not _REQUEST.final) or not (_REQUEST.held or _REQUEST.always_hold):
        raise KeyboardInterrupt


@contextmanager
def listening(*, hold: bool):
    """Ctrl-C and SIGTERM recorded as the stop request in the block; with `hold` only recorded, else raised
    outside `held()` regions. Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, _on_signal) for s in NAMES}
    was_always = _REQUEST.always_hold
    _REQUEST.listening += 1
    _REQUEST.always_hold = was_always or hold
    try:
        yield
    finally:
        _REQUEST.listening -= 1
        _REQUEST.always_hold = was_always
        for s, h in saved.items():
            signal.signal(s, h)
        if not _REQUEST.listening:
            _REQUEST.reason, _REQUEST.signals = None, []


def library():
    """netspec as a library (no command listening): Ctrl-C is held (the run ends at its next step), not raised."""
    return nullcontext() if _REQUEST.listening else held()


@contextmanager
def held(*, final: bool = False):
    """A region that ends cleanly when asked to (a signal here is recorded for it to read), listening for its length
    if nothing listens. `final`: the run folder's last writing, where even Ctrl-C pressed again is only recorded
    (a raise there can land in a weakref callback, where Python prints it and carries on)."""
    with nullcontext() if _REQUEST.listening else listening(hold=True):
        _REQUEST.held += 1
        _REQUEST.final += final
        try:
            yield
        finally:
            _REQUEST.held -= 1
            _REQUEST.final -= final


# --- worker processes of sweeps and grading ---------------------------------------------------

def check_workers(workers: int) -> None:
    """Worker processes this machine can hold: one per core, and about 1 GiB of memory each."""
    cores, memory = os.cpu_count() or 1, memory_bytes()
    most = max(1, min(cores, memory >> 30))
    if not 1 <= workers <= most:
        raise RunError(f"--workers {workers}: give 1 to {most} (this machine has {cores} cores and "
                       f"{memory / 2**30:.0f} GiB of memory; a worker takes a core and about 1 GiB)")


def _orphan_watch(parent: int) -> None:
    """A worker whose parent is gone stops as if told to, and is ended if it does not within KILL_S."""
    while os.getppid() == parent:
        time.sleep(0.5)
    request("the parent process is gone")
    time.sleep(KILL_S)
    os._exit(INTERRUPTED_EXIT)


@contextmanager
def worker_process(parent: int):
    """A worker of `run_processes`: Ctrl-C is the parent's; stopped, exit 130; NetspecError, OSError: a line, exit 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with listening(hold=True):
            threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
            yield
            if requested():
                raise Interrupted("stopped", None)
    except (Interrupted, KeyboardInterrupt):
        sys.exit(INTERRUPTED_EXIT)
    except (NetspecError, OSError) as e:
        print(f"error: {os_error_text(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        sys.exit(1)


def run_processes(target: Callable, job, workers: int, folder: Path, what: str = "sweep") -> None:
    """`workers` processes running `target(job, threads, parent pid)` until all end; a stop request is
    passed on as SIGTERM (a kill after KILL_S). Interrupted if they were stopped, RunError if one failed."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=target, args=(job, threads, os.getpid()), name=f"netspec-{what}-worker-{i}")
             for i in range(workers)]
    ignore = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignore else None
    try:  # a worker starts with Ctrl-C ignored (inherited): the terminal's reaches it mid-import otherwise
        for p in procs:
            p.start()
    finally:
        if ignore:
            signal.signal(signal.SIGINT, previous)
    told = None
    with listening(hold=True):
        while alive := [p for p in procs if p.is_alive()]:  # one list: a worker may end between two looks
            alive[0].join(0.2)
            if requested() and told is None:
                told = time.monotonic()
                for p in alive:
                    p.terminate()  # SIGTERM: the worker marks its trial interrupted and exits
            elif told is not None and time.monotonic() - told > KILL_S:
                for p in alive:
                    p.kill()
        stopped = requested() is not None
    if stopped or any(p.exitcode == INTERRUPTED_EXIT for p in procs):  # stopped here, or from outside
        raise Interrupted(f"{what} interrupted", folder)
    if failed := [p.name for p in procs if p.exitcode not in (0, None)]:
        raise RunError(f"{len(failed)} of {workers} {what} workers stopped with an error (exit codes "
                       f"{', '.join(str(p.exitcode) for p in procs if p.exitcode)}); run the {what} again to continue")
