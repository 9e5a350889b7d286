"""What a rubric says of one submission before anything is trained: is the spec valid, which rule
items pass, and may it train. No torch: `netspec validate --rubric` shows a student the same.

A submission is a spec file, or a folder holding one spec (and, for `mode: evaluate`, the
`model.pt` of the student's run, at the top or in one run folder inside). Links are refused:
a submission is plain files, and a link could show a student another's work or the
instructor's hidden data.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from netspec.builder.check import RuleResult, apply_rules, check_document, problems_of
from netspec.errors import Problem, SpecError
from netspec.grading.rubric import Rubric
from netspec.spec.loader import Document, load_file
from netspec.spec.overrides import apply_overrides
from netspec.spec.rules import Rules

SPEC_SUFFIXES = (".yaml", ".yml")
WEIGHTS = "model.pt"
MAX_WEIGHTS = 256 << 20  # a small network's weights are kilobytes to megabytes


@dataclass(frozen=True)
class Entry:
    """One student's submission as found on disk."""

    student: str
    path: str
    spec: str | None = None
    weights: str | None = None
    problem: str = ""  # why no spec could be taken from it


def find_entries(folder: str | Path) -> tuple[list[Entry], list[str]]:
    """(one entry per student, sorted by name; names of things skipped and why)."""
    folder = Path(folder)
    entries, skipped = [], []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.startswith("."):
            continue
        if item.is_symlink():
            entries.append(Entry(_student(item), str(item), problem="a link, not a file or folder: submit the files"))
        elif item.is_dir():
            entries.append(folder_entry(item))
        elif item.suffix in SPEC_SUFFIXES:
            entries.append(Entry(_student(item), str(item), spec=str(item)))
        else:
            skipped.append(f"{item.name} (not a .yaml spec nor a folder)")
    return entries, skipped


def _student(item: Path) -> str:
    return item.stem if item.is_file() and not item.is_symlink() else item.name


def folder_entry(folder: Path) -> Entry:
    name = folder.name
    plain = [p for p in sorted(folder.iterdir()) if not p.is_symlink()]
    specs = [p for p in plain if p.is_file() and p.suffix in SPEC_SUFFIXES]
    links = [p.name for p in sorted(folder.iterdir()) if p.is_symlink()]
    weights = [p / WEIGHTS for p in [folder] + [d for d in plain if d.is_dir()]
               if (p / WEIGHTS).is_file() and not (p / WEIGHTS).is_symlink()]
    if len(specs) > 1:
        named = [p for p in specs if p.stem == "spec"]
        if len(named) != 1:
            return Entry(name, str(folder), problem=f"several spec files ({', '.join(p.name for p in specs)}): "
                                                    "submit one, or name the graded one spec.yaml")
        specs = named
    if not specs:
        extra = f" (links are not read: {', '.join(links)})" if links else ""
        return Entry(name, str(folder), problem=f"no spec file (.yaml) in the folder{extra}")
    if len(weights) > 1:
        return Entry(name, str(folder), spec=str(specs[0]),
                     problem=f"several {WEIGHTS} files ({', '.join(str(w.relative_to(folder)) for w in weights)}): submit one")
    return Entry(name, str(folder), spec=str(specs[0]), weights=str(weights[0]) if weights else None)


def safe_name(student: str) -> str:
    """A student's name as a file name (feedback/<name>.md): other characters replaced, and then a
    short digest of the name added, so that two names never share a file."""
    safe = re.sub(r"[^\w.-]", "_", student).lstrip(".")
    return safe if safe == student else f"{safe or '_'}-{_text_digest(student)[:6]}"


@dataclass(frozen=True)
class Item:
    """One line of the rubric for one student."""

    name: str
    points: float
    max_points: float
    passed: bool | None  # None: not judged (the spec is not valid, or the grader did not get that far)
    note: str = ""


@dataclass
class Verdict:
    """The rubric's judgement of one submission before training."""

    entry: Entry
    items: list[Item]
    problems: list[Problem] = field(default_factory=list)
    status: str = "valid"  # valid | invalid | rules | missing
    params: int | None = None
    fingerprint: str | None = None  # equal for identical submissions (resolved spec, weights)

    @property
    def trainable(self) -> bool:
        return self.status == "valid"

    @property
    def points(self) -> float:
        return round(sum(i.points for i in self.items), 2)


def rule_items(rules: Rules) -> list[tuple[str, str]]:
    """(item name, kind) of every rule of a set, in `apply_rules`' order: the gradebook's columns,
    the same for every student, whether or not the spec could be judged."""
    short = []
    if rules.allowed_layers is not None:
        short.append(("layers", "layers"))
    if rules.allowed_blocks is not None:
        short.append(("blocks", "blocks"))
    if rules.max_params is not None:
        short.append((f"params <= {rules.max_params:,}", "params"))
    if rules.params_below is not None:
        short.append((f"params < {rules.params_below:,}", "params"))
    if rules.max_hidden_units is not None:
        short.append(("hidden units", "hidden-units"))
    short += [(f"has {layer}", "required-layers") for layer in rules.required_layers]
    short += [(key, "fixed") for key, _ in rules.fixed]
    return [(f"{rules.name}: {name}", kind) for name, kind in short]


