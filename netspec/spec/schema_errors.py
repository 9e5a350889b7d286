"""Stage one of validation: JSON Schema errors turned into located, readable problems.

Every error is collected (`iter_errors`), placed at its line and column, and
reworded where jsonschema's message is not what a user needs: an unknown
layer gets "did you mean", a number written the YAML 1.1 way gets the fix.
"""
from __future__ import annotations

import difflib
import math
import re

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from netspec.spec.family import BLOCKS, FAMILIES
from netspec.spec.layers import LAYERS
from netspec.errors import Problem
from netspec.spec.loader import Document

# JSON Schema calls 768.0 an integer; a spec should not.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, v: isinstance(v, int) and not isinstance(v, bool)
)
Validator = validators.extend(Draft202012Validator, type_checker=_TYPES)

_NUMBER_TEXT = re.compile(r"[-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?")
_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n", "true", "false"}


def schema_problems(doc: Document, schema: dict, allowed_layers: list[str] | None = None) -> list[Problem]:
    validator = Validator(schema)
    misplaced = _misindented_arguments(doc)
    problems = {p for err in validator.iter_errors(doc.data)
                if not any(tuple(err.absolute_path)[:len(where)] == where for where in misplaced)
                for p in _explain(err, doc, allowed_layers)}
    return sorted(problems | set(misplaced.values()))


def _misindented_arguments(doc: Document) -> dict[tuple, Problem]:
    """`- Linear:` followed by `out_features: 10` at the same indentation reads as a layer item
    {Linear: null, out_features: 10}: three confusing errors for one mistake. Say what it is."""
    found = {}
    for where, item in layer_items(doc.data):
        if not isinstance(item, dict) or len(item) < 2:
            continue
        names = [k for k, v in item.items() if k in LAYERS and v is None]
        if len(names) != 1:
            continue
        name = names[0]
        args = [k for k in item if k != name]
        if args and all(a in LAYERS[name].args for a in args):
            shown = ", ".join(args)
            found[where] = doc.problem(where + (args[0],), f"{shown} {'is an argument' if len(args) == 1 else 'are arguments'} of "
                                       f"{name} but {'is' if len(args) == 1 else 'are'} written beside it, not under it",
                                       f"indent {shown} under {name} (two more spaces), or write "
                                       f"{{{name}: {{{', '.join(f'{a}: {item[a]}' for a in args)}}}}}", at_key=True,
                                       code="schema/misindented")
    return found


def layer_items(data, path: tuple = ("model", "layers")):
    """(path, item) of every item of model.layers and of the layer lists inside its blocks."""
    node = data
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    yield from _list_items(node, path)


def _list_items(items, path: tuple):
    for i, item in enumerate(items if isinstance(items, list) else []):
        yield path + (i,), item
        if isinstance(item, dict) and len(item) == 1:
            (name, args), = item.items()
            if name in BLOCKS and isinstance(args, dict):
                key = BLOCKS[name].bodies
                bodies = args.get(key)
                if key == "layers":
                    yield from _list_items(bodies, path + (i, name, key))
                else:
                    for b, body in enumerate(bodies if isinstance(bodies, list) else []):
                        yield from _list_items(body, path + (i, name, key, b))


def is_item_path(path: tuple) -> bool:
    """A path naming one item of a layer list: model.layers[3], ...Residual.layers[1], ...branches[0][2]."""
    if len(path) < 3 or path[:2] != ("model", "layers") or not isinstance(path[-1], int):
        return False
    return path[-2] == "layers" or (isinstance(path[-2], int) and len(path) >= 4 and path[-3] == "branches")


def _did_you_mean(word: str, options: list[str]) -> str:
    lower = {o.lower(): o for o in options}
    if word.lower() in lower:
        return lower[word.lower()]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else ""


