"""Progress on the terminal: bars over epochs and batches, a line per epoch and per sweep trial."""
from __future__ import annotations

import os
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from netspec.report.tables import epoch_line, trial_line
from netspec.runner.observer import Observer


class ProgressObserver(Observer):
    """Rich progress over epochs and batches, and a line per finished epoch."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.epochs = self.batches = None

    def start(self, *, epochs, first_epoch, steps):
        self.started = time.monotonic()
        self.progress.start()
        self.epochs = self.progress.add_task("epochs", total=epochs, completed=first_epoch - 1, info="")
        self.batches = self.progress.add_task(f"epoch {first_epoch}", total=steps, info="")

    def step(self, *, epoch, step, loss):
        if step % 25 == 0 or step == self.progress.tasks[self.batches].total:
            self.progress.update(self.batches, completed=step, description=f"epoch {epoch}", info=f"loss {loss:.4f}")

    def epoch(self, stats):
        self.progress.console.print(f"{epoch_line(stats)}  (elapsed {_clock(time.monotonic() - self.started)})",
                                    highlight=False)
        self.progress.update(self.epochs, advance=1)
        if stats.epoch < self.progress.tasks[self.epochs].total:
            self.progress.reset(self.batches, description=f"epoch {stats.epoch + 1}")
        else:
            self.progress.remove_task(self.batches)

    def note(self, text):
        self.progress.console.print(f"[yellow]note:[/] {escape(text)}", highlight=False)

    def stop(self):
        if self.progress.live.is_started:  # stopping one never started prints an empty line
            self.progress.stop()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class TrialLine:
    """A sweep in worker processes: a line per finished trial, printed by whichever worker ran it
    (picklable; no progress bars, which several processes would draw over each other)."""

    observer = None

    def on_trial(self, study, frozen) -> None:
        line = trial_line(frozen)
        if line:
            Console(stderr=True, soft_wrap=True).print(f"{line}  (worker {os.getpid()})", highlight=False)

    def stop(self) -> None: ...


class TrialProgress:
    """A sweep in this process: a progress bar per trial (its settings first), and a line when it ends."""

    def __init__(self, console: Console):
        self.console, self.current = console, None

    def observer(self, trial, values) -> ProgressObserver:
        self.stop()
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self.console.print(f"[bold]trial {trial.number}[/]: {escape(shown)}", highlight=False)
        self.current = ProgressObserver(self.console)
        return self.current

    def on_trial(self, study, frozen) -> None:
        self.stop()
        line = trial_line(frozen)
        if line:
            self.console.print(line, highlight=False)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None
