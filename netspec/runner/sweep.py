"""Sweeps: search over spec settings with Optuna, every trial an ordinary run.

The space comes from the spec's `sweep:` section and/or the command line
(`--grid key=v1,v2`, `--range key=low:high[:log][:int]`). Before any trial
starts, the whole space is checked against the spec's rules: a swept setting
that a rule fixes, or values that break a budget, are refused up front.

The study lives in SQLite (in the sweep folder unless `--storage` says
otherwise), so an interrupted sweep run again continues where it stopped, and
several machines can share one study. The best trial is chosen on
validation accuracy; its test accuracy is reported, never used to choose.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from netspec.errors import Problem, RunError, SpecError
from netspec.runner.run import Reporter, run
from netspec.runner.train import Observer
from netspec.spec.loader import Document, load_file, load_text
from netspec.builder.check import Checked, check_document
from netspec.spec.overrides import apply_overrides

MAX_GRID = 10_000  # combinations; a larger grid is surely a mistake


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class Space:
    grid: dict[str, list] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    sampler: str = "grid"  # grid | tpe | random
    trials: int | None = None  # budget; grid: its size
    prune: bool = False

    @property
    def keys(self) -> list[str]:
        return list(self.grid) + list(self.ranges)

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1

    def combinations(self) -> list[dict]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]


def parse_grid(text: str) -> tuple[str, list]:
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise SpecError([Problem(f"--grid {text}", 0, 0, "", "expected key=v1,v2,... e.g. train.batch_size=32,64,128")])
    parsed = [load_text(v.strip(), f"--grid {text}").data for v in values.split(",")]
    return key.strip(), parsed


def parse_range(text: str) -> tuple[str, Range]:
    key, sep, rest = text.partition("=")
    parts = rest.split(":")
    where = f"--range {text}"
    try:
        if not sep or len(parts) < 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
        flags = set(parts[2:])
        if flags - {"log", "int"} or not low < high or ("log" in flags and low <= 0):
            raise ValueError
    except ValueError:
        raise SpecError([Problem(where, 0, 0, "", "expected key=low:high[:log][:int] with low < high "
                                                  "(and low > 0 for log), e.g. train.optimizer.lr=1e-4:1e-2:log")]) from None
    return key.strip(), Range(low, high, "log" in flags, "int" in flags)


def make_space(doc: Document, grid: list[str], ranges: list[str], sampler: str | None,
               trials: int | None, prune: bool | None) -> Space:
    """The spec's `sweep:` section, extended (and overridden key by key) by the command line."""
    section = doc.data.get("sweep") or {} if isinstance(doc.data, dict) else {}
    space = Space(
        grid={k: list(v) for k, v in (section.get("grid") or {}).items()},
        ranges={k: Range(v["low"], v["high"], v.get("log", False), v.get("int", False))
                for k, v in (section.get("range") or {}).items()},
        sampler=section.get("sampler", "grid"), trials=section.get("trials"), prune=section.get("prune", False),
    )
    for text in grid:
        k, v = parse_grid(text)
        space.ranges.pop(k, None)
        space.grid[k] = v
    for text in ranges:
        k, r = parse_range(text)
        space.grid.pop(k, None)
        space.ranges[k] = r
    if sampler:
        space.sampler = sampler
    if trials is not None:
        if trials < 1:
            raise SpecError([Problem(f"--trials {trials}", 0, 0, "", "the trial budget must be at least 1")])
        space.trials = trials
    if prune is not None:
        space.prune = prune
    if not space.keys:
        raise SpecError([Problem(doc.file, 0, 0, "sweep", "nothing to sweep: add a sweep: section or --grid/--range")])
    if space.ranges and space.sampler == "grid":
        space.sampler = "tpe"  # a continuous range cannot be a grid
    if space.grid_size() > MAX_GRID:
        raise SpecError([Problem(doc.file, 0, 0, "sweep", f"the grid has {space.grid_size():,} combinations; at most {MAX_GRID:,}")])
    return space


