"""Signals and worker processes. Worker processes, for sweeps and for grading: a share of the cores
each, stopped together on Ctrl-C or SIGTERM (again, then killed, if one does not stop), and
stopping by themselves when their parent is gone. Training: Ctrl-C or SIGTERM taken at the next
step, not wherever Python happens to be."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from netspec.errors import during_interrupt, Interrupted, NetspecError, os_error_text, RunError
from netspec.spec.datasets import memory_bytes


def check_workers(workers: int) -> None:
    """Worker processes this machine can hold: one per core, and about 1 GiB of memory each (torch
    and the data); more only thrash, and 1000 would exhaust the memory before training one trial."""
    cores, memory = os.cpu_count() or 1, memory_bytes()
    most = max(1, min(cores, memory >> 30))
    if not 1 <= workers <= most:
        raise RunError(f"--workers {workers}: give 1 to {most} (this machine has {cores} cores and "
                       f"{memory / 2**30:.0f} GiB of memory; a worker takes a core and about 1 GiB)")


@contextmanager
def terminate_as_interrupt(unless: Callable[[], bool] = lambda: False):
    """SIGTERM (a scheduler's stop, `kill`, torchrun stopping the other processes) handled like
    Ctrl-C: a sweep's trial is marked interrupted and the study stays resumable; a run keeps its
    finished epochs. Ignored while `unless()` holds (a run that is already being written, its
    training over). Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[float] = []  # when the interrupt last went out

    def interrupt(signum, frame):
        # once: a second SIGTERM (the parent's or the orphan watch's resend) landing while the
        # trial is being marked interrupted would cut that short and leave a plain failure; it
        # counts again only if the first evidently did not stop the process (RESEND_S later)
        now = time.monotonic()
        if (raised and now - raised[-1] < RESEND_S) or unless():
            return
        raised.append(now)
        raise KeyboardInterrupt

    hook = sys.unraisablehook

    def landed_in_callback(unraisable):
        # Python may run the handler inside a weakref callback or __del__, where it prints the
        # exception as "Exception ignored" and goes on: the signal is sent again instead, a moment
        # later from a timer thread (sent from here, the handler would run here), to land in the
        # sweep's own code
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            raised.clear()  # it did not go out: the next one must
            again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
            again.daemon = True
            again.start()
        else:
            hook(unraisable)

    previous = signal.signal(signal.SIGTERM, interrupt)
    sys.unraisablehook = landed_in_callback
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook


class Pending:
    """A stop noted by `interrupts_between_steps`, to be taken where the trainer says it is safe."""

    def __init__(self) -> None:
        self.signal: tuple[Callable, int] | None = None  # (the handler it was meant for, the signal)

    def take(self) -> None:
        """At a step's end: run the handler the signal was meant for (KeyboardInterrupt, as a rule)."""
        if self.signal is not None:
            handler, signum = self.signal
            self.signal = None
            handler(signum, None)


@contextmanager
def interrupts_between_steps():
    """Ctrl-C or SIGTERM while training is noted and taken at the next `Pending.take()` (the end of
    a step, milliseconds away) by the handler that was in place: Python's KeyboardInterrupt, or
    `terminate_as_interrupt`'s. Raised wherever Python happens to be, it becomes that code's own
    error: inside an import's C initialisation, an ImportError (seen in CI: Ctrl-C during the first
    loss plot printed a traceback); inside torch.compile, a failed compile; inside a weakref
    callback, nothing. A second signal before the step ends is taken at once, for a step that
    does not end; an error while a stop is noted is the stop. Handlers that are not Python functions (ignored, or the default SIGTERM, which
    ends the process) are left as they are; so are those of any thread but the main one."""
    pending = Pending()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = {s: h for s in (signal.SIGINT, signal.SIGTERM) if callable(h := signal.getsignal(s))}

    def note(signum, frame):
        if pending.signal is not None:  # again, and the step has not ended: now
            pending.signal = None
            previous[signum](signum, frame)
        else:
            pending.signal = (previous[signum], signum)

    for s in previous:
        signal.signal(s, note)
    try:
        yield pending
    except Exception as e:
        if pending.signal is None:
            raise
        # the stop, reached another way first: under torchrun, Ctrl-C reaches every process, and
        # one that stopped leaves another's collective broken
        raise KeyboardInterrupt from e
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    pending.take()  # one that came after the last step: not lost (not on the way out of an error)


INTERRUPTED_EXIT = 130


def orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    while True:  # again every RESEND_S, in case Python swallowed the interrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(RESEND_S)


RESEND_S, KILL_S = 10, 60  # a stopped worker is told again after 10 s, and killed after a minute


@contextmanager
def worker_process(parent: int):
    """The life of a worker process that `run_processes` started. The parent decides when to stop:
    Ctrl-C in the terminal is ignored here (the parent gets it too and sends SIGTERM, taken as
    Ctrl-C), and a worker whose parent is gone (killed) stops by itself. Stopped, it exits 130; a
    NetspecError or OSError is one line on its stderr (a worker's only channel) and exit 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with terminate_as_interrupt():
            threading.Thread(target=orphan_watch, args=(parent,), daemon=True).start()
            yield
    except (KeyboardInterrupt, Exception) as e:
        if during_interrupt(e):
            sys.exit(INTERRUPTED_EXIT)
        if not isinstance(e, (NetspecError, OSError)):
            raise
        print(f"error: {os_error_text(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        sys.exit(1)


def picklable(value) -> bool:
    import pickle

    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001 - closures and lambdas are not
        return False


def run_processes(target: Callable, job, workers: int, folder: Path, what: str = "sweep") -> None:
    """`workers` processes running `target(job, threads, parent pid)`, each with its share of the
    cores, until all end. Ctrl-C or SIGTERM here is passed on to them as SIGTERM (again after
    RESEND_S, a kill after KILL_S); Interrupted if they were stopped, RunError if one failed."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=target, args=(job, threads, os.getpid()), name=f"netspec-{what}-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    stopped: list[float] = []

    def stop(signum, frame):  # Ctrl-C or SIGTERM: noted, never raised (it could land in a weakref callback)
        stopped.append(time.monotonic())

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    told = None
    try:
        while alive := [p for p in procs if p.is_alive()]:  # one list: a worker may end between two looks
            alive[0].join(0.2)
            if stopped and (told is None or time.monotonic() - told > RESEND_S):
                told = time.monotonic()
                for p in procs:  # SIGTERM: the worker marks its trial interrupted and exits
                    if p.is_alive():
                        (p.kill if told - stopped[0] > KILL_S else p.terminate)()
    finally:
        for s, previous in handlers.items():
            signal.signal(s, previous)
    if stopped or any(p.exitcode == INTERRUPTED_EXIT for p in procs):  # stopped here, or from outside
        raise Interrupted(f"{what} interrupted", folder)
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise RunError(f"{len(failed)} of {workers} {what} workers stopped with an error (exit codes "
                       f"{', '.join(str(p.exitcode) for p in procs if p.exitcode)}); run the {what} again to continue")
