"""Experiment trackers: a run recorded where people already look (TensorBoard, MLflow), as
observers of the run's events (netspec.runner.observer).

`netspec run SPEC --log NAME`, `netspec sweep ... --log NAME` and `netspec.train(..., log=[NAME])`
pick trackers by name from TRACKERS. A tracker's module, and the package it needs, are imported
only when it is asked for: a run pays nothing for a tracker it does not use. A new tracker is one
module and one `register` call here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from netspec.errors import first_line, RunError
from netspec.runner.metrics import Status
from netspec.trackers.base import Tracker


@dataclass(frozen=True)
class Entry:
    load: Callable[[], type]  # imports the tracker's module (and its package) when asked for
    needs: str  # the package it uses, as its users name it
    package: str  # that package's import name; `pip install 'netspec[<tracker name>]'` installs it
    marker: str  # what it leaves in a run folder: a resumed run is logged where it was


TRACKERS: dict[str, Entry] = {}


def register(name: str, load: Callable[[], type], needs: str, package: str, marker: str) -> None:
    if name in TRACKERS:
        raise ValueError(f"tracker {name!r} is registered already")
    TRACKERS[name] = Entry(load, needs, package, marker)


def _tensorboard() -> type:
    from netspec.trackers.tensorboard import TensorBoardTracker

    return TensorBoardTracker


def _mlflow() -> type:
    from netspec.trackers.mlflow import MlflowTracker

    return MlflowTracker


register("tensorboard", _tensorboard, "TensorBoard", "tensorboard",
         marker="tensorboard")
register("mlflow", _mlflow, "MLflow", "mlflow", marker="mlflow.json")


def known(names: Iterable[str]) -> tuple[str, ...]:
    """`names` checked (each once, in order); an unknown one is one line naming the known ones."""
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise RunError(f"--log {unknown[0]}: no such tracker; the known ones are {', '.join(sorted(TRACKERS))}")
    return names


def used_by(run_dir: str | Path) -> tuple[str, ...]:
    """The trackers a run folder was logged to (what `--resume` logs to, unless told otherwise)."""
    return tuple(n for n, e in TRACKERS.items() if (Path(run_dir) / e.marker).exists())


def tracker_class(name: str) -> type[Tracker]:
    """The class of tracker `name`, imported now; a package that is not installed is one line."""
    entry = TRACKERS[known([name])[0]]
    try:
        return entry.load()
    except ImportError as e:
        if (e.name or "").split(".")[0] == entry.package:
            raise RunError(f"--log {name} needs {entry.needs}: pip install 'netspec[{name}]'") from None
        raise RunError(f"--log {name}: {entry.needs} cannot be imported ({first_line(e, type(e).__name__)})") from None


def make_trackers(names: Iterable[str], *, parents: Mapping[str, str] | None = None,
                  check: bool = True) -> list[Tracker]:
    """The trackers named, each checked (`check`) before any run starts."""
    trackers = [tracker_class(n)(parent=(parents or {}).get(n)) for n in known(names)]
    if check:
        for t in trackers:
            t.check()
    return trackers


def open_sweep(names: Iterable[str], folder: Path, name: str) -> tuple[tuple[str, str], ...]:
    """Each named tracker's record of the sweep, opened: (tracker name, parent id) pairs."""
    names = known(names)
    opened = []
    for n, tracker in zip(names, make_trackers(names)):
        parent = type(tracker).open_sweep(Path(folder), name)
        if parent is not None:
            opened.append((n, parent))
    return tuple(opened)


def close_sweep(parents: Iterable[tuple[str, str]], status: Status) -> None:
    """Each tracker's record of the sweep marked ended, as best it can: one that fails (a server gone)
    stays marked running there, and never hides how the sweep itself ended."""
    for name, parent in parents:
        try:
            tracker_class(name).close_sweep(parent, status)
        except Exception:  # noqa: BLE001, S110 - a tracker's failure never hides the sweep's end
            pass
