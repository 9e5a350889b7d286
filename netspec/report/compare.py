"""Runs side by side: architecture changes, differing settings, accuracies, times."""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path


from netspec.errors import CheckpointError
from netspec.runner.rundir import RunDir
from netspec.runner.metrics import Metrics, Status
from netspec.runner.records import read_history
from netspec.runner.reopen import check_run_spec
from netspec.spec.config import flatten


@dataclass
class RunInfo:
    label: str
    path: Path
    resolved: dict
    layers: list[str]  # one description per layer (or ViT field)
    kinds: list[str]  # layer type per layer (or ViT field name), for alignment
    metrics: Metrics
    history: list
    notes: list[str]


def read_run(path: str | Path) -> RunInfo:
    run_dir = RunDir.open(path)
    checked, notes = check_run_spec(run_dir)
    spec = checked.spec
    parts = spec.family.describe(spec.model)
    layers, kinds = [text for _, text in parts], [kind for kind, _ in parts]
    metrics = run_dir.metrics()
    history = read_history(run_dir) if (run_dir / "history.csv").is_file() else []
    label = spec.name if run_dir.path.name == spec.name else f"{spec.name} ({run_dir.path.name})"
    if checked.draft:  # the rules' fixed settings were overridden: say so wherever the run is listed
        label += " [draft]"
    return RunInfo(label, run_dir.path, spec.to_dict(), layers, kinds, metrics, history, notes)


def architecture_changes(base: RunInfo, other: RunInfo) -> list[str]:
    """Layers added, removed or changed going from `base` to `other` (the command's order: removed
    is in `base` and not in `other`), aligned on layer types first so that a narrower Conv2d reads
    as a change, not as a removal and an addition."""
    out = []
    matcher = difflib.SequenceMatcher(a=base.kinds, b=other.kinds, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                if base.layers[i] != other.layers[j]:
                    out.append(f"changed: layer {j}: {base.layers[i]} -> {other.layers[j]}")
            continue
        out += [f"removed: layer {i}: {base.layers[i]}" for i in range(i1, i2)]
        out += [f"added: layer {j}: {other.layers[j]}" for j in range(j1, j2)]
    return out


def settings_that_differ(runs: list[RunInfo]) -> dict[str, list]:
    flat = [flatten({"data": r.resolved.get("data", {}), "train": r.resolved.get("train", {})}) for r in runs]
    keys = sorted(set().union(*flat))
    return {k: [f.get(k) for f in flat] for k in keys if len({repr(f.get(k)) for f in flat}) > 1}


def read_runs(paths: list[str | Path]) -> list[RunInfo]:
    if len(paths) < 2:
        raise CheckpointError("compare needs at least two run folders")
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) < len(resolved):
        raise CheckpointError("the same run folder is given twice; compare different runs")
    return [read_run(p) for p in paths]


@dataclass(frozen=True)
class ComparedRun:
    """One run's row of a comparison: its numbers and how it ended."""

    label: str
    path: str
    status: Status
    reason: str | None  # why it did not finish
    draft: bool
    params: int | None
    train_size: int | None
    limit: int | None
    test_size: int | None
    epochs: int
    best_val_accuracy: float | None
    test_accuracy: float | None
    model_epoch: int | None
    train_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def status_text(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else str(self.status)


@dataclass(frozen=True)
class Comparison:
    """Runs side by side (`netspec compare`): the first is the baseline."""

    runs: list[ComparedRun]
    architecture: dict[str, list[str]]  # per other run's label: its layer changes against the baseline
    settings: dict[str, list]  # per dotted key that differs: each run's value
    baseline: str
    figure: str | None = None  # the overlaid loss curves (PNG), when written

    def to_dict(self) -> dict:
        return asdict(self)


def compare(runs: list[RunInfo]) -> Comparison:
    """Runs side by side (the first is the baseline): numbers, architecture changes, settings."""
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{i}: {l}" for i, l in enumerate(labels)]
        for r, l in zip(runs, labels):
            r.label = l
    rows = [ComparedRun(r.label, str(r.path), r.metrics.status, r.metrics.reason, r.metrics.draft, r.metrics.params,
                        r.metrics.train_size, r.metrics.limit, r.metrics.test_size, r.metrics.epochs_completed,
                        r.metrics.best_val_accuracy, r.metrics.test_accuracy, r.metrics.model_epoch,
                        r.metrics.train_seconds, r.notes) for r in runs]
    return Comparison(rows, {r.label: architecture_changes(runs[0], r) for r in runs[1:]}, settings_that_differ(runs),
                      runs[0].label)
