"""A run folder's records beside metrics.json (typed dataclasses with a JSON Schema), and history.csv. No torch."""
from __future__ import annotations

import csv
import io
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netspec._version import __version__
from netspec.errors import CheckpointError
from netspec.runner.record_schema import damaged, fitting_fields, REWRITE, require_fit
from netspec.spec.rules import RULES_SCHEMA, Rules, resolve_rules, rules_from_dict, shipped_rule_sets

if TYPE_CHECKING:
    from netspec.runner.rundir import RunDir
    from netspec.runner.trainer import EpochStats

SPEC_RULES = "spec-rules.yaml"  # a copy of the spec's own rules file, when it is a file

_OPTIONAL = {"optional": True}  # a key a submitted model's data record may lack (only data.json has it)
_POSITIVE_INTS = {"items": {"type": "integer", "minimum": 1}}
_NUMBER = {"type": "number", "maximum": 1e3}


@dataclass(frozen=True)
class DataRecord:
    """data.json (and model.pt's and model.safetensors' "data"): how to preprocess images as in training."""

    FILE = "data.json"

    classes: tuple[str, ...] = field(metadata={"schema": {"minItems": 1}})
    image_shape: tuple[int, ...] = field(metadata={"schema": {"minItems": 3, "maxItems": 3, **_POSITIVE_INTS}})
    # per channel, of pixels in 0..1: a std near 0 divides the image into infinities
    mean: tuple[float, ...] = field(metadata={"schema": {"minItems": 1, "items": {**_NUMBER, "minimum": -1e3}}})
    std: tuple[float, ...] = field(metadata={"schema": {"minItems": 1, "items": {**_NUMBER, "minimum": 1e-6}}})
    dataset: str = field(default="", metadata=_OPTIONAL)
    input_shape: tuple[int, ...] = field(default=(), metadata={**_OPTIONAL, "schema": _POSITIVE_INTS})
    stats_from: str = field(default="", metadata=_OPTIONAL)  # "training split" | "spec"
    loading: str = field(default="memory", metadata=_OPTIONAL)  # memory | stream
    loading_reason: str = field(default="", metadata=_OPTIONAL)
    workers: int = field(default=0, metadata={**_OPTIONAL, "schema": {"minimum": 0}})
    images: dict = field(default_factory=dict, metadata=_OPTIONAL)  # train, validation, test, train_available

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Any, where: str = FILE, fix: str = REWRITE) -> "DataRecord":
        """The record, checked against the schema and its own consistency (one finite mean and std per channel)."""
        values = fitting_fields(cls, record, where, fix)
        made = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        channels = made.image_shape[0]
        for key, numbers in (("mean", made.mean), ("std", made.std)):
            if len(numbers) != channels or not all(map(math.isfinite, numbers)):
                raise damaged(where, f"{key} {list(numbers)!r}: one finite number per channel ({channels})", fix)
        return made

    def mismatch(self, spec) -> str | None:
        """Where the record disagrees with the run's spec (its image_shape, its number of classes), or None."""
        if spec.data.image_shape and tuple(self.image_shape) != tuple(spec.data.image_shape):
            return f"says image_shape {list(self.image_shape)}, the run's spec {list(spec.data.image_shape)}"
        if spec.data.classes and len(self.classes) != spec.data.classes:
            return f"names {len(self.classes)} classes, the run's spec {spec.data.classes}"
        return None


def preprocessing(run_dir: RunDir, spec) -> DataRecord:
    """The run's data.json, checked against its schema, then against the run's own spec."""
    record = run_dir.read_record(DataRecord)
    if problem := record.mismatch(spec):
        raise damaged(str(run_dir / DataRecord.FILE), f"it {problem}")
    return record


@dataclass(frozen=True)
class RunRecord:
    """run.json: how the run was started, which `--resume` repeats (its --limit, its data)."""

    FILE = "run.json"

    limit: int | None = field(metadata={"schema": {"minimum": 1}})  # --limit: the first N training images
    command: str
    data_dir: str | None  # the folder of named datasets it read (absolute), None: the default
    processes: int = field(default=1, metadata={"schema": {"minimum": 1}})  # torchrun
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Any, where: str = FILE) -> "RunRecord":
        return cls(**fitting_fields(cls, record, where))

    @property
    def existing_data_dir(self) -> str | None:
        """The folder of named datasets the run read, where it still exists (else the default applies)."""
        return self.data_dir if self.data_dir and Path(self.data_dir).is_dir() else None


@dataclass(frozen=True)
class RulesRecord:
    """rules.json: every rule set the run was checked against, so no move or later change alters how it is judged."""

    rule_sets: tuple[Rules, ...]

    FILE = "rules.json"
    SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "RulesRecord", "type": "array",
              "items": {**{k: v for k, v in RULES_SCHEMA.items() if k != "$schema"}, "required": ["name"],
                        "properties": {**RULES_SCHEMA["properties"],
                                       "waived": {"type": "array", "items": {"type": "string"}}}}}

    def to_dict(self) -> list[dict]:
        return [r.to_dict() for r in self.rule_sets]

    @classmethod
    def from_dict(cls, record: Any, where: str = FILE) -> "RulesRecord":
        require_fit(cls.SCHEMA, record, where)
        return cls(tuple(rules_from_dict(d) for d in record))


def versions() -> dict:
    import torch
    import torchvision

    return {"netspec": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def resolved_spec(checked) -> dict:
    """The spec with defaults written out; a rules file (not shipped) is referred to as its copy: a portable folder."""
    data = checked.spec.to_dict()
    ref = data.get("rules")
    if ref and ref not in shipped_rule_sets():
        data["rules"] = SPEC_RULES
    return data


def write_rules(run_dir: RunDir, checked) -> None:
    """rules.json, and the spec's own rules file copied beside it (spec-rules.yaml)."""
    run_dir.write_record(RulesRecord(tuple(checked.rules)))
    ref = checked.spec.rules
    own = resolve_rules(ref, Path(checked.doc.file).parent) if ref and ref not in shipped_rule_sets() else None
    if own is not None:
        run_dir.write_text(SPEC_RULES, own.read_text(encoding="utf-8"))


def history_csv(history: list[EpochStats]) -> str:
    from netspec.runner.trainer import EpochStats

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(EpochStats)])
    writer.writeheader()
    writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(h).items()} for h in history)
    return buf.getvalue()


def read_history(run_dir: RunDir) -> list[EpochStats]:
    from netspec.runner.trainer import EpochStats

    columns = [f.name for f in fields(EpochStats)]
    try:
        with open(run_dir / "history.csv", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != columns:
                raise ValueError(f"its columns are {reader.fieldnames}, a history's {columns}")
            return [EpochStats(**{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}) for row in reader]
    except (OSError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot read {run_dir / 'history.csv'}: {e}") from None
