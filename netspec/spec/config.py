"""Typed, frozen spec objects. Built only from data the schema has accepted,
so builders and the runner never see raw dicts or check user input again."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from netspec.spec.datasets import DEFAULT_FILE_VALIDATION, FILES
from netspec.spec.family import FAMILIES, Family, family_of, plain


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "mnist"  # a name in netspec/spec/datasets.py, imagefolder, npz or none
    path: str | None = None  # imagefolder: a folder; npz: a file (relative to the spec; absolute once checked)
    image_shape: tuple[int, ...] | None = None  # (C, H, W) of a stored image; the check fills it in
    classes: int | None = None  # number of classes; the check fills it in (stated, it is checked)
    validation: int | float = 5000  # images held out of training (a float below 1: a share)
    test: int | float | None = None  # a single folder or array without a test split: held out as test
    layout: str | None = None  # npz: NHW, NHWC or NCHW, where the image array's shape reads both ways
    mean: tuple[float, ...] | None = None  # per-channel normalisation; None: computed on the training split
    std: tuple[float, ...] | None = None
    loading: str = "auto"  # memory | stream | auto (memory when the float tensors fit memory_mb)
    memory_mb: int = 2048  # the cap for keeping a whole dataset as float tensors on the device
    workers: int | str = "auto"  # DataLoader worker processes when streaming or decoding files; auto: see splits.py
    input_shape: tuple[int, ...] = (1, 28, 28)  # one sample, no batch dimension; unsaid: the dataset's image shape


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adam"
    lr: float = 1e-3  # the peak rate under onecycle
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW only


@dataclass(frozen=True)
class ScheduleSpec:
    name: str = "none"  # none | onecycle | cosine
    pct_start: float = 0.25  # onecycle warm-up share
    min_lr: float = 0.0  # cosine floor
    # onecycle's momentum cycling (torch's default) replaces Adam's beta1 / SGD's momentum with a
    # value cycled between these two; it is written out so the resolved spec says what trained
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    @property
    def cycles_momentum(self) -> bool:
        return self.name == "onecycle" and self.cycle_momentum


@dataclass(frozen=True)
class AugmentSpec:
    shift: float = 0.0  # pixels each way
    rotate: float = 0.0  # degrees each way
    scale: float = 0.0  # zoom fraction each way

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)


@dataclass(frozen=True)
class TrainSpec:
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 1000  # evaluation only; does not change results
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    label_smoothing: float = 0.0
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    # how the hardware is used (netspec/runner/speed.py); "auto" is decided per device and
    # written out in the run folder's spec.yaml
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: str | bool = "auto"
    compile: str = "auto"  # auto | off | on | cudagraphs
    fused_attention: str | bool = "auto"
    deterministic: bool = False
    sync_batchnorm: bool = False  # several processes: BatchNorm over all of them (SyncBatchNorm; GPUs)


@dataclass(frozen=True)
class Spec:
    name: str
    model: Any  # a registered family's frozen config (netspec/families)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    rules: str | None = None
    description: str = ""
    sweep: dict | None = None  # validated by the schema; read by the sweep runner
    lint_ignore: tuple[str, ...] = ()  # linter warnings this spec silences (lint: {ignore: [...]})

    @property
    def family(self) -> Family:
        return family_of(self.model)

    def to_dict(self) -> dict:
        """The resolved spec: every default written out, loadable again."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.rules:
            out["rules"] = self.rules
        out["data"] = {k: v for k, v in plain(asdict(self.data)).items() if v is not None}
        out["model"] = {self.family.key: plain(self.family.to_dict(self.model))}
        out["train"] = plain(asdict(self.train))
        if self.sweep:
            out["sweep"] = plain(self.sweep)
        if self.lint_ignore:
            out["lint"] = {"ignore": list(self.lint_ignore)}
        return out


def _pick(cls, raw: dict | None, **nested):
    raw = dict(raw or {})
    for key, value in list(raw.items()):
        if isinstance(value, list):
            raw[key] = tuple(value)
    raw.update(nested)
    return cls(**raw)


def spec_from_dict(data: dict) -> Spec:
    """Build the frozen spec from schema-valid data."""
    (key, raw), = data["model"].items()
    built = FAMILIES[key].parse(raw)
    train = dict(data.get("train") or {})
    if isinstance(train.get("compile"), bool):  # YAML 1.1 reads `compile: off` as false
        train["compile"] = "on" if train["compile"] else "off"
    data_section = dict(data.get("data") or {})
    if data_section.get("dataset") in FILES and "validation" not in data_section:
        data_section["validation"] = DEFAULT_FILE_VALIDATION
    return Spec(
        name=data["name"],
        description=data.get("description", ""),
        rules=data.get("rules"),
        model=built,
        data=_pick(DataSpec, data_section),
        train=_pick(
            TrainSpec, {k: v for k, v in train.items() if k not in ("optimizer", "schedule", "augment")},
            optimizer=_pick(OptimizerSpec, train.get("optimizer")),
            schedule=_pick(ScheduleSpec, train.get("schedule")),
            augment=_pick(AugmentSpec, train.get("augment")),
        ),
        sweep=data.get("sweep"),
        lint_ignore=tuple((data.get("lint") or {}).get("ignore", ())),
    )


def get_path(data: Any, dotted: str) -> Any:
    """Value at a dotted key (`train.optimizer.name`, `model.layers.3.Linear.p`); KeyError if absent."""
    for part in split_key(dotted):
        if not isinstance(data, (list, dict)):
            raise KeyError(dotted)
        data = data[part]
    return data


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested mappings as dotted keys: {"train": {"epochs": 10}} -> {"train.epochs": 10}."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def split_key(dotted: str) -> tuple:
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in dotted.split("."))
