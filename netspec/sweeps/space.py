"""A sweep's search space: the spec's `sweep:` section and the command line's --grid and --range,
parsed, and checked against the spec's rules before any trial trains."""
from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.check.checker import Checked, check_document
from netspec.errors import Problem, SpecError
from netspec.spec.loader import Document, load_text
from netspec.spec.overrides import apply_overrides


MAX_GRID = 10_000  # combinations; a larger grid is surely a mistake


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def bounds(self) -> tuple:
        """The values tried at the ends: for integers ceil(low)..floor(high), one rule for
        checking and for sampling."""
        return (math.ceil(self.low), math.floor(self.high)) if self.integer else (self.low, self.high)


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
        if "int" in flags and (math.ceil(low) > math.floor(high) or ("log" in flags and math.ceil(low) < 1)):
            raise SpecError([Problem(where, 0, 0, key.strip(), f"no whole number {'>= 1 ' if 'log' in flags else ''}lies "
                                     f"between {low} and {high}", "integer ranges use ceil(low)..floor(high)")])
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


def with_values(doc: Document, values: dict, keep_sweep: bool = False) -> Document:
    """A copy of the spec with `values` set (and without its sweep section, unless kept)."""
    trial = Document(copy.deepcopy(doc.data), doc.file, doc.positions, doc.key_positions, doc.texts, dict(doc.overrides))
    if not keep_sweep:
        trial.data.pop("sweep", None)
    apply_overrides(trial, [f"{k}={_yaml(v)}" for k, v in values.items()])
    return trial


def _yaml(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: lists, numbers and strings round-trip


def check_space(doc: Document, space: Space, imposed: tuple[str, ...], base_dir: Path, draft: bool = False) -> Checked:
    """Refuse, before any training, a sweep that varies a fixed setting (unless a draft) or breaks a rule."""
    base = check_document(with_values(doc, {}), imposed=imposed, base_dir=base_dir, draft=draft)
    problems = []
    for rules in base.rules if not draft else ():
        fixed = dict(rules.fixed)
        for key in space.keys:
            if key in fixed:
                values = space.grid.get(key) or list(space.ranges[key].bounds())
                if any(v != fixed[key] for v in values):
                    problems.append(Problem(
                        "sweep", 0, 0, key,
                        f"rules '{rules.name}' fix {key} at {fixed[key]}; the sweep tries {values}",
                        "remove it from the sweep: fixed settings may not be tuned"))
    if problems:
        raise SpecError(problems)
    # every grid combination, and every corner of the ranges, must pass the rules
    corners = [dict(zip(space.ranges, c)) for c in itertools.product(
        *([r.bounds() for r in space.ranges.values()]))] if space.ranges else [{}]
    for combo in space.combinations():
        for corner in corners:
            values = {**combo, **corner}
            try:
                check_document(with_values(doc, values), imposed=imposed, base_dir=base_dir, draft=draft)
            except SpecError as e:
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                problems += [Problem("sweep", 0, 0, p.path, f"with {shown}: {p.message}", p.hint) for p in e.problems]
    if problems:
        raise SpecError(problems)
    return base


def encode_value(value):
    """Optuna's choices are scalars; a list or mapping (a whole layer list) travels as JSON text."""
    return _JSON + json.dumps(value) if isinstance(value, (list, dict)) else value


def decode_value(value):
    return json.loads(value[len(_JSON):]) if isinstance(value, str) and value.startswith(_JSON) else value


_JSON = "json:"


def budget(space: Space) -> int:
    return space.grid_size() if space.sampler == "grid" and not space.trials else (space.trials or 20)