def _with(doc: Document, values: dict, keep_sweep: bool = False) -> Document:
    """A copy of the spec with `values` set (and without its sweep section, unless kept)."""
    trial = Document(copy.deepcopy(doc.data), doc.file, doc.positions, doc.key_positions, doc.texts, dict(doc.overrides))
    if not keep_sweep:
        trial.data.pop("sweep", None)
    apply_overrides(trial, [f"{k}={_yaml(v)}" for k, v in values.items()])
    return trial


def _yaml(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: lists, numbers and strings round-trip


def check_space(doc: Document, space: Space, imposed: tuple[str, ...], base_dir: Path) -> Checked:
    """Refuse, before any training, a sweep that varies a fixed setting or breaks a rule."""
    base = check_document(_with(doc, {}), imposed=imposed, base_dir=base_dir)
    problems = []
    for rules in base.rules:
        fixed = dict(rules.fixed)
        for key in space.keys:
            if key in fixed:
                values = space.grid.get(key) or [space.ranges[key].low, space.ranges[key].high]
                if any(v != fixed[key] for v in values):
                    problems.append(Problem(
                        "sweep", 0, 0, key,
                        f"rules '{rules.name}' fix {key} at {fixed[key]}; the sweep tries {values}",
                        "remove it from the sweep: fixed settings may not be tuned"))
    if problems:
        raise SpecError(problems)
    # every grid combination, and every corner of the ranges, must pass the rules
    corners = [dict(zip(space.ranges, c)) for c in itertools.product(
        *([(r.low, r.high) for r in space.ranges.values()]))] if space.ranges else [{}]
    for combo in space.combinations():
        for corner in corners:
            values = {**combo, **{k: _cast(space.ranges[k], v) for k, v in corner.items()}}
            try:
                check_document(_with(doc, values), imposed=imposed, base_dir=base_dir)
            except SpecError as e:
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                problems += [Problem("sweep", 0, 0, p.path, f"with {shown}: {p.message}", p.hint) for p in e.problems]
    if problems:
        raise SpecError(problems)
    return base


def _cast(r: Range, v: float):
    return int(round(v)) if r.integer else v


def encode_value(value):
    """Optuna's choices are scalars; a list or mapping (a whole layer list) travels as JSON text."""
    return _JSON + json.dumps(value) if isinstance(value, (list, dict)) else value


def decode_value(value):
    return json.loads(value[len(_JSON):]) if isinstance(value, str) and value.startswith(_JSON) else value


_JSON = "json:"


def _sampler(space: Space, seed: int):
    if space.sampler == "grid":
        return optuna.samplers.GridSampler({k: [encode_value(o) for o in v] for k, v in space.grid.items()}, seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class _Pruning(Observer):
    """Reports each epoch's validation accuracy to Optuna and stops hopeless trials."""

    def __init__(self, trial: optuna.Trial, inner: Observer | None, prune: bool):
        self.trial, self.inner, self.prune = trial, inner or Observer(), prune

    def start(self, **kw):
        self.inner.start(**kw)

    def step(self, **kw):
        self.inner.step(**kw)

    def epoch(self, stats):
        self.inner.epoch(stats)
        self.trial.report(stats.val_acc, stats.epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {stats.epoch} (val acc {stats.val_acc:.4f})")


@dataclass
class SweepResult:
    folder: Path
    study: optuna.Study
    space: Space


def sweep(spec_path: str | Path, *, grid: list[str] = (), ranges: list[str] = (), sampler: str | None = None,
          trials: int | None = None, prune: bool | None = None, storage: str | None = None,
          out: str | Path | None = None, imposed: tuple[str, ...] = (), data_dir=None, limit: int | None = None,
          overrides: tuple[str, ...] = (), reporter: Reporter | None = None,
          observer: Callable[[optuna.Trial, dict], Observer] | None = None,
          on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> SweepResult:
    doc = load_file(spec_path)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), "a spec is a mapping of keys")])
    if overrides:  # --set: the base spec of every trial (e.g. fewer epochs for a quick sweep)
        apply_overrides(doc, list(overrides))
    base_dir = Path(spec_path).parent
    check_document(_with(doc, {}, keep_sweep=True), imposed=imposed, base_dir=base_dir)  # the sweep section too
    space = make_space(doc, list(grid), list(ranges), sampler, trials, prune)
    base = check_space(doc, space, imposed, base_dir)
    folder = Path(out) if out else Path("runs") / f"{base.spec.name}-sweep"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot write the sweep folder {folder}: {e.strerror or e}") from None
    own_storage = storage is None
    storage = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if space.prune else optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=base.spec.name, storage=storage, load_if_exists=True,
                                    direction="maximize", sampler=_sampler(space, base.spec.train.seed), pruner=pruner)
    except Exception as e:  # bad URL, unreadable database: one line for the user
        raise RunError(f"cannot open the study storage {storage}: {e}") from None
    if base.spec.data.validation == 0:
        raise SpecError([Problem(str(spec_path), 0, 0, "data.validation",
                                 "a sweep chooses on validation accuracy, and data.validation is 0",
                                 "hold out some training images, e.g. data.validation: 5000")])
    recorded_limit = study.user_attrs.get("limit", "unset")
    if recorded_limit != "unset" and recorded_limit != limit:
        shown = lambda v: "the full training set" if v is None else f"--limit {v}"  # noqa: E731
        raise RunError(f"this sweep's trials trained on {shown(recorded_limit)}; rerunning it with {shown(limit)} would "
                       f"rank trials trained on different data side by side. Rerun with the same --limit, "
                       f"or start a new sweep with --out")
    study.set_user_attr("limit", limit)
    study.set_user_attr("space", {"grid": space.grid, "ranges": {k: vars(r) for k, r in space.ranges.items()},
                                  "sampler": space.sampler})
    _requeue_interrupted(study, own_storage)

    def objective(trial: optuna.Trial) -> float:
        values = {}
        for key, options in space.grid.items():
            values[key] = decode_value(trial.suggest_categorical(key, [encode_value(o) for o in options]))
        for key, r in space.ranges.items():
            values[key] = (trial.suggest_int(key, int(r.low), int(r.high), log=r.log) if r.integer
                           else trial.suggest_float(key, r.low, r.high, log=r.log))
        checked = check_document(_with(doc, values), imposed=imposed, base_dir=base_dir)
        trial_dir = folder / f"trial-{trial.number:03d}"
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        trial.set_user_attr("run_dir", str(trial_dir))
        trial.set_user_attr("params_count", checked.analysis.params)
        inner = observer(trial, values) if observer else None
        try:
            result = run(checked, out=trial_dir, data_dir=data_dir, observer=_Pruning(trial, inner, space.prune),
                         limit=limit, reporter=reporter)
        except RunError as e:
            trial.set_user_attr("error", str(e))
            raise
        m = result.metrics
        trial.set_user_attr("test_accuracy", m["test_accuracy"])
        trial.set_user_attr("seconds", m["train_seconds"])
        trial.set_user_attr("train_size", m["train_size"])
        return m["final_val_accuracy"]  # the saved model's, the one its test accuracy belongs to

    budget = space.grid_size() if space.sampler == "grid" and not space.trials else (space.trials or 20)
    done = len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.FAIL and "error" in t.user_attrs)])
    remaining = budget - done
    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, callbacks=callbacks, catch=(RunError,))
    return SweepResult(folder, study, space)


def _requeue_interrupted(study: optuna.Study, own_storage: bool) -> None:
    """Trials cut short by an interrupt run again (a real failure does not)."""
    finished = [t.params for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    waiting = [t.params for t in study.trials if t.state == TrialState.WAITING]
    for t in study.trials:
        if t.state == TrialState.RUNNING and own_storage:  # nobody else runs this local study
            study.tell(t.number, state=TrialState.FAIL)
        elif t.state != TrialState.FAIL or "error" in t.user_attrs:
            continue
        if t.params and t.params not in finished and t.params not in waiting:
            study.enqueue_trial(t.params)
            waiting.append(t.params)
