"""The progress hooks a run calls (torch-free, so the API and the CLI can name them without torch)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from netspec.errors import first_line
from netspec.runner.metrics import Status


@dataclass(frozen=True)
class RunInfo:
    """What a tracker is told of a run when it starts (and again when it ends)."""

    run_dir: Path
    spec: dict  # the resolved spec (spec.to_dict(), the speed it runs at written in), as in spec.yaml
    rules: tuple[str, ...] = ()  # the names of the rule sets it was checked against
    draft: bool = False  # a rule's fixed setting was overridden: not gradable
    device: str = "cpu"  # the device it trains on, resolved ("cuda:0", not "auto")
    resumed: bool = False  # continues an earlier run folder


class Observer:
    """Hooks on a run's events (progress, trackers, a sweep's pruning), each a no-op by default, in the
    order run_start, start, (step..., epoch)..., end, run_end. The library itself never prints."""

    def run_start(self, run: RunInfo) -> None:
        """The run folder holds the resolved spec and records; training has not started."""

    def start(self, *, epochs: int, first_epoch: int, steps: int) -> None: ...
    def step(self, *, epoch: int, step: int, loss: float) -> None: ...

    def epoch(self, stats) -> str | None:
        """An epoch finished (and the run folder holds it); a reason returned stops the run (a sweep's pruning)."""

    def note(self, text: str) -> None:
        """One line worth telling the user (e.g. compilation failed and training went on eagerly)."""

    def end(self) -> None:
        """Training is over (finished, interrupted or stopped by a fault); the run folder is being written."""

    def run_end(self, run: RunInfo, *, test_accuracy: float | None, status: Status) -> None:
        """The run folder's records, report and figures are written; `status`: how the run ended."""


class Observers(Observer):
    """Several observers, each told of every event in order; `epoch` returns the first reason to stop.
    A hook that raises ends the run, unless its observer is `optional` (a tracker): that one is dropped."""

    def __init__(self, observers: Iterable[Observer | None]):
        self.observers = [o for o in observers if o is not None]

    def _each(self, hook: str, call) -> str | None:
        reasons = []
        for o in [o for o in self.observers if hasattr(o, hook)]:  # an observer written before a hook lacks it
            if not getattr(o, "optional", False):
                reasons.append(call(o))
                continue
            try:
                call(o)
            except Exception as e:  # noqa: BLE001 - a tracker's failure is never the run's
                self.observers.remove(o)
                self.note(f"{getattr(o, 'title', type(o).__name__)} stopped recording this run "
                          f"({type(e).__name__}: {first_line(e)[:200]}); training goes on without it")
        return next((r for r in reasons if isinstance(r, str) and r), None)

    def run_start(self, run):
        self._each("run_start", lambda o: o.run_start(run))

    def start(self, **kw):
        self._each("start", lambda o: o.start(**kw))

    def step(self, **kw):
        self._each("step", lambda o: o.step(**kw))

    def epoch(self, stats):
        return self._each("epoch", lambda o: o.epoch(stats))

    def note(self, text):
        self._each("note", lambda o: o.note(text))

    def end(self):
        self._each("end", lambda o: o.end())

    def run_end(self, run, **kw):
        self._each("run_end", lambda o: o.run_end(run, **kw))
