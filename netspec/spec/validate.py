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


def check_document(doc: Document, *, imposed: tuple[str, ...] = (), base_dir: Path = Path("."),
                   rule_sets: list[Rules] | None = None) -> Checked:
    """Check a loaded spec. `rule_sets`, when given, are used instead of looking up the spec's
    `rules:` and `imposed` (a run folder checks its spec against the rules it recorded)."""
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), f"a spec is a mapping of keys (name, data, model, train), not {type(doc.data).__name__}")])
    if rule_sets is None:
        rule_sets, problems = _rule_sets(doc, imposed, base_dir)
    else:
        rule_sets, problems = list(rule_sets), []
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
    problems += [doc.problem(path, msg, hint) for path, msg, hint in training_problems(spec)]
    results = tuple(r for rules in rule_sets for r in evaluate(rules, spec, analysis))
    if not analysis.problems:
        problems += problems_of(list(results), doc)
    if problems:
        raise SpecError(problems)
    return Checked(spec, doc, tuple(rule_sets), analysis, results)


BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d")


def training_problems(spec: Spec) -> list[tuple[tuple, str, str]]:
    """Settings that the schema accepts but that would crash or mislead once training starts."""
    out = []
    t, opt = spec.train, spec.train.optimizer
    if opt.name == "sgd" and opt.nesterov and opt.momentum == 0:
        out.append((("train", "optimizer", "nesterov"), "Nesterov momentum needs momentum > 0 (it is 0)",
                    "set train.optimizer.momentum (e.g. 0.9) or nesterov: false"))
    if t.schedule.cycles_momentum and opt.name == "sgd" and opt.momentum == 0:
        out.append((("train", "schedule", "cycle_momentum"),
                    "the one-cycle schedule would cycle SGD's momentum between "
                    f"{t.schedule.max_momentum} and {t.schedule.base_momentum}, but the optimizer says momentum 0",
                    "set schedule.cycle_momentum: false to train without momentum"))
    if not spec.is_vit:
        names = [layer.name for layer in spec.model]
        if t.batch_size == 1 and any(n in BATCH_NORMS for n in names):
            i = next(i for i, n in enumerate(names) if n in BATCH_NORMS)
            out.append((("train", "batch_size"),
                        f"batch size 1 with {names[i]} (model.layers[{i}]): batch statistics of one sample are "
                        "undefined in training", "use a batch size of 2 or more"))
        for i, n in enumerate(names[:-1]):
            if n == "Softmax":
                out.append((("model", "layers", i),
                            "Softmax is allowed only as the last layer: cross-entropy would otherwise be computed "
                            "on probabilities", "remove it, or move it to the end"))
    return out


def check_file(path: str | Path, *, imposed: tuple[str, ...] = (), overrides: tuple[str, ...] = ()) -> Checked:
    doc = load_file(path)
    if overrides:
        if not isinstance(doc.data, dict):
            raise SpecError([doc.problem((), "a spec is a mapping of keys")])
        apply_overrides(doc, overrides)
    return check_document(doc, imposed=imposed, base_dir=Path(path).parent)
