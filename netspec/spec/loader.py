"""Safe YAML loading that remembers where every value came from.

PyYAML's `safe_load` already refuses Python tags, but it forgets positions,
silently keeps the last of two duplicate keys, expands aliases without limit
and recurses once per nesting level. netspec reads shared files, so loading
happens in three guarded passes:

1. the raw bytes: size cap, UTF-8;
2. the event stream (PyYAML's parser is iterative): nesting depth, alias
   count, one document, no tags beyond plain data;
3. the node graph: plain Python data built by us, with the line and column of
   every value and key, duplicate keys reported with both lines, a cap on the
   number of values an alias expansion may produce, non-finite numbers refused.
"""
from __future__ import annotations

import math
import os
import re
import select
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netspec.errors import Problem, SpecError

MAX_BYTES = 1 << 20  # a spec is a page of text; 1 MiB is generous
PIPE_WAIT_S = 10.0  # a pipe that sends nothing for this long is not a spec being written
MAX_DEPTH = 64  # real specs nest 5 levels deep
MAX_ALIASES = 64  # anchors are rare in specs; billion-laughs needs many
MAX_VALUES = 100_000  # values after alias expansion
MAX_DIGITS = 100  # an integer in a spec; sizes stop at 2^31

PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t
    for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")
}

Path_ = tuple  # ("model", "layers", 3, "Linear", "out_features")


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Document:
    """Plain data (dicts, lists, str, int, float, bool, None) plus positions."""

    data: Any
    file: str
    positions: dict = field(default_factory=dict)  # path -> (line, col) of the value
    key_positions: dict = field(default_factory=dict)  # path -> (line, col) of its key
    texts: dict = field(default_factory=dict)  # path -> scalar as written
    overrides: dict = field(default_factory=dict)  # path -> "--set key=value" that put it there

    def locate(self, path: Path_) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def problem(self, path: Path_, message: str, hint: str = "", at_key: bool = False, code: str = "") -> Problem:
        for i in range(len(path), 0, -1):
            if tuple(path[:i]) in self.overrides:
                return Problem(self.overrides[tuple(path[:i])], 0, 0, format_path(path), message, hint, code)
        pos = self.key_positions.get(tuple(path)) if at_key else None
        line, col = pos or self.locate(path)
        return Problem(self.file, line, col, format_path(path), message, hint, code)