def _layer_name_problem(err: ValidationError, doc: Document, allowed: list[str] | None) -> Problem:
    name = err.instance
    path = tuple(err.absolute_path)
    allowed = allowed if allowed is not None else sorted([*LAYERS, *BLOCKS])
    if not isinstance(name, str):
        return doc.problem(path, f"a layer name must be text, got {name!r}", code="schema/layer-name")
    if name in LAYERS and name not in allowed:
        return doc.problem(path, f"layer '{name}' is not allowed by the rules",
                           "allowed: " + ", ".join(allowed), code="rule/layers")
    if name in BLOCKS and name not in allowed:
        return doc.problem(path, f"block '{name}' is not allowed by the rules",
                           "allowed: " + ", ".join(allowed), code="rule/blocks")
    if name in BLOCKS:  # bare name: a block needs its layer lists
        key = BLOCKS[name].bodies
        return doc.problem(path, f"block '{name}' needs its {key}",
                           f"write it as {{{name}: {{{key}: [...]}}}}" if key == "layers"
                           else f"write it as {{{name}: {{{key}: [[...], [...]]}}}}", code="schema/missing-arguments")
    if name in LAYERS and LAYERS[name].required:  # bare name, but arguments are needed
        need = ", ".join(LAYERS[name].required)
        return doc.problem(path, f"layer '{name}' needs arguments: {need}",
                           f"write it as {{{name}: {{{', '.join(f'{a}: ...' for a in LAYERS[name].required)}}}}}",
                           code="schema/missing-arguments")
    guess = _did_you_mean(name, allowed)
    hint = (f"did you mean '{guess}'? " if guess else "") + "allowed: " + ", ".join(allowed)
    return doc.problem(path, f"unknown layer '{name}'", hint, code="schema/unknown-layer")


def _type_hint(value, expected, text: str | None) -> str:
    want = expected if isinstance(expected, list) else [expected]
    if isinstance(value, str) and ("number" in want or "integer" in want) and _NUMBER_TEXT.fullmatch(value.strip()):
        if not math.isfinite(float(value.replace("_", ""))):
            return f"'{value}' is not a finite number (and was read as text); use a finite value"
        return (f"'{value}' was read as text: YAML 1.1 reads a number with an exponent as a number only with a decimal point and a signed exponent; "
                f"write {_yaml_number(value)}")
    if isinstance(value, bool) and "string" in want and text and text.lower() in _YAML11_BOOLS:
        return f"unquoted {text} is a boolean in YAML; write \"{text}\" to mean the text"
    if isinstance(value, float) and "integer" in want and value.is_integer():
        return f"write {int(value)} (a whole number without a decimal point)"
    return ""


def _arguments_hint(path: tuple, value) -> str:
    """`Dropout: 0.1`: a layer's arguments written as a bare value; the mapping it means, where the
    layer has one argument to give (its only one, or its only required one)."""
    if not path or path[-1] not in LAYERS or not is_item_path(path[:-1]) or isinstance(value, (dict, list)):
        return ""
    entry = LAYERS[path[-1]]
    names = list(entry.required) or list(entry.args)
    if len(names) != 1:
        return f"arguments go in a mapping: {{{path[-1]}: {{{', '.join(f'{a}: ...' for a in names[:3])}}}}}" if names else ""
    return f"arguments go in a mapping: write {{{path[-1]}: {{{names[0]}: {value}}}}}"


def _yaml_number(text: str) -> str:
    mantissa, _, exp = text.lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if exp and exp[0] not in "+-":
        exp = "+" + exp  # YAML 1.1 also wants the exponent's sign
    return mantissa + (f"e{exp}" if exp else "")


# keys people write for a setting that lives one level down
_MOVED = {("train", "learning_rate"): "train.optimizer.lr", ("train", "lr"): "train.optimizer.lr",
          ("train", "momentum"): "train.optimizer.momentum", ("train", "weight_decay"): "train.optimizer.weight_decay",
          ("train", "optimiser"): "train.optimizer", ("train", "scheduler"): "train.schedule"}


def _explain(err: ValidationError, doc: Document, allowed: list[str] | None) -> list[Problem]:
    if err.validator == "anyOf" and {b.get("type") for b in err.validator_value} == {"integer", "number"}:
        path = tuple(err.absolute_path)  # data.validation, data.test: a count or a share
        shown = doc.texts.get(path, repr(err.instance))
        return [doc.problem(path, f"{shown} is neither a count of images (a whole number, 0 or more) "
                                  "nor a share of them (a number between 0 and 1)", "e.g. 5000 or 0.1", code="schema/type")]
    if err.context:  # anyOf/oneOf: report the most relevant branch
        err = best_match(err.context)
    if err.validator == "additionalProperties":  # every unknown key of the mapping, each with its guess
        known = list(err.schema.get("properties", {}))
        path = tuple(err.absolute_path)
        out = []
        homes = _homes(err.schema, ".".join(map(str, path)))
        for key in [k for k in err.instance if k not in known]:
            guess = _did_you_mean(str(key), known)
            moved = _MOVED.get(path + (key,))
            elsewhere = [h for h in homes.get(key, []) if h != ".".join(map(str, path))]
            if not guess and not moved and len(elsewhere) == 1 and len(path) < 2:
                section = elsewhere[0]
                out.append(doc.problem(path + (key,), f"unknown key '{key}'",
                                       f"'{key}' is a key of {section}: move it under {section.split('.')[-1]}:",
                                       at_key=True, code="schema/unknown-key"))
                continue
            hint = (f"did you mean '{guess}'? " if guess else f"it is written {moved}; " if moved else "") + (
                "known keys: " + ", ".join(known) if known else "")
            out.append(doc.problem(path + (key,), f"unknown key '{key}'", hint, at_key=True, code="schema/unknown-key"))
        return out
    problem = _explain_one(err, doc, allowed)
    return [problem if problem.code else problem.coded(CODES.get(err.validator, "schema/value"))]