def result_item_name(result: RuleResult) -> str:
    rule = f"params {result.limit}" if result.rule == "params" else result.rule
    return f"{result.rules}: {rule}"


def columns(rubric: Rubric) -> list[tuple[str, float]]:
    """Every rubric item with its most points: valid, each rule, accuracy."""
    out = [("valid spec", rubric.valid_points)]
    out += [(name, rubric.rule_points.get(kind, 0)) for rules in rubric.rules for name, kind in rule_items(rules)]
    return out + [("test accuracy", rubric.accuracy_max())]


def submitted_document(spec: str | Path) -> Document:
    """The spec as submitted, without its own `rules:` (the rubric's replace them)."""
    doc = load_file(spec)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), "a spec is a mapping of keys (name, data, model, train)")])
    doc.data.pop("rules", None)
    return doc


def locked_document(spec: str | Path, rubric: Rubric) -> Document:
    """The spec as it trains: the submitted one with the rubric's locked settings written in."""
    doc = submitted_document(spec)
    if rubric.locked:
        apply_overrides(doc, rubric.locked_assignments())
    return doc


def judge(entry: Entry, rubric: Rubric) -> Verdict:
    """Points for a valid spec and for each rule; whether the submission may train."""
    cols = columns(rubric)
    unjudged = lambda note: [Item(n, 0, m, None, note) for n, m in cols]  # noqa: E731
    if entry.problem or entry.spec is None:
        return Verdict(entry, unjudged(entry.problem), [Problem(entry.path, 0, 0, "", entry.problem, code="submission")],
                       status="missing", fingerprint=_digest(entry.path))
    try:
        doc = submitted_document(entry.spec)
        checked = check_document(doc, rule_sets=[], base_dir=Path(entry.spec).parent)
        outside = _data_outside(checked.spec, entry)
        if outside:
            raise SpecError([doc.problem(("data", "path"), outside, code="submission/data-path")])
    except SpecError as e:
        return Verdict(entry, unjudged("not judged: the spec is not valid"), list(e.problems), status="invalid",
                       fingerprint=_digest(entry.spec))
    results = [r for rules in rubric.rules for r in apply_rules(rules, checked.spec, checked.analysis) if r.ok is not None]
    by_name = {result_item_name(r): r for r in results}
    items = [Item(cols[0][0], cols[0][1], cols[0][1], True)]
    for name, most in cols[1:-1]:
        r = by_name.get(name)
        passed = bool(r and r.ok)
        items.append(Item(name, most if passed else 0, most, passed,
                          "" if passed or r is None else f"{r.value}; {r.limit}"))
    broken = [i for i in items if i.passed is False]
    problems = _rule_problems(checked, results, doc)
    status = "rules" if broken and rubric.accuracy_needs_rules else "valid"
    items.append(Item(cols[-1][0], 0, cols[-1][1], None,
                      "not trained: a rule is broken" if status == "rules" else ""))
    weights = _digest(entry.weights) if entry.weights and rubric.mode == "evaluate" else ""
    return Verdict(entry, items, problems, status, checked.analysis.params,
                   fingerprint=_text_digest(json.dumps(_comparable(checked.spec.to_dict()), sort_keys=True) + weights))


def _rule_problems(checked, results, doc) -> list[Problem]:
    return problems_of(results, doc) + list(checked.warnings)


def _data_outside(spec, entry: Entry) -> str:
    """A data.path outside the submission would train (or test) on files the student does not own:
    another's data, the instructor's hidden test set."""
    if not spec.data.path:
        return ""
    root = Path(entry.path).resolve() if Path(entry.path).is_dir() else Path(entry.path).resolve().parent
    where = Path(spec.data.path).resolve()
    if where == root or root in where.parents:
        return ""
    return f"data.path {spec.data.path} lies outside the submission; a submission trains on its own files only"


def _comparable(resolved: dict) -> dict:
    """The resolved spec without what does not change the model or its training (name, text)."""
    return {k: v for k, v in resolved.items() if k not in ("name", "description")}


def _digest(path: str | Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if p.is_file() and not p.is_symlink() and p.stat().st_size > MAX_WEIGHTS:
        st = p.stat()  # refused when measured; its size and time say whether it changed
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    elif p.is_file() and not p.is_symlink():
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(str(p.name).encode())
    return h.hexdigest()[:16]


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_digest(entry: Entry) -> str:
    """What was submitted, byte for byte: a change since grading means grading again."""
    parts = [_digest(p) for p in (entry.spec, entry.weights) if p] or [entry.problem]
    return _text_digest("|".join(parts))
