"""Runs side by side: architecture changes, differing settings, accuracies, times."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path


from netspec.errors import CheckpointError
from netspec.report import plots
from netspec.runner.rundir import SPEC_FILE, RunDir
from netspec.runner.run import read_history
from netspec.spec.validate import check_file


@dataclass
class RunInfo:
    label: str
    path: Path
    resolved: dict
    layers: list[str]  # one description per layer (or ViT field)
    metrics: dict
    history: list


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def read_run(path: str | Path) -> RunInfo:
    run_dir = RunDir.open(path)
    checked = check_file(run_dir / SPEC_FILE)
    spec = checked.spec
    layers = ([f"{k}={v}" for k, v in _flatten(spec.to_dict()["model"]["vit"]).items()] if spec.is_vit
              else [layer.describe() for layer in spec.model])
    metrics = run_dir.read_json("metrics.json") if (run_dir / "metrics.json").is_file() else {}
    history = read_history(run_dir) if (run_dir / "history.csv").is_file() else []
    return RunInfo(f"{spec.name} ({run_dir.path.name})", run_dir.path, spec.to_dict(), layers, metrics, history)


def architecture_changes(base: RunInfo, other: RunInfo) -> list[str]:
    out = []
    matcher = difflib.SequenceMatcher(a=base.layers, b=other.layers, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "replace":
            for a, b in zip(base.layers[i1:i2], other.layers[j1:j2]):
                out.append(f"changed: {a} -> {b}")
            for a in base.layers[i1 + (j2 - j1):i2]:
                out.append(f"removed: {a}")
            for b in other.layers[j1 + (i2 - i1):j2]:
                out.append(f"added: {b}")
        elif op == "delete":
            out += [f"removed: {a}" for a in base.layers[i1:i2]]
        elif op == "insert":
            out += [f"added: {b}" for b in other.layers[j1:j2]]
    return out


def settings_that_differ(runs: list[RunInfo]) -> dict[str, list]:
    flat = [_flatten({"data": r.resolved.get("data", {}), "train": r.resolved.get("train", {})}) for r in runs]
    keys = sorted(set().union(*flat))
    return {k: [f.get(k) for f in flat] for k in keys if len({repr(f.get(k)) for f in flat}) > 1}


def compare(paths: list[str | Path], figure: str | Path | None = None) -> dict:
    if len(paths) < 2:
        raise CheckpointError("compare needs at least two run folders")
    runs = [read_run(p) for p in paths]
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{i}: {l}" for i, l in enumerate(labels)]
        for r, l in zip(runs, labels):
            r.label = l
    result = {
        "runs": [{"label": r.label, "path": str(r.path), "params": r.metrics.get("params"),
                  "test_accuracy": r.metrics.get("test_accuracy"), "best_val_accuracy": r.metrics.get("best_val_accuracy"),
                  "epochs": r.metrics.get("epochs_completed"), "train_seconds": r.metrics.get("train_seconds"),
                  "status": r.metrics.get("status", "unknown")} for r in runs],
        "architecture": {r.label: architecture_changes(runs[0], r) for r in runs[1:]},
        "settings": settings_that_differ(runs),
        "baseline": runs[0].label,
    }
    if figure:
        fig = plots.overlay_figure({r.label: r.history for r in runs if r.history})
        fig.savefig(figure, dpi=110, bbox_inches="tight")
        plots.close(fig)
        result["figure"] = str(figure)
    return result
