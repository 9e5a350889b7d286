"""A run-folder record's JSON Schema, made from its dataclass, and the one message a misfit gives. No torch."""
from __future__ import annotations

import functools
import types
from dataclasses import fields
from enum import Enum
from typing import Any, Union, get_args, get_origin, get_type_hints

from netspec.errors import CheckpointError

_PLAIN = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", type(None): "null"}


@functools.cache
def schema_of(cls: type) -> dict:
    """A record dataclass's schema: fields typed by annotation and metadata["schema"], required unless "optional"."""
    hints = get_type_hints(cls)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": cls.__name__, "type": "object",
            "properties": {f.name: {**_type_schema(hints[f.name]), **f.metadata.get("schema", {})} for f in fields(cls)},
            "required": [f.name for f in fields(cls) if not f.metadata.get("optional")]}


def _type_schema(kind: Any) -> dict:
    if get_origin(kind) in (Union, types.UnionType):
        options = [_type_schema(k) for k in get_args(kind)]
        if all(o.keys() == {"type"} for o in options):  # float | None: {"type": ["number", "null"]}, a plainer message
            return {"type": [o["type"] for o in options]}
        return {"anyOf": options}
    if isinstance(kind, type) and issubclass(kind, Enum):
        return {"enum": [m.value for m in kind]}
    if kind in _PLAIN:
        return {"type": _PLAIN[kind]}
    if get_origin(kind) in (list, tuple):
        args = [a for a in get_args(kind) if a is not Ellipsis]
        return {"type": "array", **({"items": _type_schema(args[0])} if args else {})}
    raise TypeError(f"no JSON Schema for {kind!r}")


REWRITE = "rerun the spec to write it again"


def damaged(where: str, problem: str, fix: str = REWRITE) -> CheckpointError:
    return CheckpointError(f"{where} was edited or damaged: {problem}; {fix}")


def require_fit(schema: dict, record: Any, where: str, fix: str = REWRITE) -> None:
    """Refuse a record misfitting `schema`: one CheckpointError naming `where`, its best_match error and place."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator()(schema).iter_errors(record))
    if error is not None:
        raise damaged(where, f"{place(error.absolute_path) or 'the record'}: {error.message}", fix)


def fitting_fields(cls: type, record: Any, where: str, fix: str = REWRITE) -> dict:
    """The values of `cls`'s fields in `record`, once it fits their schema (keys it does not know are ignored)."""
    require_fit(schema_of(cls), record, where, fix)
    return {f.name: record[f.name] for f in fields(cls) if f.name in record}


@functools.cache
def _validator():
    """Draft 2020-12, where 3.0 is a number but not an integer, and True is neither."""
    from jsonschema import Draft202012Validator, validators

    strict = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, v: isinstance(v, int) and not isinstance(v, bool))
    return validators.extend(Draft202012Validator, type_checker=strict)


def place(path) -> str:
    """A JSON path as a reader writes it: std[0], speed.compile."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else str(p) for i, p in enumerate(path))
