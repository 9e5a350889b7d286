"""metrics.json, typed: how a run ended and what it measured (read back checked against its schema). No torch."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from netspec.runner.record_schema import fitting_fields


class Status(StrEnum):
    """How a run ended; why, when not finished, is the record's `reason`."""

    FINISHED = "finished"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM: resumable from its last finished epoch
    FAILED = "failed"  # a non-finite loss or gradient
    STOPPED = "stopped"  # an error, or a sweep's pruning


_FRACTION = {"minimum": 0, "maximum": 1}  # an accuracy
_COUNT = {"minimum": 0}


@dataclass(frozen=True)
class Metrics:
    FILE = "metrics.json"

    name: str
    status: Status
    reason: str | None = None  # why the run did not finish (None when it did)
    test_accuracy: float | None = field(default=None, metadata={"schema": _FRACTION})
    test_loss: float | None = None
    target_accuracy: float | None = field(default=None, metadata={"schema": _FRACTION})
    passed: bool | None = None  # test accuracy at or above the target (None: no target, or no model)
    model_epoch: int | None = field(default=None, metadata={"schema": _COUNT})  # the epoch whose weights model.pt holds (0: initial; None: no model)
    best_val_accuracy: float | None = field(default=None, metadata={"schema": _FRACTION})
    best_epoch: int | None = field(default=None, metadata={"schema": _COUNT})
    final_val_accuracy: float | None = field(default=None, metadata={"schema": _FRACTION})  # of the saved model: what sweeps rank on
    epochs_completed: int = field(default=0, metadata={"schema": _COUNT})
    epochs_planned: int | None = None
    params: int | None = None
    draft: bool = False  # fixed settings of the rules overridden (--draft): not gradable
    hidden_units: int | None = None
    limit: int | None = None  # --limit: the first N training images only
    train_size: int | None = None
    train_available: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    dataset: str | None = None
    loading: str | None = None  # memory | stream
    device: str | None = None
    processes: int = 1  # torchrun
    backend: str | None = None
    batchnorm: str | None = None  # several processes and BatchNorm: "per process" | "synchronised"
    speed: dict = field(default_factory=dict)  # the Speed as it ran (compile: off if compiling failed)
    evaluated_in: str | None = None  # the precision of the test pass
    seed: int | None = None
    train_seconds: float = 0.0
    seconds_per_epoch: float | None = None
    wall_seconds: float | None = None  # of the command that wrote this record (a resumed run's: since it resumed)
    versions: dict = field(default_factory=dict)
    command: str = ""

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def has_model(self) -> bool:
        return self.model_epoch is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def status_text(self) -> str:
        """The status with its reason, for people: "failed: non-finite loss at epoch 2"."""
        return f"{self.status}: {self.reason}" if self.reason else str(self.status)

    @classmethod
    def from_dict(cls, record: Any, where: str = FILE) -> "Metrics":
        """The record as `to_dict` wrote it; one that does not fit the schema is a CheckpointError naming `where`."""
        values = fitting_fields(cls, record, where)
        return cls(**{**values, "status": Status(values["status"])})