CODES = {"type": "schema/type", "required": "schema/required", "minProperties": "schema/one-key",
         "maxProperties": "schema/one-key", "pattern": "schema/pattern", "enum": "schema/enum"}


def _homes(schema: dict, prefix: str = "", out: dict | None = None, depth: int = 0) -> dict[str, list[str]]:
    """key -> the sections of the spec that have it (train.batch_size -> {"batch_size": ["train"]}),
    through plain nested objects (not into layer lists)."""
    out = {} if out is None else out
    if depth > 3 or not isinstance(schema, dict):
        return out
    for key, sub in schema.get("properties", {}).items():
        if prefix:
            out.setdefault(key, []).append(prefix)
        if isinstance(sub, dict) and sub.get("type") == "object" and "properties" in sub and key != "model":
            _homes(sub, f"{prefix}.{key}" if prefix else key, out, depth + 1)
    return out


def _explain_one(err: ValidationError, doc: Document, allowed: list[str] | None) -> Problem:
    if err.context:  # anyOf/oneOf: report the most relevant branch
        err = best_match(err.context)
    path = tuple(err.absolute_path)
    schema_path = list(err.absolute_schema_path)
    in_layers = is_item_path(path)
    if err.validator == "enum" and (in_layers or is_item_path(path[:-1])) and (
            "propertyNames" in schema_path or in_layers and "then" in schema_path):
        return _layer_name_problem(err, doc, allowed)
    if err.validator == "type":
        names = {"integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
                 "array": "a list", "object": "a mapping", "null": "nothing"}
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        hint = _type_hint(err.instance, err.validator_value, doc.texts.get(path)) or _arguments_hint(path, err.instance)
        shown = doc.texts.get(path, repr(err.instance))
        return doc.problem(path, f"{shown!r} is not {' or '.join(names.get(w, w) for w in want)}", hint)
    if err.validator == "required":
        return doc.problem(path, err.message.replace("is a required property", "is missing (required)"))
    if err.validator in ("minProperties", "maxProperties") and path == ("model",):
        return doc.problem(path, "model needs exactly one of " + " or ".join(f"'{k}'" for k in FAMILIES))
    if err.validator in ("minProperties", "maxProperties") and in_layers:
        return doc.problem(path, "a layer is one name, or one 'Name: {arguments}' mapping")
    if err.validator == "pattern" and path == ("train", "device"):
        said = str(err.instance)
        hint = ("for an NVIDIA GPU write cuda (or cuda:1 for the second)" if said.lower().startswith(("gpu", "nvidia"))
                else "for Apple's GPU write mps" if said.lower() in ("metal", "apple", "m1", "m2") else
                "auto picks cuda, then mps, then cpu")
        return doc.problem(path, f"'{said}' is not a device: use auto, cpu, cuda, cuda:N (the GPU with index N) or mps",
                           hint, code="schema/pattern")
    if err.validator == "pattern" and path == ("name",):
        return doc.problem(path, f"name {err.instance!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    if err.validator == "enum":
        options = [str(o) for o in err.validator_value]
        guess = _did_you_mean(str(err.instance), options)
        return doc.problem(path, f"{err.instance!r} is not one of {', '.join(options)}",
                           f"did you mean '{guess}'?" if guess else err.schema.get("description", ""))
    if err.validator in ("maxItems", "minItems") and isinstance(err.instance, list):
        bound = "at most" if err.validator == "maxItems" else "at least"
        return doc.problem(path, f"{len(err.instance):,} items; {bound} {err.validator_value} are allowed here")
    message = err.message  # jsonschema's words quote the whole value, which may be a long list
    return doc.problem(path, message if len(message) <= 300 else message[:280] + " ... (value cut short)")
