"""`--set key=value` overrides, written into a loaded document before it is checked."""
from __future__ import annotations

from netspec.errors import Problem, SpecError
from netspec.spec.config import split_key
from netspec.spec.loader import Document, format_path, load_text


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
