"""What every tracker shares: the Tracker observer and the numbers, settings and figures of a run
as trackers record them."""
from __future__ import annotations

from pathlib import Path

from netspec.runner.metrics import Status
from netspec.runner.observer import Observer


class Tracker(Observer):
    """An observer that records a run somewhere. `optional`: when one fails during a run, the run's
    Observers drop it with a note and training goes on. `parent` is the sweep's own record (an
    MLflow parent run id) when the run is a trial of a sweep."""

    optional = True
    title = "a tracker"

    def __init__(self, *, parent: str | None = None):
        self.parent = parent

    def check(self) -> None:
        """Raise RunError when this tracker cannot record (a server out of reach): before training."""

    @classmethod
    def open_sweep(cls, folder: Path, name: str) -> str | None:
        """The sweep's own record, opened (or, for a sweep run again, reopened); its id is each
        trial's `parent`. None: the tracker keeps no record of a sweep beyond its trials'."""
        return None

    @classmethod
    def close_sweep(cls, parent: str, status: Status) -> None: ...


def epoch_scalars(stats) -> dict[str, float]:
    """An epoch's numbers (EpochStats) under the names both trackers give them."""
    return {"epoch/train_loss": stats.train_loss, "epoch/train_acc": stats.train_acc, "epoch/val_loss": stats.val_loss,
            "epoch/val_acc": stats.val_acc, "epoch/lr": stats.lr, "epoch/seconds": stats.seconds}


def flat_settings(spec: dict, prefix: str = "") -> dict[str, object]:
    """The resolved spec as dotted keys (train.optimizer.lr); a list (the layers) is one value, its text."""
    flat: dict[str, object] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
    return flat


def figures(run_dir: Path) -> list[Path]:
    """The run's figures (report/run_report.py writes them: loss, confusion, mistakes, attention)."""
    return sorted(p for p in Path(run_dir).glob("*.png") if p.is_file() and not p.is_symlink())