def _mark(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def read_text(path: str | Path) -> str:
    p = Path(path)
    name = str(path)
    try:  # not Path.exists(): it raises for a name too long or a folder that may not be looked into
        st = p.stat()
    except FileNotFoundError:
        raise SpecError([Problem(name, 0, 0, "", "file not found", code="file")]) from None
    except OSError as e:
        raise SpecError([Problem(name, 0, 0, "", f"cannot read: {e.strerror}", code="file")]) from None
    if stat.S_ISDIR(st.st_mode):
        raise SpecError([Problem(name, 0, 0, "", "is a directory, not a YAML file", code="file")])
    def too_big(size: str) -> SpecError:
        return SpecError([Problem(name, 0, 0, "", f"file is {size} bytes; specs are limited to {MAX_BYTES:,}",
                                  code="file")])

    if st.st_size > MAX_BYTES:
        raise too_big(f"{st.st_size:,}")
    try:
        data = _read_at_most(p, MAX_BYTES + 1, PIPE_WAIT_S if stat.S_ISFIFO(st.st_mode) else None)
        if data is None:
            raise SpecError([Problem(name, 0, 0, "", f"is a pipe (FIFO) that sent nothing for {PIPE_WAIT_S:g} s",
                                     code="file")])
        if len(data) > MAX_BYTES:
            raise too_big(f"over {MAX_BYTES:,}")
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([Problem(name, 0, 0, "", f"not UTF-8 text ({e.reason} at byte {e.start})", code="file")]) from None
    except OSError as e:
        raise SpecError([Problem(name, 0, 0, "", f"cannot read: {e.strerror}", code="file")]) from None


def _read_at_most(path: Path, limit: int, wait: float | None) -> bytes | None:
    """At most `limit` bytes of a file: a device (/dev/zero) or pipe states no size. A pipe is
    opened without waiting for a writer (a FIFO nobody writes to had blocked `validate` for ever);
    one with no writer reads as empty, and one that sends nothing for `wait` seconds gives None."""
    if wait is None:
        with open(path, "rb") as f:
            return f.read(limit)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks, size, deadline = [], 0, time.monotonic() + wait
        while size < limit:
            try:
                chunk = os.read(fd, min(1 << 16, limit - size))
            except BlockingIOError:  # a writer is there and has not written yet
                if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    return None
                continue
            if not chunk:  # the end, or no writer at all
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_file(path: str | Path) -> Document:
    return load_text(read_text(path), str(path))


def load_text(text: str, file: str = "<string>") -> Document:
    try:
        return _load_text(text, file)
    except SpecError as e:  # what is wrong with the YAML itself, before any schema
        raise SpecError([p if p.code else p.coded("yaml") for p in e.problems]) from None


def _load_text(text: str, file: str) -> Document:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SpecError([Problem(file, 0, 0, "", f"text is over {MAX_BYTES:,} bytes", code="file")])
    try:
        _check_events(text, file)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line, col = _mark(mark) if mark else (0, 0)
        msg = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
        said, hint = _what_happened(text, line, msg or str(e))
        raise SpecError([Problem(file, line, col, "", said, hint, code="yaml")]) from None
    if node is None:
        raise SpecError([Problem(file, 1, 1, "", "the file is empty; a spec is a YAML mapping")])
    doc = Document(data=None, file=file)
    builder = _Builder(doc)
    doc.data = builder.build(node, ())
    if builder.problems:
        raise SpecError(builder.problems)
    return doc


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _what_happened(text: str, line: int, said: str) -> tuple[str, str]:
    """PyYAML's words for the usual slips, as what happened and where (its own words kept as the hint)."""
    raw = f"PyYAML: {said}"
    if "'\\t'" in said or "\t" in said:
        return "a tab in the indentation: YAML indents with spaces only", "replace the tab with spaces; " + raw
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return f"invalid YAML: {said}", ""
    here = lines[line - 1]
    indent = _indent(here)
    if here.lstrip().startswith("- "):
        for above in reversed(lines[:line - 1]):
            if above.lstrip().startswith("- ") and _indent(above) != indent:
                width = _indent(above)
                return (f"this line is indented {indent} spaces; the list items above it use {width}",
                        f"start every item of one list in the same column; {raw}")
            if above.strip() and not above.lstrip().startswith("- ") and _indent(above) < indent:
                break
    if any(w in said for w in ("expected <block end>", "mapping values are not allowed", "did not find expected")):
        return (f"the indentation of this line ({indent} spaces) does not fit the lines above it",
                f"YAML reads nesting from indentation: keys of one mapping, and items of one list, start in the same "
                f"column; {raw}")
    return f"invalid YAML: {said}", ""


def _check_events(text: str, file: str) -> None:
    depth = aliases = documents = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        where = _mark(event.start_mark)
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise SpecError([Problem(file, *where, "", "only one YAML document per file (found a second '---')")])
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise SpecError([Problem(file, *where, "", f"more than {MAX_ALIASES} aliases; refusing to expand")])
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError([Problem(file, *where, "", f"nested more than {MAX_DEPTH} levels deep")])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in PLAIN_TAGS and tag != "!":
            raise SpecError(
                [Problem(file, *where, "", f"YAML tag '{tag}' is not allowed; specs hold plain data only (nothing is constructed or run)")]
            )


# a number with an exponent that YAML 1.1 leaves as text: 1e-3, 5E+2, 1.5e3 (no dot or no sign)
_YAML12_EXPONENT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


class _Builder:
    def __init__(self, doc: Document):
        self.doc = doc
        self.problems: list[Problem] = []
        self.count = 0
        self.open: set[int] = set()  # ids of the collection nodes being built: the path from the root
        self.scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def build(self, node, path: Path_):
        self.count += 1
        line, col = _mark(node.start_mark)
        if self.count > MAX_VALUES:
            raise SpecError([Problem(self.doc.file, line, col, format_path(path), f"more than {MAX_VALUES:,} values (alias expansion?); refusing")])
        if isinstance(node, yaml.ScalarNode):
            self.doc.positions.setdefault(path, (line, col))
            return self._scalar(node, path)
        # An alias may point at a collection that contains it (`a: &x [*x]`): a cycle, which
        # no spec needs and which would recurse forever. Aliases may also stack nesting that
        # the event stream never showed, so the depth is checked again here.
        if id(node) in self.open:
            raise SpecError([Problem(self.doc.file, line, col, format_path(path),
                                     "this value contains itself (a recursive alias); specs hold plain, finite data")])
        if len(path) > MAX_DEPTH:
            raise SpecError([Problem(self.doc.file, line, col, format_path(path),
                                     f"nested more than {MAX_DEPTH} levels deep (through aliases)")])
        self.doc.positions.setdefault(path, (line, col))
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _mapping(self, node, path):
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line, col = _mark(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Problem(self.doc.file, line, col, format_path(path), "keys must be plain names"))
                continue
            key = key_node.value  # as written: `yes:` stays the string "yes"
            if key in first_line:
                self.problems.append(
                    Problem(self.doc.file, line, col, format_path(path + (key,)),
                            f"duplicate key '{key}' (first on line {first_line[key]}, again on line {line})")
                )
                continue
            first_line[key] = line
            self.doc.key_positions[path + (key,)] = (line, col)
            out[key] = self.build(value_node, path + (key,))
        return out

    def _scalar(self, node, path):
        self.doc.texts[path] = node.value
        tag = node.tag.rsplit(":", 1)[-1]
        if tag == "str" and node.style is None and _YAML12_EXPONENT.fullmatch(node.value):
            # `lr: 1e-3` is a number in YAML 1.2 (and to everyone); YAML 1.1 reads it as text
            value = float(node.value)
            if not math.isfinite(value):
                line, col = _mark(node.start_mark)
                self.problems.append(Problem(self.doc.file, line, col, format_path(path),
                                             f"non-finite number '{node.value}' is not allowed"))
            return value
        if tag not in ("int", "float", "bool", "null"):
            # text, and whatever else YAML 1.1 resolves a plain scalar to (timestamps, `=` as
            # tag:yaml.org,2002:value, `<<` as a merge key): kept as written, never constructed
            return node.value
        if tag == "int" and len(node.value) > MAX_DIGITS:  # Python refuses to read > 4,300 digits
            line, col = _mark(node.start_mark)
            self.problems.append(Problem(self.doc.file, line, col, format_path(path),
                                         f"a number of {len(node.value):,} digits; netspec reads at most {MAX_DIGITS}"))
            return 0
        value = self.scalars.construct_object(node)
        if isinstance(value, float) and not math.isfinite(value):
            line, col = _mark(node.start_mark)
            self.problems.append(
                Problem(self.doc.file, line, col, format_path(path), f"non-finite number '{node.value}' is not allowed")
            )
        return value
