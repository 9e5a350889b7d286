"""A rubric: how an instructor grades a class of specs. Read like a spec (located errors), no torch.

Keys (every one but `points` optional):
  name       how reports call the assignment (default: the file's name)
  rules      rule sets (shipped names or files beside the rubric) that replace whatever a
             submission's own `rules:` names; identical sets count once
  locked     dotted spec key -> value, set in every submission before it trains (seed, epochs,
             device, data set); the rules judge the spec as submitted, training uses these. Checked
             when the rubric loads: each key a spec setting, each value what a spec may say there,
             and together written into a small reference spec, which must still pass the spec check
             (data set facts, the parameter and activation limits)
  limit      train on the first N training images (retrain mode)
  mode       retrain (train each spec from scratch under the locked settings) or evaluate (test
             the submitted model.pt, which must match the spec's architecture exactly)
  test       where test accuracy is measured: {dataset: mnist} (its test split, the default) or
             {path: hidden.npz} (an npz or image folder only the instructor has); an image folder
             is read at image_shape: [channels, height, width] where given (channels 1 = grayscale,
             3 = RGB), else at its first image's shape and colour
  points     (each value 0 to MAX_POINTS)
             valid: points for a spec that is valid apart from the rules
             rules: points per rule item passed (a number, or per kind: layers, blocks, params,
                    hidden-units, required-layers, fixed)
             accuracy: [{at_least: 0.99, points: 40}, ...] (the highest reached) or
                       {from: 0.90, to: 0.99, points: 40} (linear between the two, clipped)
             accuracy_needs_rules: accuracy points only when every rule passes (default true)
  limits     seconds and memory_mb per submission (start-up, data and training included)
  visibility Gradescope's visibility of the tests (visible, hidden, after_due_date, after_published)
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netspec.errors import Problem, SpecError
from netspec.families.chain import MAX_ITEMS  # the longest list a spec holds (one layer list)
from netspec.spec.config import split_key
from netspec.spec.datasets import FILES, NAMED
from netspec.spec.loader import Document, format_path, load_file
from netspec.spec.rules import Rules, load_rules, resolve_rules, same_rules, shipped_rule_sets
from netspec.spec.schema import spec_schema
from netspec.spec.schema_errors import schema_problems

RULE_KINDS = ("layers", "blocks", "params", "hidden-units", "required-layers", "fixed")
VISIBILITY = ("visible", "hidden", "after_due_date", "after_published")
MAX_POINTS = 10_000  # any one points value; a whole class's gradebook stays finite and readable
_POINTS = {"type": "number", "minimum": 0, "maximum": MAX_POINTS}
_SIZE = {"type": "integer", "minimum": 1, "maximum": 4096}  # as a spec's data.image_shape
_STEP = {"type": "object", "additionalProperties": False, "required": ["at_least", "points"],
         "properties": {"at_least": {"type": "number", "minimum": 0, "maximum": 1}, "points": _POINTS}}

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
        "test": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
            "dataset": {"enum": list(NAMED)},
            "path": {"type": "string", "minLength": 1},
            "image_shape": {"type": "array", "minItems": 3, "maxItems": 3,
                            "prefixItems": [{"enum": [1, 3]}, _SIZE, _SIZE], "items": _SIZE}}},
        "points": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "valid": _POINTS,
                "rules": {"if": {"type": "object"}, "then": {"additionalProperties": False, "properties": {
                    k: _POINTS for k in RULE_KINDS}}, "else": _POINTS},
                "accuracy": {  # a list is steps, a mapping linear credit: each judged as what it is
                    "if": {"type": "array"},
                    "then": {"type": "array", "minItems": 1, "items": _STEP},
                    "else": {"type": "object", "additionalProperties": False, "required": ["from", "to", "points"],
                             "properties": {"from": {"type": "number", "minimum": 0, "maximum": 1},
                                            "to": {"type": "number", "minimum": 0, "maximum": 1}, "points": _POINTS}},
                },
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
    test_image_shape: tuple[int, int, int] | None = None  # (C, H, W) a hidden image folder is read at; None: its first image's
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
    problems = _readable(schema_problems(doc, RUBRIC_SCHEMA), doc)
    if problems:
        raise SpecError(problems)
    data, base = doc.data, path.parent
    problems += locked_problems(doc, data.get("locked", {}), base)
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
    if "dataset" in test and "path" in test:
        problems.append(doc.problem(("test",), "test is a named set's test split (dataset) or a hidden set (path), "
                                    "not both", code="rubric/test"))
    if "image_shape" in test and "path" not in test:
        problems.append(doc.problem(("test", "image_shape"), "image_shape is the size a hidden image folder "
                                    "(test.path) is read at; a named set's images have their own",
                                    "remove image_shape, or give test.path", code="rubric/test"))
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
        test_image_shape=tuple(test["image_shape"]) if "image_shape" in test else None,
        valid_points=points.get("valid", 0),
        rule_points=dict(per_rule) if isinstance(per_rule, dict) else {k: per_rule for k in RULE_KINDS},
        accuracy=accuracy, accuracy_needs_rules=points.get("accuracy_needs_rules", True),
        seconds=float(limits.get("seconds", 600)), memory_mb=limits.get("memory_mb"),
        visibility=data.get("visibility", "visible"), description=data.get("description", ""),
    )


def _readable(problems: list[Problem], doc: Document) -> list[Problem]:
    """The schema's problems, with linear credit written as a step of a list said in words (the
    schema alone reports unknown keys from and to, and at_least missing)."""
    accuracy = doc.data.get("points", {}).get("accuracy") if isinstance(doc.data, dict) and isinstance(
        doc.data.get("points"), dict) else None
    if not isinstance(accuracy, list):
        return problems
    linear = [i for i, step in enumerate(accuracy) if isinstance(step, dict) and {"from", "to"} & set(step)]
    inside = tuple(f"points.accuracy[{i}]" for i in linear)
    return [p for p in problems if not p.path.startswith(inside)] + [
        doc.problem(("points", "accuracy", i), "each accuracy step is {at_least, points}; for linear credit write "
                    "accuracy: {from, to, points} without the list", code="rubric/points") for i in linear]


# --- locked settings --------------------------------------------------------------

# What the locked settings are written into to be checked as a spec: small, valid, and shaped by the
# data set whatever it is (Flatten first), so a problem after the locks are written is theirs.
REFERENCE_SPEC = {"name": "locked-settings", "model": {"layers": [
    "Flatten", {"Linear": {"out_features": 100}}, "ReLU", {"Linear": {"out_features": 10}}]}}
REFERENCE_MODEL = "Flatten, Linear(100), ReLU, Linear(10)"
_SKIPPED = ("schema/required", "schema/one-key")  # about the settings no lock gives, not about the locks


def locked_problems(doc: Document, locked: dict, base: Path) -> list[Problem]:
    """Each bad locked setting of a rubric, at its line: a key that is no spec setting (with the
    schema's did-you-mean), a value a spec may not hold there, then, those being right, what the
    spec check finds once they are written into REFERENCE_SPEC (a data set's facts, a model over
    netspec's parameter or activation limits)."""
    if not locked:
        return []
    return _locked_schema_problems(doc, locked) or _locked_check_problems(doc, locked, base)


def _locked_schema_problems(doc: Document, locked: dict) -> list[Problem]:
    """The locked values placed at their keys in an otherwise empty spec, checked by the spec's
    schema; a problem at or under a key is that key's, as is one at a key above it (an unknown
    section, a layer name), except a setting missing there that no lock was meant to give."""
    skeleton, problems, keys = Document(data={}, file=doc.file), [], []
    for key, value in locked.items():
        placed = copy.deepcopy(skeleton.data)  # kept only if the value finds its place
        refused = _place(placed, split_key(key), copy.deepcopy(value))
        if refused is not None:
            problems.append(doc.problem(("locked", key), refused, code="rubric/locked"))
        else:
            skeleton.data = placed
            keys.append(key)
    for where, text in doc.texts.items():  # each value as the rubric writes it, for the messages
        if len(where) >= 2 and where[0] == "locked":
            skeleton.texts[split_key(where[1]) + tuple(where[2:])] = text
    from netspec.check.checker import names_in_any_case as _names_in_any_case

    _names_in_any_case(skeleton.data)  # as the check reads a spec: `optimizer.name: SGD` is sgd
    schema = spec_schema()
    for found in schema_problems(skeleton, schema):
        for key in keys:
            sub = _under(found.path, key)
            section = _section_keys(schema, key) if sub == () and found.code == "schema/type" else []
            if section:  # train.optimizer: sgd
                text = doc.texts.get(("locked", key), json.dumps(locked[key]))
                problems.append(_at_lock(doc, key, sub, replace(found, hint=f"{key} is a section of settings; "
                                         f"lock one of them, e.g. {key}.{section[0]}: {text}")))
            elif sub is not None:
                problems.append(_at_lock(doc, key, sub, found))
            elif _above(found.path, key) and found.code == "schema/type":  # model.layers.x, train.0
                want = found.message.rsplit(" is not ", 1)[-1]
                problems.append(doc.problem(("locked", key), f"'{key}' does not name a spec setting: "
                                            f"{found.path} is {want}", code="schema/unknown-key"))
            elif _above(found.path, key) and found.code not in _SKIPPED:
                problems.append(_at_lock(doc, key, (), found))
    return problems


def _locked_check_problems(doc: Document, locked: dict, base: Path) -> list[Problem]:
    """The locked settings written into REFERENCE_SPEC as the grader writes them into a submission
    (`--set`), and the spec checked without rules. A lock the reference cannot hold (a layer it does
    not have, another model family) is left out: the schema has judged it, and only a submission
    shows what it locks. So are data locks naming a file data set, which each submission finds
    relative to itself. A problem at or under a key is that key's; a limit at a key above it too."""
    from netspec.check.checker import check_document
    from netspec.spec.overrides import apply_overrides

    own_files = locked.get("data.dataset") in FILES or any(k.startswith("data.path") for k in locked)
    reference, applied = Document(data=copy.deepcopy(REFERENCE_SPEC), file="<locked settings>"), []
    for key, value in locked.items():
        if own_files and key.startswith("data."):
            continue
        attempt = copy.deepcopy(reference)
        try:
            apply_overrides(attempt, [f"{key}={json.dumps(value)}"])
        except SpecError:
            continue
        if schema_problems(attempt, spec_schema()):
            continue
        reference = attempt
        applied.append(key)
    try:
        check_document(reference, rule_sets=[], base_dir=base)
        return []
    except SpecError as e:
        found_all = e.problems
    if any(p.code == "limit" and p.path == "model" for p in found_all):  # too big: the batches' size follows
        found_all = [p for p in found_all if p.code != "limit" or p.path == "model"]
    problems = []
    for found in found_all:
        for key in applied:
            sub = _under(found.path, key)
            if sub is not None:
                problems.append(_at_lock(doc, key, sub, found))
            elif _above(found.path, key) and found.code == "limit":
                problems.append(_at_lock(doc, key, (), found, f" (in a small reference spec, {REFERENCE_MODEL}, "
                                                               "with the locked settings written in)"))
    return problems


def _section_keys(schema: dict, key: str) -> list[str]:
    """The keys of the spec's section at a dotted key (train.optimizer: name, lr, ...), or []."""
    node = schema
    for part in split_key(key):
        node = node.get("properties", {}).get(part) if isinstance(part, str) else None
        if not isinstance(node, dict):
            return []
    return list(node.get("properties", {})) if node.get("type") == "object" else []


def _place(data: dict, path: tuple, value) -> str | None:
    """`value` written at `path`, making the mappings and lists on the way (a list's earlier items
    left None, which no problem of a lock's is about); what stops it, in words, if something does."""
    if "" in path:
        return "a locked key is a dotted spec key, such as train.epochs, with no empty part"
    node = data
    for i, part in enumerate(path):
        if isinstance(node, list):
            if not isinstance(part, int):
                return f"'{format_path(path[:i])}' is a list (another locked key numbers its items), not a mapping"
            if part < 0:
                return "a locked key counts a list's items from 0"
            if part >= MAX_ITEMS:
                return f"item {part}: no list of a spec holds more than {MAX_ITEMS:,} items"
            node.extend([None] * (part + 1 - len(node)))
        elif not isinstance(node, dict):
            return f"'{format_path(path[:i])}' is locked to a value, so nothing is locked inside it"
        if i == len(path) - 1:
            node[part] = value
        elif isinstance(node, dict) and part not in node or isinstance(node, list) and node[part] is None:
            node[part] = [] if isinstance(path[i + 1], int) else {}
        node = node[part]
    return None


_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _under(found: str, key: str) -> tuple | None:
    """The rest of a problem's path below a locked key's (() at the key itself), or None."""
    at = format_path(split_key(key))
    if found == at:
        return ()
    if not found.startswith((at + ".", at + "[")):
        return None
    return tuple(name if name else int(index) for name, index in _PART.findall(found[len(at):]))


def _above(found: str, key: str) -> bool:
    at = format_path(split_key(key))
    return found == "" or at.startswith((found + ".", found + "["))


def _at_lock(doc: Document, key: str, sub: tuple, found: Problem, more: str = "") -> Problem:
    return doc.problem(("locked", key, *sub), found.message + more, found.hint, code=found.code)
