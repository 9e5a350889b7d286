"""What a check found, in the shapes scripts and CI read (no torch, no rich).

One result per spec file: {file, valid, params, errors, warnings}, each finding with a stable
`code` (README: "Finding codes"). `--format json` prints the list of results (the shape is
`results.schema.json`, shipped beside this file); `--format github` prints GitHub Actions
workflow commands, `--format sarif` a SARIF 2.1.0 log. Formats are one table, FORMATS.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

RESULTS_SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

_FINDING = {
    "type": "object", "additionalProperties": False,
    "required": ["code", "file", "line", "col", "path", "message", "hint"],
    "properties": {
        "code": {"type": "string", "pattern": "^[a-z]+(/[a-z0-9-]+)?$",
                 "description": "stable: yaml, file, schema/..., shape, limit, output-size, data, rules, training, "
                                "rule/..., lint/<warning name>"},
        "file": {"type": "string", "description": "the file, or '--set key=value' for an override"},
        "line": {"type": "integer", "minimum": 0, "description": "1-based; 0 where the place is not in a file"},
        "col": {"type": "integer", "minimum": 0},
        "path": {"type": "string", "description": "the place in the spec, e.g. model.layers[3].Linear.out_features"},
        "message": {"type": "string"},
        "hint": {"type": "string"},
    },
}

RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:netspec:schema:results",
    "title": "netspec check results",
    "description": "What `netspec validate --format json` and `netspec summary --format json` print: one result "
                   "per spec file (summary adds its table's fields to its one result).",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["file", "valid", "params", "errors", "warnings"],
        "properties": {
            "file": {"type": "string"},
            "valid": {"type": "boolean"},
            "params": {"type": ["integer", "null"], "minimum": 0,
                       "description": "trainable parameters; null where the model does not build"},
            "errors": {"type": "array", "items": _FINDING},
            "warnings": {"type": "array", "items": _FINDING},
        },
    },
}


def result(file: str, checked=None, error=None) -> dict:
    """One file's result: from a Checked spec, or from the SpecError it raised (whose `checked`
    is set where the model builds and only rules or settings failed)."""
    built = checked if checked is not None else getattr(error, "checked", None)
    return {
        "file": file,
        "valid": error is None,
        "params": built.analysis.params if built is not None else None,
        "errors": [p.to_dict() for p in error.problems] if error is not None else [],
        "warnings": [w.to_dict() for w in built.warnings] if built is not None else [],
    }


def _findings(results: list[dict]):
    for r in results:
        for level, key in (("error", "errors"), ("warning", "warnings")):
            for f in r[key]:
                yield level, f


def as_json(results: list[dict]) -> str:
    return json.dumps(results, indent=2)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def as_github(results: list[dict]) -> str:
    """GitHub Actions workflow commands: one ::error or ::warning per finding, at its file and line."""
    lines = []
    for level, f in _findings(results):
        place = [f"file={_escape_property(f['file'])}"]
        if f["line"]:
            place += [f"line={f['line']}", f"col={f['col']}"]
        place.append(f"title={_escape_property('netspec ' + f['code'])}")
        text = f"{f['path'] or '(top)'}: {f['message']}" + (f" (hint: {f['hint']})" if f["hint"] else "")
        lines.append(f"::{level} {','.join(place)}::{_escape_data(text)}")
    return "\n".join(lines) + ("\n" if lines else "")


def as_sarif(results: list[dict], version: str) -> str:
    """A SARIF 2.1.0 log: one run, a rule per finding code, a result per finding with its region."""
    rules, out = {}, []
    for level, f in _findings(results):
        if f["code"] not in rules:
            rules[f["code"]] = {"id": f["code"], "name": f["code"].replace("/", "-"),
                                "shortDescription": {"text": f"netspec {f['code']}"},
                                "defaultConfiguration": {"level": level}}
        location = {"artifactLocation": {"uri": Path(f["file"]).as_posix()}}
        if f["line"]:
            location["region"] = {"startLine": f["line"], "startColumn": max(f["col"], 1)}
        text = f"{f['path'] or '(top)'}: {f['message']}" + (f" (hint: {f['hint']})" if f["hint"] else "")
        out.append({"ruleId": f["code"], "ruleIndex": list(rules).index(f["code"]), "level": level,
                    "message": {"text": text}, "locations": [{"physicalLocation": location}]})
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "netspec", "version": version, "rules": list(rules.values())}},
            "results": out,
        }],
    }
    return json.dumps(log, indent=2)


FORMATS: dict[str, Callable[[list[dict], str], str]] = {
    "json": lambda results, version: as_json(results) + "\n",
    "github": lambda results, version: as_github(results),
    "sarif": lambda results, version: as_sarif(results, version) + "\n",
}

