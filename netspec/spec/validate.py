"""Validation: load, apply `--set` overrides, check the schema, then the exact checks.

Stage 1 is the JSON Schema (narrowed to the rules' layer whitelist). Stage 2
builds the model on the meta device and checks what a schema cannot: shapes
fit, budgets, required layers and fixed settings. Every problem of a stage is
reported at once, each at its line and column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from netspec.builder.model import Analysis, analyze
from netspec.errors import Problem, SpecError
from netspec.spec.config import Spec, spec_from_dict, split_key
from netspec.spec.loader import Document, format_path, load_file, load_text
from netspec.spec.rules import RuleResult, Rules, allowed_layers, evaluate, load_rules, problems_of, resolve_rules, shipped_rule_sets
from netspec.spec.schema import spec_schema
from netspec.spec.schema_errors import schema_problems

IMAGE_VALUES = 28 * 28  # MNIST and Fashion-MNIST


@dataclass(frozen=True)
class Checked:
    """A spec that passed validation, with everything learned on the way."""

    spec: Spec
    doc: Document
    rules: tuple[Rules, ...]
    analysis: Analysis
    results: tuple[RuleResult, ...]

    @property
    def target_accuracy(self) -> float | None:
        targets = [r.target_accuracy for r in self.rules if r.target_accuracy is not None]
        return max(targets) if targets else None


def apply_overrides(doc: Document, assignments: list[str] | tuple[str, ...]) -> None:
    """`key=value` pairs (dotted keys, YAML values) written into the document."""
    problems = []
    for text in assignments:
        key, sep, raw = text.partition("=")
        where = f"--set {text}"
        if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
            problems.append(Problem(where, 0, 0, "", "expected key=value with a dotted key, e.g. train.epochs=5"))
            continue
        try:
            value = load_text(raw, where).data if raw.strip() else None
        except SpecError as e:
            problems.extend(Problem(where, 0, 0, key, p.message) for p in e.problems)
            continue
        path = split_key(key.strip())
        node = doc.data
        try:
            for part in path[:-1]:
                if isinstance(node, dict):
                    node = node.setdefault(part, {})
                else:
                    node = node[part]
            if not isinstance(node, (list, dict)):
                raise KeyError(key)
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            problems.append(Problem(where, 0, 0, format_path(path), f"'{key}' does not name a setting of this spec"))
            continue
        doc.overrides[path] = where
    if problems:
        raise SpecError(problems)


def _rule_sets(doc: Document, imposed: tuple[str, ...], base_dir: Path) -> tuple[list[Rules], list[Problem]]:
    found, problems = [], []
    ref = doc.data.get("rules") if isinstance(doc.data, dict) else None
    refs = ([(ref, base_dir, ("rules",))] if isinstance(ref, str) and ref else []) + [(r, Path.cwd(), None) for r in imposed]
    for name, base, path in refs:
        where = resolve_rules(name, base)
        if where is None:
            msg = f"rules '{name}' not found: not a shipped rule set ({', '.join(shipped_rule_sets())}) nor a file"
            problems.append(doc.problem(path, msg) if path else Problem(name, 0, 0, "", msg))
            continue
        try:
            found.append(load_rules(where))
        except SpecError as e:
            problems.extend(e.problems)
    return found, problems


def check_document(doc: Document, *, imposed: tuple[str, ...] = (), base_dir: Path = Path(".")) -> Checked:
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), f"a spec is a mapping of keys (name, data, model, train), not {type(doc.data).__name__}")])
    rule_sets, problems = _rule_sets(doc, imposed, base_dir)
    allowed = allowed_layers(rule_sets)
    problems += schema_problems(doc, spec_schema(allowed), allowed)
    if problems:
        raise SpecError(problems)

    spec = spec_from_dict(doc.data)
    if spec.data.dataset != "none" and math.prod(spec.data.input_shape) != IMAGE_VALUES:
        raise SpecError([doc.problem(("data", "input_shape"),
                                     f"{list(spec.data.input_shape)} holds {math.prod(spec.data.input_shape)} values; "
                                     f"{spec.data.dataset} images have {IMAGE_VALUES}",
                                     "use [1, 28, 28] for images or [784] for flat vectors")])
    analysis = analyze(spec)
    problems = [doc.problem(p.path, p.message, p.hint) for p in analysis.problems]
    results = tuple(r for rules in rule_sets for r in evaluate(rules, spec, analysis))
    if not analysis.problems:
        problems += problems_of(list(results), doc)
    if problems:
        raise SpecError(problems)
    return Checked(spec, doc, tuple(rule_sets), analysis, results)


def check_file(path: str | Path, *, imposed: tuple[str, ...] = (), overrides: tuple[str, ...] = ()) -> Checked:
    doc = load_file(path)
    if overrides:
        if not isinstance(doc.data, dict):
            raise SpecError([doc.problem((), "a spec is a mapping of keys")])
        apply_overrides(doc, overrides)
    return check_document(doc, imposed=imposed, base_dir=Path(path).parent)
