"""What a rubric says of one submission before anything is trained: is the spec valid, which rule
items pass, and may it train. No torch: `netspec validate --rubric` shows a student the same.

A submission is a spec file, or a folder holding one spec (and, for `mode: evaluate`, the
`model.safetensors` or `model.pt` of the student's run, at the top or in one run folder inside; a
folder with both is graded by its model.safetensors, which loading cannot make run code). Links are refused:
a submission is plain files, and a link could show a student another's work or the
instructor's hidden data.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from netspec.check.checker import RuleResult, apply_rules, check_document, problems_of
from netspec.errors import Problem, SpecError
from netspec.grading.rubric import Rubric
from netspec.runner.safeweights import SAFE_WEIGHTS
from netspec.spec.loader import Document, load_file
from netspec.spec.overrides import apply_overrides
from netspec.spec.rules import Rules

SPEC_SUFFIXES = (".yaml", ".yml")
WEIGHTS = "model.pt"
MAX_WEIGHTS = 256 << 20  # a small network's weights are kilobytes to megabytes


@dataclass(frozen=True)
class Entry:
    """One student's submission as found on disk (and, when graded, as sealed: `path` and `spec`
    then point into the private copy)."""

    student: str
    path: str
    spec: str | None = None
    weights: str | None = None
    problem: str = ""  # why no spec could be taken from it
    source: str = ""  # digest of every byte submitted (and of the test data): a change means grading again
    left_out: tuple[str, ...] = ()  # files not read: links, FIFOs, devices ("data/3 (a link)")
    alone: bool = False  # a single spec file: it has no files of its own besides the spec
    files: str = ""  # the digest of its files alone, as found (its sealed copy must have the same)


def is_spec_name(name: str) -> bool:
    return Path(name).suffix.lower() in SPEC_SUFFIXES


def find_entries(folder: str | Path, salt: str = "") -> list[Entry]:
    """One entry per student, sorted by name, each digested (`salt`: the digest of what else the
    grade depends on, the test data). Nothing is skipped: a file that is not a submission, two
    submissions of one name, a link or a FIFO are entries with their reason, so that nobody
    vanishes from a gradebook. Nothing is opened but regular files (seal.py)."""
    folder = Path(folder)
    found: dict[str, list[Path]] = {}
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if not item.name.startswith("."):
            found.setdefault(item.stem if is_spec_name(item.name) else item.name, []).append(item)
    return [submission_entry(items, shown(student), salt) for student, items in found.items()]


def shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a zip made on Windows) shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def submission_entry(items: list[Path], student: str, salt: str = "") -> Entry:
    """The entry of one student's submission (one file or folder; several are a problem), digested."""
    from netspec.grading.seal import seal

    if len(items) > 1:
        names = ", ".join(i.name + ("/" if i.is_dir() and not i.is_symlink() else "") for i in items)
        problem = f"{len(items)} submissions named {student}: {names}; keep one"
        return Entry(student, str(items[0]), problem=problem, source=text_digest(problem + salt))
    item = items[0]
    kind = os.lstat(item).st_mode
    if stat.S_ISLNK(kind):
        problem = "a link, not a file or folder: submit the files"
    elif stat.S_ISREG(kind) and not is_spec_name(item.name):
        problem = f"not a submission: a submission is a spec file ({', '.join(SPEC_SUFFIXES)}) or a folder"
    else:
        sealed = seal(item)
        problem = sealed.problem
        if not problem:
            return Entry(student, str(item), source=text_digest(sealed.digest + salt), left_out=sealed.left_out,
                         alone=not stat.S_ISDIR(kind), files=sealed.digest)
    return Entry(student, str(item), problem=problem, source=text_digest(problem + salt))


def folder_entry(folder: Path, student: str | None = None) -> Entry:
    """The spec (and weights) of a submission folder: its sealed copy when grading."""
    name = student or folder.name
    plain = [p for p in sorted(folder.iterdir()) if not p.is_symlink()]
    specs = [p for p in plain if p.is_file() and is_spec_name(p.name)]
    links = [p.name for p in sorted(folder.iterdir()) if p.is_symlink()]
    found = (_weights_in(p) for p in [folder] + [d for d in plain if d.is_dir()])
    weights = [w for w in found if w is not None]
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
                     problem=f"several weights files ({', '.join(str(w.relative_to(folder)) for w in weights)}): submit one")
    return Entry(name, str(folder), spec=str(specs[0]), weights=str(weights[0]) if weights else None)


def _weights_in(folder: Path) -> Path | None:
    """The weights file of one folder: its model.safetensors if it has one, else its model.pt."""
    for name in (SAFE_WEIGHTS, WEIGHTS):
        if (folder / name).is_file() and not (folder / name).is_symlink():
            return folder / name
    return None


MAX_NAME = 100  # a file name is at most 255 bytes, with room for the temporary file's prefix and suffix


def safe_name(student: str) -> str:
    """A student's name as a file name (feedback/<name>.md): other characters replaced, and then a
    short digest of the name added, so that two names never share a file."""
    safe = re.sub(r"[^\w.-]", "_", student).lstrip(".")
    if safe == student and len(safe) <= MAX_NAME and not re.search(r"-[0-9a-f]{6}$", safe):
        return safe  # a name that could be another's made safe ('a b' -> a_b-c8687a) gets its own digest
    return f"{safe[:MAX_NAME] or '_'}-{text_digest(student)[:6]}"


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
        outside = _data_outside(doc, entry)  # before anything reads the data it names
        if outside:
            raise SpecError([doc.problem(("data", "path"), outside, code="submission/data-path")])
        checked = check_document(doc, rule_sets=[], base_dir=Path(entry.spec).parent)
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
                   fingerprint=text_digest(json.dumps(_comparable(checked.spec.to_dict(), _root(entry)),
                                                       sort_keys=True) + weights))


def _rule_problems(checked, results, doc) -> list[Problem]:
    return problems_of(results, doc) + list(checked.warnings)


def _root(entry: Entry) -> Path:
    return Path(entry.path).resolve() if Path(entry.path).is_dir() else Path(entry.spec or entry.path).resolve().parent


def _data_outside(doc: Document, entry: Entry) -> str:
    """A data.path outside the submission would train (or test) on files the student does not own:
    another's data, the instructor's hidden test set. Judged on the text, before the data is read."""
    data = doc.data.get("data") if isinstance(doc.data, dict) else None
    path = data.get("path") if isinstance(data, dict) else None
    if not isinstance(path, str) or not path:
        return ""
    if entry.alone:
        return (f"data.path {path} is not part of this submission: a single spec file holds no data; "
                f"submit a folder with the spec and its data")
    if any(part.startswith(".") and part not in (".", "..") for part in Path(path).parts):
        return (f"data.path {path} names a hidden file or folder (a name starting with .), which is never "
                f"part of a submission: rename it")
    root = _root(entry)
    where = (Path(entry.spec).parent / Path(path).expanduser()).resolve()  # ~ as the checker reads it
    if where == root or root in where.parents:
        return ""
    return f"data.path {path} lies outside the submission; a submission trains on its own files only"


def _comparable(resolved: dict, root: Path) -> dict:
    """The resolved spec without what does not change the model or its training (name, text), its
    data.path relative to the submission (two copies of one submission compare equal)."""
    out = {k: v for k, v in resolved.items() if k not in ("name", "description")}
    path = (out.get("data") or {}).get("path")
    if path:
        try:
            out["data"] = {**out["data"], "path": Path(path).resolve().relative_to(root).as_posix()}
        except ValueError:
            pass
    return out


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


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
