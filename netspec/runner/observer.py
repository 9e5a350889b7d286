"""The progress hooks a run calls (torch-free, so the API and the CLI can name them without torch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netspec.runner.train import EpochStats


class Observer:
    """Hooks for progress display; the library itself never prints."""

    def start(self, *, epochs: int, first_epoch: int, steps: int) -> None: ...

    def step(self, *, epoch: int, step: int, loss: float) -> None: ...

    def epoch(self, stats: EpochStats) -> None: ...

    def note(self, text: str) -> None:
        """One line worth telling the user (e.g. compilation failed and training went on eagerly)."""

    def end(self) -> None:
        """Training is over (finished, interrupted or stopped by a fault); the run folder is being written."""
