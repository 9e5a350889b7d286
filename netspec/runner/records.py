"""The records of a run folder beside the weights: metrics.json, data.json, run.json, rules.json
and history.csv, each written by the run and read back when a run is reopened."""
from __future__ import annotations

import csv
import io
import math
import platform
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torchvision

from netspec._version import __version__
from netspec.builder.check import Checked
from netspec.errors import CheckpointError
from netspec.runner.metrics import Metrics
from netspec.runner.rundir import RunDir
from netspec.runner.train import EpochStats
from netspec.spec.datasets import NAMED
from netspec.spec.rules import resolve_rules, shipped_rule_sets


METRICS = "metrics.json"  # the Metrics record


def read_metrics(run_dir: RunDir) -> Metrics:
    """The run's Metrics (defaults where a folder has none yet: a run still training, or killed)."""
    return Metrics.from_dict(run_dir.read_json(METRICS)) if (run_dir / METRICS).is_file() else Metrics()


def versions() -> dict:
    return {"netspec": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


RULES_RECORD = "rules.json"  # the content of every rule set the run was checked against
SPEC_RULES = "spec-rules.yaml"  # a copy of the spec's own rules file, when it is a file
RUN_RECORD = "run.json"  # how the run was started: what --resume must repeat


def resolved_spec(checked: Checked) -> dict:
    """The spec with defaults written out. A rules file (not a shipped name) is copied into
    the run folder as spec-rules.yaml and referenced from there, so the folder is portable."""
    data = checked.spec.to_dict()
    ref = data.get("rules")
    if ref and ref not in shipped_rule_sets():
        data["rules"] = SPEC_RULES
    return data


def _write_rules(run_dir: RunDir, checked: Checked) -> None:
    run_dir.write_json(RULES_RECORD, [r.to_dict() for r in checked.rules])
    ref = checked.spec.rules
    if ref and ref not in shipped_rule_sets():
        own = resolve_rules(ref, Path(checked.doc.file).parent)
        if own is not None:
            run_dir.write_text(SPEC_RULES, own.read_text(encoding="utf-8"))


DATA_RECORD = "data.json"  # classes, normalisation and loading path: how to preprocess new images


def preprocessing(run_dir: RunDir, spec) -> dict:
    """The run's data record (data.json). Folders from before it trained MNIST or Fashion-MNIST
    with these fixed statistics."""
    if (run_dir / DATA_RECORD).is_file():
        record = run_dir.read_json(DATA_RECORD)
        problem = _record_problem(record, spec)
        if problem:
            raise CheckpointError(f"{run_dir / DATA_RECORD} {problem}; it was edited or damaged (rerun the spec to "
                                  "write it again)")
        return record
    legacy = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
    if spec.data.dataset not in legacy:
        raise CheckpointError(f"{run_dir.path} has no {DATA_RECORD}: its preprocessing is unknown")
    mean, std = legacy[spec.data.dataset]
    return {"dataset": spec.data.dataset, "classes": list(NAMED[spec.data.dataset].classes), "image_shape": list(NAMED[spec.data.dataset].image_shape),
            "input_shape": list(spec.data.input_shape), "mean": [mean], "std": [std], "stats_from": "fixed"}


def _record_problem(record, spec) -> str | None:
    """What is wrong with a data record, checked like any input against the run's own spec: a
    hand-edited std of 0 would give NaN probabilities, a huge image_shape a huge allocation."""
    if not isinstance(record, dict) or not {"classes", "mean", "std", "image_shape"} <= record.keys():
        return "is not a data record"
    shape = record["image_shape"]
    if not (isinstance(shape, list) and all(type(v) is int for v in shape)) or (
            spec.data.image_shape and tuple(shape) != tuple(spec.data.image_shape)):
        return f"says image_shape {shape!r}, the run's spec {list(spec.data.image_shape or ())}"
    classes = record["classes"]
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)) or (
            spec.data.classes and len(classes) != spec.data.classes):
        return f"names {len(classes) if isinstance(classes, list) else 'no'} classes, the run's spec {spec.data.classes}"
    for key, low in (("mean", -math.inf), ("std", 0)):
        values = record[key]
        if not (isinstance(values, list) and len(values) == shape[0]
                and all(type(v) in (int, float) and math.isfinite(v) and v > low for v in values)):
            return (f"has {key} {values!r}: one finite number per channel ({shape[0]})"
                    + (", each above 0" if key == "std" else ""))
    return None


def history_csv(history: list[EpochStats]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(EpochStats)])
    writer.writeheader()
    for h in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(h).items()})
    return buf.getvalue()


def read_history(run_dir: RunDir) -> list[EpochStats]:
    try:
        with open(run_dir / "history.csv", newline="") as f:
            return [EpochStats(**{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()})
                    for row in csv.DictReader(f)]
    except (OSError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot read {run_dir / 'history.csv'}: {e}") from None


def recorded_data_dir(record: dict) -> str | None:
    """The folder of named datasets the run read, where it still exists (else the default applies)."""
    where = record.get("data_dir")
    return where if isinstance(where, str) and Path(where).is_dir() else None


def _read_run_record(run_dir: RunDir) -> dict:
    if not (run_dir / RUN_RECORD).is_file():
        return {}  # folders from before run.json: full data
    record = run_dir.read_json(RUN_RECORD)
    return record if isinstance(record, dict) else {}


