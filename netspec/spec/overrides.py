"""`--set key=value` overrides, written into a loaded document before it is checked."""
from __future__ import annotations

import re

from netspec.errors import Problem, SpecError
from netspec.spec.config import split_key
from netspec.spec.loader import Document, format_path, load_text


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
            loaded = load_text(raw, where) if raw.strip() else None
        except SpecError as e:
            problems.extend(Problem(where, 0, 0, key, p.message) for p in e.problems)
            continue
        value = None if loaded is None else loaded.data
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # 1e-3 on a command line means a number; YAML 1.1's reading helps nobody here
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
        # what the user typed, for messages: the file's text for this key (and below it) no longer applies
        for old in [p for p in doc.texts if p[:len(path)] == path]:
            del doc.texts[old]
        if loaded is not None:
            doc.texts.update({path + sub: text for sub, text in loaded.texts.items()})
    if problems:
        raise SpecError(problems)
