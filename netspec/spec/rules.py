"""Rule sets: what an assignment allows, and the exact checks that enforce it.

A rules file (YAML) may state (every key optional; `name` defaults to the file name):
  name             how messages and reports call the rule set
  description      a line for people
  allowed_layers   whitelist of layer names (enforced through the schema, inside blocks too)
  allowed_blocks   whitelist of blocks (Residual, Concat, Repeat); unsaid: every block; []: a plain chain
  max_params       at most this many trainable parameters
  params_below     fewer than this many trainable parameters
  max_hidden_units sum of out_features of every Linear but the last
  required_layers  layers that must appear
  fixed            dotted spec key -> the value it must have (train.epochs: 10)
  target_accuracy  test accuracy the runner reports against
"""
from __future__ import annotations

import re
import stat
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from netspec.spec.family import BLOCK_NAMES, BLOCKS
from netspec.spec.layers import LAYERS
from netspec.errors import SpecError
from netspec.spec.loader import Document, load_file
from netspec.spec.schema_errors import schema_problems

RULES_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},  # optional: the file's name without .yaml
        "description": {"type": "string"},
        "allowed_layers": {"type": "array", "items": {"enum": sorted(LAYERS)}, "uniqueItems": True},
        "allowed_blocks": {"type": "array", "items": {"enum": BLOCK_NAMES}, "uniqueItems": True},
        "max_params": {"type": "integer", "minimum": 0},
        "params_below": {"type": "integer", "minimum": 1},
        "max_hidden_units": {"type": "integer", "minimum": 0},
        "required_layers": {"type": "array", "items": {"enum": sorted(LAYERS)}, "uniqueItems": True},
        "fixed": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "array"]}},
        "target_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
    },
}


@dataclass(frozen=True)
class Rules:
    name: str
    source: str  # file it was read from
    description: str = ""
    allowed_layers: tuple[str, ...] | None = None
    allowed_blocks: tuple[str, ...] | None = None
    max_params: int | None = None
    params_below: int | None = None
    max_hidden_units: int | None = None
    required_layers: tuple[str, ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()
    target_accuracy: float | None = None
    # fixed keys a draft run may break (`--draft`): recorded in the run folder, never read from a rules file
    waived: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return rules_to_dict(self)


def shipped_rule_sets() -> list[str]:
    folder = resources.files("netspec.spec") / "rulesets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_rules(ref: str, base_dir: Path) -> Path | None:
    """A shipped rule set name, or a path (relative to `base_dir`)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9-]*", ref) and ref in shipped_rule_sets():
        return Path(str(resources.files("netspec.spec") / "rulesets" / f"{ref}.yaml"))
    path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
    try:  # not Path.is_file(): it raises for a name too long, a NUL byte, a folder that may not be looked into
        return path if stat.S_ISREG(path.stat().st_mode) else None
    except (OSError, ValueError):
        return None


def load_rules(path: Path) -> Rules:
    doc: Document = load_file(path)
    problems = schema_problems(doc, RULES_SCHEMA)
    if not problems:
        for key in doc.data.get("fixed", {}):
            if not key or any(p == "" for p in key.split(".")):
                problems.append(doc.problem(("fixed", key), f"'{key}' is not a dotted spec key", at_key=True))
    if problems:
        raise SpecError(problems)
    return rules_from_dict({"name": Path(path).stem, **doc.data}, str(path))


def rules_to_dict(rules: Rules) -> dict:
    """The content of a rule set (as a rules file would state it), for the run folder's record."""
    fields = asdict(rules)
    fields.pop("source")
    fields["fixed"] = dict(rules.fixed)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()
            if v not in (None, "", (), {}) or (k == "allowed_blocks" and v == ())}  # []: no blocks at all


def rules_from_dict(data: dict, source: str = "recorded in the run folder") -> Rules:
    return Rules(
        name=data["name"], source=source, description=data.get("description", ""),
        allowed_layers=tuple(data["allowed_layers"]) if "allowed_layers" in data else None,
        allowed_blocks=tuple(data["allowed_blocks"]) if "allowed_blocks" in data else None,
        max_params=data.get("max_params"), params_below=data.get("params_below"),
        max_hidden_units=data.get("max_hidden_units"),
        required_layers=tuple(data.get("required_layers", ())),
        fixed=tuple((k, v) for k, v in data.get("fixed", {}).items()),
        target_accuracy=data.get("target_accuracy"),
        waived=tuple(data.get("waived", ())),
    )


def same_rules(a: Rules, b: Rules) -> bool:
    """The same rule set, imposed twice (by name and by the spec, or as two copies of one file)."""
    strip = lambda r: {k: v for k, v in rules_to_dict(r).items() if k not in ("name", "description")}  # noqa: E731
    return strip(a) == strip(b)


def allowed_layers(rule_sets: list[Rules]) -> list[str] | None:
    """The layers and blocks every rule set allows (None: no whitelist at all)."""
    layers = [set(r.allowed_layers) for r in rule_sets if r.allowed_layers is not None]
    blocks = [set(r.allowed_blocks) for r in rule_sets if r.allowed_blocks is not None]
    if not layers and not blocks:
        return None
    return sorted((set.intersection(*layers) if layers else set(LAYERS))
                  | (set.intersection(*blocks) if blocks else set(BLOCKS)))
