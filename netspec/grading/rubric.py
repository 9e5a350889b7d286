"""A rubric: how an instructor grades a class of specs. Read like a spec (located errors), no torch.

Keys (every one but `points` optional):
  name       how reports call the assignment (default: the file's name)
  rules      rule sets (shipped names or files beside the rubric) that replace whatever a
             submission's own `rules:` names; identical sets count once
  locked     dotted spec key -> value, set in every submission before it trains (seed, epochs,
             device, data set); the rules judge the spec as submitted, training uses these
  limit      train on the first N training images (retrain mode)
  mode       retrain (train each spec from scratch under the locked settings) or evaluate (test
             the submitted model.pt, which must match the spec's architecture exactly)
  test       where test accuracy is measured: {dataset: mnist} (its test split, the default) or
             {path: hidden.npz} (an npz or image folder only the instructor has)
  points     valid: points for a spec that is valid apart from the rules
             rules: points per rule item passed (a number, or per kind: layers, blocks, params,
                    hidden-units, required-layers, fixed)
             accuracy: [{at_least: 0.99, points: 40}, ...] (the highest reached) or
                       {from: 0.90, to: 0.99, points: 40} (linear between the two, clipped)
             accuracy_needs_rules: accuracy points only when every rule passes (default true)
  limits     seconds and memory_mb per submission (start-up, data and training included)
  visibility Gradescope's visibility of the tests (visible, hidden, after_due_date, after_published)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import Problem, SpecError
from netspec.spec.loader import Document, load_file
from netspec.spec.rules import Rules, load_rules, resolve_rules, same_rules, shipped_rule_sets
from netspec.spec.schema_errors import schema_problems

RULE_KINDS = ("layers", "blocks", "params", "hidden-units", "required-layers", "fixed")
VISIBILITY = ("visible", "hidden", "after_due_date", "after_published")
_POINTS = {"type": "number", "minimum": 0}

RUBRIC_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["points"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "rules": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "locked": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "array"]}},
        "limit": {"type": "integer", "minimum": 1},
        "mode": {"enum": ["retrain", "evaluate"]},
        "test": {"oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["dataset"],
             "properties": {"dataset": {"type": "string"}}},
            {"type": "object", "additionalProperties": False, "required": ["path"],
             "properties": {"path": {"type": "string", "minLength": 1}}},
        ]},
        "points": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "valid": _POINTS,
                "rules": {"oneOf": [_POINTS, {"type": "object", "additionalProperties": False,
                                              "properties": {k: _POINTS for k in RULE_KINDS}}]},
                "accuracy": {"oneOf": [
                    {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False, "required": ["at_least", "points"],
                        "properties": {"at_least": {"type": "number", "minimum": 0, "maximum": 1}, "points": _POINTS}}},
                    {"type": "object", "additionalProperties": False, "required": ["from", "to", "points"],
                     "properties": {"from": {"type": "number", "minimum": 0, "maximum": 1},
                                    "to": {"type": "number", "minimum": 0, "maximum": 1}, "points": _POINTS}},
                ]},
                "accuracy_needs_rules": {"type": "boolean"},
            },
        },
        "limits": {"type": "object", "additionalProperties": False, "properties": {
            "seconds": {"type": "number", "exclusiveMinimum": 0},
            "memory_mb": {"type": "integer", "minimum": 64}}},
        "visibility": {"enum": list(VISIBILITY)},
    },
}


@dataclass(frozen=True)
class Rubric:
    name: str
    file: str
    rules: tuple[Rules, ...] = ()
    locked: tuple[tuple[str, Any], ...] = ()
    limit: int | None = None
    mode: str = "retrain"
    test_dataset: str | None = "mnist"  # the named set whose test split is the test data
    test_path: str | None = None  # or a hidden set (absolute)
    valid_points: float = 0
    rule_points: dict = field(default_factory=dict)  # kind -> points per item
    accuracy: tuple = ()  # ((at_least, points), ...) highest first, or (("linear", from, to, points),)
    accuracy_needs_rules: bool = True
    seconds: float = 600.0
    memory_mb: int | None = None
    visibility: str = "visible"
    description: str = ""

    @property
    def hidden_test(self) -> bool:
        return self.test_path is not None

    def accuracy_max(self) -> float:
        if not self.accuracy:
            return 0
        if self.accuracy[0][0] == "linear":
            return self.accuracy[0][3]
        return max(p for _, p in self.accuracy)

    def accuracy_points(self, acc: float | None) -> float:
        if acc is None or not self.accuracy:
            return 0
        if self.accuracy[0][0] == "linear":
            _, low, high, points = self.accuracy[0]
            share = 1.0 if acc >= high else 0.0 if acc <= low else (acc - low) / (high - low)
            return round(points * share, 2)
        return max((p for at_least, p in self.accuracy if acc >= at_least), default=0)

    def locked_assignments(self) -> list[str]:
        """The locked settings as `--set` would write them (JSON values are YAML)."""
        import json

        return [f"{k}={json.dumps(v)}" for k, v in self.locked]


def load_rubric(path: str | Path) -> Rubric:
    """The rubric file, checked against its schema (every problem at its line), with its rule sets
    and hidden test data resolved beside it."""
    path = Path(path)
    doc: Document = load_file(path)
    problems = schema_problems(doc, RUBRIC_SCHEMA)
    if problems:
        raise SpecError(problems)
    data, base = doc.data, path.parent
    rule_sets: list[Rules] = []
    for i, ref in enumerate(data.get("rules", [])):
        where = resolve_rules(ref, base)
        if where is None:
            problems.append(doc.problem(("rules", i), f"rules '{ref}' not found: not a shipped rule set "
                                        f"({', '.join(shipped_rule_sets())}) nor a file beside the rubric", code="rules"))
            continue
        loaded = load_rules(where)
        if not any(same_rules(loaded, seen) for seen in rule_sets):
            rule_sets.append(loaded)
    test = data.get("test", {})
    test_path = None
    if "path" in test:
        hidden = Path(test["path"]) if Path(test["path"]).is_absolute() else base / test["path"]
        if not hidden.exists():
            problems.append(doc.problem(("test", "path"), f"{hidden} does not exist", code="rubric/test"))
        test_path = str(hidden.resolve())
    points = data["points"]
    accuracy = points.get("accuracy", ())
    if isinstance(accuracy, dict):
        if not accuracy["from"] < accuracy["to"]:
            problems.append(doc.problem(("points", "accuracy"), "from must be below to", code="rubric/points"))
        accuracy = (("linear", accuracy["from"], accuracy["to"], accuracy["points"]),)
    else:
        accuracy = tuple(sorted(((a["at_least"], a["points"]) for a in accuracy), reverse=True))
    per_rule = points.get("rules", 0)
    if problems:
        raise SpecError(problems)
    limits = data.get("limits", {})
    return Rubric(
        name=data.get("name", path.stem), file=str(path), rules=tuple(rule_sets),
        locked=tuple(data.get("locked", {}).items()), limit=data.get("limit"), mode=data.get("mode", "retrain"),
        test_dataset=None if test_path else test.get("dataset", "mnist"), test_path=test_path,
        valid_points=points.get("valid", 0),
        rule_points=dict(per_rule) if isinstance(per_rule, dict) else {k: per_rule for k in RULE_KINDS},
        accuracy=accuracy, accuracy_needs_rules=points.get("accuracy_needs_rules", True),
        seconds=float(limits.get("seconds", 600)), memory_mb=limits.get("memory_mb"),
        visibility=data.get("visibility", "visible"), description=data.get("description", ""),
    )


def rubric_problem(rubric: Rubric, message: str) -> SpecError:
    return SpecError([Problem(rubric.file, 0, 0, "", message, code="rubric")])
