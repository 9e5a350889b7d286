"""Checking a spec: load, apply `--set` overrides, check the schema, then the exact checks.

Stage 1 is the JSON Schema (narrowed to the rules' layer whitelist). Stage 2
builds the model on the meta device and checks what a schema cannot: shapes
fit, budgets, required layers and fixed settings. Every problem of a stage is
reported at once, each at its line and column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import netspec.families  # noqa: F401  (registers the built-in model families the spec reads through)

from netspec.check.lint import lint
from netspec.check.analysis import Analysis, analyze, budget_hint
from netspec.errors import Problem, SpecError
from netspec.spec.config import Spec, get_path, spec_from_dict, split_key
from netspec.spec.datasets import DEFAULT_TEST, FILES, NAMED, FactsError, dataset_facts
from netspec.spec.loader import Document, format_path
from netspec.spec.rules import Rules, allowed_layers, load_rules, resolve_rules, same_rules, shipped_rule_sets
from netspec.spec.schema import spec_schema
from netspec.spec.schema_errors import schema_problems


class RuleKind(Enum):
    """What a rule limits; its value is the finding's code after `rule/`."""

    LAYERS = "layers"
    BLOCKS = "blocks"
    PARAMS = "params"
    HIDDEN_UNITS = "hidden-units"
    REQUIRED_LAYER = "required-layers"
    FIXED = "fixed"
    TARGET_ACCURACY = "test-accuracy"


@dataclass(frozen=True)
class RuleResult:
    """One rule applied to one spec, for the summary table and for errors."""

    kind: RuleKind
    rules: str  # rule set name
    rule: str  # e.g. "params"
    value: str  # what the spec has
    limit: str  # what the rule allows
    ok: bool | None  # None: checked after the run (the accuracy target)
    path: tuple = ()
    hint: str = ""
    waived: bool = False  # broken, and allowed because the run is a draft (`--draft`): not gradable
    places: tuple = ()  # (path, name) of each offending layer or block: a broken whitelist is reported at each
    layer: str = ""  # the layer a required-layer rule names


@dataclass(frozen=True)
class Checked:
    """A spec that passed validation, with everything learned on the way."""

    spec: Spec
    doc: Document
    rules: tuple[Rules, ...]
    analysis: Analysis
    results: tuple[RuleResult, ...]
    warnings: tuple[Problem, ...] = ()  # the linter's, located like problems (message starts with its name)

    @property
    def draft(self) -> bool:
        """Some fixed setting of the rules is overridden (`--draft`): the run is not gradable."""
        return any(r.waived for r in self.results)

    @property
    def waived(self) -> list[str]:
        return [f"{r.rule} ({r.value}; {r.limit} by '{r.rules}')" for r in self.results if r.waived]

    @property
    def target_accuracy(self) -> float | None:
        targets = [r.target_accuracy for r in self.rules if r.target_accuracy is not None]
        return max(targets) if targets else None


def _rule_sets(doc: Document, imposed: tuple[str, ...], base_dir: Path) -> tuple[list[Rules], list[Problem]]:
    found, problems = [], []
    ref = doc.data.get("rules") if isinstance(doc.data, dict) else None
    refs = ([(ref, base_dir, ("rules",))] if isinstance(ref, str) and ref else []) + [(r, Path.cwd(), None) for r in imposed]
    for name, base, path in refs:
        where = resolve_rules(name, base)
        if where is None:
            msg = f"rules '{name}' not found: not a shipped rule set ({', '.join(shipped_rule_sets())}) nor a file"
            problems.append(doc.problem(path, msg, code="rules") if path else Problem(name, 0, 0, "", msg, code="rules"))
            continue
        try:
            loaded = load_rules(where)
        except SpecError as e:
            problems.extend(e.problems)
            continue
        if not any(same_rules(loaded, seen) for seen in found):  # the spec's own set imposed again counts once
            found.append(loaded)
    return found, problems


def check_document(doc: Document, *, imposed: tuple[str, ...] = (), base_dir: Path = Path("."),
                   rule_sets: list[Rules] | None = None, read_data: bool = True, draft: bool = False) -> Checked:
    """Check a loaded spec. `rule_sets`, when given, are used instead of looking up the spec's
    `rules:` and `imposed` (a run folder checks its spec against the rules it recorded).
    `read_data=False` trusts a user dataset's stated classes and image shape (a run folder's
    record) instead of reading the folder or file, which may be gone."""
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), f"a spec is a mapping of keys (name, data, model, train), not {type(doc.data).__name__}")])
    names_in_any_case(doc.data)
    if rule_sets is None:
        rule_sets, problems = _rule_sets(doc, imposed, base_dir)
    else:
        rule_sets, problems = list(rule_sets), []
    if draft:  # a draft may override any fixed setting; the record says which were
        rule_sets = [replace(r, waived=tuple(k for k, _ in r.fixed)) for r in rule_sets]
    allowed = allowed_layers(rule_sets)
    problems += schema_problems(doc, spec_schema(allowed), allowed)
    if problems:  # what the rules say about the file as written is independent of those mistakes: one round
        early = [p for p in early_rule_problems(doc, rule_sets) if p.path not in {q.path for q in problems}]
        raise SpecError(beyond_schema(problems, doc, rule_sets, base_dir, read_data, allowed) + early)

    try:
        spec = resolve_data(spec_from_dict(doc.data), doc, base_dir, read_data)
    except SpecError as e:  # the spec against its data set's facts
        raise SpecError([p if p.code else p.coded("data") for p in e.problems]) from None
    analysis = analyze(spec)
    problems = [build_problem(doc, p) for p in analysis.problems]
    problems += [doc.problem(path, msg, hint, code="training") for path, msg, hint in training_problems(spec)]
    results = tuple(r for rules in rule_sets for r in apply_rules(rules, spec, analysis))
    problems += problems_of([r for r in results if shapes_known(analysis) or r.rule != "params"], doc)
    if analysis.lost is not None:
        problems = waiting(problems, results, format_path(analysis.lost))
    problems = [within_rules(p, allowed, spec) for p in problems]
    warnings = tuple(within_rules(doc.problem(w.path, f"{w.message} [{w.name}]", code=f"lint/{w.name}"), allowed, spec)
                     for w in lint(spec, analysis)) if not problems else ()
    checked = Checked(spec, doc, tuple(rule_sets), analysis, results, warnings)
    if problems:
        error = SpecError(problems)
        if not analysis.problems:  # the model builds: its table still helps to get under a budget
            error.checked = checked
        raise error
    return checked


def shapes_known(analysis: Analysis) -> bool:
    """Every layer's shape is known for sure: the parameter count is exact."""
    return analysis.lost is None and not analysis.unknown and analysis.output_shape is not None


def waiting(problems: list[Problem], results, at: str) -> list[Problem]:
    """The finding at `at`, which leaves the shapes after it unknown, says what waits for its fix:
    the budgets and limits need every layer's shape."""
    budgets = [f"{r.rule} {r.limit} (rules '{r.rules}')" for r in results if r.rule == "params"]
    wait = "once the shapes are known, netspec checks " + ", ".join(budgets + ["the parameter and memory limits"])
    for k, p in enumerate(problems):
        if p.path == at:
            return problems[:k] + [replace(p, hint=f"{p.hint}; {wait}" if p.hint else wait)] + problems[k + 1:]
    return problems


def beyond_schema(found: list[Problem], doc: Document, rule_sets: list[Rules], base_dir: Path,
                  read_data: bool, allowed: list[str] | None = None) -> list[Problem]:
    """The schema's problems `found`, and what can still be checked beside them: the spec with each
    refused part taken out (a setting falls back to its default; a layer item stays as an unknown,
    the shape unknown after it) goes through the exact checks; findings at the parts taken out are
    dropped. The first refused layer item says what waits for its fix."""
    repaired = _repaired(doc.data)
    if repaired is None:
        return found
    data, unknown, taken = repaired
    outside = lambda p: not any(p.path == t or p.path.startswith((t + ".", t + "[")) for t in taken)  # noqa: E731
    try:
        spec = resolve_data(spec_from_dict(data), doc, base_dir, read_data)
    except SpecError as e:
        return found + [p if p.code else p.coded("data") for p in e.problems if outside(p)]
    except Exception:  # noqa: BLE001 - what the schema refused may break more than it says: the schema's word stands
        return found
    analysis = analyze(spec, unknown=unknown)
    problems = [build_problem(doc, p) for p in analysis.problems]
    problems += [doc.problem(path, msg, hint, code="training") for path, msg, hint in training_problems(spec)]
    results = [r for rules in rule_sets for r in apply_rules(rules, spec, analysis)]
    problems += problems_of([r for r in results  # the schema's problems and early_rule_problems name the rest
                             if r.rule == "hidden units" or r.rule == "params" and shapes_known(analysis)], doc)
    if unknown:
        found = waiting(found, results, format_path(min(unknown, key=doc.locate)))
    elif analysis.lost is not None:
        problems = waiting(problems, results, format_path(analysis.lost))
    return found + [within_rules(p, allowed, spec) for p in problems if outside(p)]


def within_rules(problem: Problem, allowed: list[str] | None, spec: Spec) -> Problem:
    """A hint never suggests a layer the rules in force refuse (the family words it otherwise)."""
    if allowed is None or not problem.hint:
        return problem
    hint = spec.family.hint_within(problem.hint, allowed, spec)
    return problem if hint == problem.hint else replace(problem, hint=hint)


def _repaired(data: dict, rounds: int = 8):
    """(data valid under the full schema, paths of layer items replaced by an unknown, paths taken
    out as text), or None when what is refused cannot be taken out (the model's list itself, the name)."""
    import copy

    from netspec.spec.schema_errors import Validator, is_item_path

    data, unknown, taken = copy.deepcopy(data), set(), set()
    validator = Validator(spec_schema(None))
    for _ in range(rounds):
        errors = list(validator.iter_errors(data))
        if not errors:
            return data, frozenset(unknown), taken
        for err in errors:
            path = tuple(err.absolute_path)
            item = next((path[:n] for n in range(len(path), 2, -1) if is_item_path(path[:n])), None)
            if item is not None:  # the innermost layer item holding the mistake
                if not _put(data, item, "Identity"):
                    return None
                unknown.add(item)
                taken.add(format_path(item))
                continue
            if path[:1] == ("model",) or len(path) < (1 if err.validator == "additionalProperties" else 2):
                return None
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                known = err.schema.get("properties", {})
                node = _get(data, path)
                for key in [k for k in err.instance if k not in known]:
                    if isinstance(node, dict):
                        node.pop(key, None)
                    taken.add(format_path(path + (key,)))
                continue
            while path and not isinstance(path[-1], str):
                path = path[:-1]
            if len(path) < 2 or not _drop(data, path):  # a whole section, or the spec's name: no default
                return None
            taken.add(format_path(path))
    return None


def _get(data, path: tuple):
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _put(data, path: tuple, value) -> bool:
    parent = _get(data, path[:-1])
    if isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
        parent[path[-1]] = value
        return True
    return False


def _drop(data, path: tuple) -> bool:
    parent = _get(data, path[:-1])
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
        return True
    return False


def build_problem(doc: Document, problem) -> Problem:
    """An analysis problem at its line; the other places it names ({0}, {1}) as lines too."""
    message = problem.message
    if problem.refs:
        message = message.format(*(f"line {doc.locate(ref)[0]}" for ref in problem.refs))
    return doc.problem(problem.path, message, problem.hint, code=problem.code)


def names_in_any_case(data: dict) -> None:
    """`Adam`, `OneCycle`: the optimizer's and the schedule's names are read in any case (as torch spells them)."""
    train = data.get("train")
    for section in ("optimizer", "schedule"):
        part = train.get(section) if isinstance(train, dict) else None
        if isinstance(part, dict) and isinstance(part.get("name"), str):
            part["name"] = part["name"].lower()


def early_rule_problems(doc: Document, rule_sets: list[Rules]) -> list[Problem]:
    """Rule findings that need no valid spec: a fixed setting written with another value, a
    required layer named nowhere. Reported with the schema's errors, so a spec is fixed in one round."""
    from netspec.spec.schema_errors import layer_items

    names = {item if isinstance(item, str) else next(iter(item)) for _, item in layer_items(doc.data)
             if isinstance(item, str) or (isinstance(item, dict) and len(item) == 1)}
    results = []  # the same RuleResults `apply_rules` makes, so the messages are problems_of's
    for rules in rule_sets:
        for key, want in rules.fixed:
            try:
                have = get_path(doc.data, key)
            except (KeyError, IndexError, TypeError):
                continue  # unsaid: the default decides, after the schema
            results.append(_fixed_result(rules, key, have, want))
        for layer in rules.required_layers:  # as the full check counts them (a ViT names no layers)
            results.append(_required_result(rules, layer, names))
    return problems_of(results, doc)


def _required_result(rules: Rules, layer: str, names) -> RuleResult:
    return RuleResult(RuleKind.REQUIRED_LAYER, rules.name, f"has {layer}", "yes" if layer in names else "no", "required",
                      layer in names, ("model",), layer=layer)


def _fixed_result(rules: Rules, key: str, have, want) -> RuleResult:
    ok = (list(have) if isinstance(have, tuple) else have) == want
    keys = ", ".join(k for k, _ in rules.fixed)  # what `check_document(draft=True)` waives: every fixed setting
    hint = (f"the rules fix {key} at {_show(want)}; for a quick try, `netspec run --draft` waives the rules' "
            f"fixed settings ({keys}), in the file or from --set: every other rule still applies, and the run "
            "is marked 'draft: not gradable'")
    return RuleResult(RuleKind.FIXED, rules.name, key, _show(have), f"fixed at {_show(want)}", ok, split_key(key),
                      hint="" if ok else hint, waived=not ok and key in rules.waived)


def resolve_data(spec: Spec, doc: Document, base_dir: Path, read_data: bool = True) -> Spec:
    """The spec with its dataset's facts written in (absolute path, image shape, classes), after
    checking the spec against them: input size, stated classes and shape, validation and test sizes."""
    d = spec.data
    if d.dataset == "none":
        return spec
    if d.path is not None:
        try:
            d = replace(d, path=str((base_dir / Path(d.path).expanduser()).resolve()))
        except (OSError, ValueError, RuntimeError) as e:  # a null byte, a symlink loop, no home folder
            raise SpecError([doc.problem(("data", "path"), f"{d.path!r} is not a usable path: {e}")]) from None
    if d.dataset in FILES and not read_data and d.classes and d.image_shape:
        return replace(spec, data=d)
    section = doc.data.get("data") if isinstance(doc.data, dict) else None
    input_given = isinstance(section, dict) and "input_shape" in section
    if d.dataset == "imagefolder" and not d.image_shape and not input_given:
        raise SpecError([doc.problem(("data", "dataset"), "imagefolder resizes every image to a stated size, and this "
                                     "spec states none", "add data.image_shape: [channels, height, width] "
                                     "(channels 1 = grayscale, 3 = RGB)")])
    try:
        facts = dataset_facts(d)
    except FactsError as e:
        raise SpecError([doc.problem(e.path, e.message, e.hint)]) from None
    if not input_given:  # unsaid: the dataset's own image shape
        d = replace(d, input_shape=tuple(facts.image_shape))
    problems = _data_problems(d, facts, doc)
    if problems:
        raise SpecError(problems)
    test = (DEFAULT_TEST if d.test is None else d.test) if facts.holds_out_test else None
    return replace(spec, data=replace(d, image_shape=tuple(facts.image_shape), classes=len(facts.classes), test=test))


def _data_problems(d, facts, doc: Document) -> list:
    """A data section checked against its dataset's facts: every mismatch, each at its key."""
    name, problems = d.dataset, []
    shape, values = list(facts.image_shape), math.prod(facts.image_shape)
    if d.path is not None and d.dataset in NAMED:
        problems.append(doc.problem(("data", "path"), f"{name} is found by name (in --data-dir); data.path is "
                                    "for imagefolder and npz", "remove data.path"))
    if d.classes is not None and d.classes != len(facts.classes):
        problems.append(doc.problem(("data", "classes"), f"{d.classes} classes stated, but {name} has "
                                    f"{len(facts.classes)}: {', '.join(facts.classes[:12])}"
                                    + (", ..." if len(facts.classes) > 12 else "")))
    if d.image_shape is not None and d.dataset in NAMED and list(d.image_shape) != shape:
        problems.append(doc.problem(("data", "image_shape"), f"{list(d.image_shape)} stated, but {name} images are {shape}"))
    if math.prod(d.input_shape) != values:
        problems.append(doc.problem(
            ("data", "input_shape"), f"{list(d.input_shape)} holds {math.prod(d.input_shape)} values; "
                                     f"{name} images are {shape} ({values} values)",
            f"use {shape} for images or [{values}] for flat vectors"
            + (" (or data.image_shape to resize the files)" if d.dataset == "imagefolder" else "")))
    if d.dataset in NAMED and isinstance(d.validation, int) and d.validation >= facts.train:
        problems.append(doc.problem(("data", "validation"), f"{d.validation:,} validation images, but {name} has "
                                    f"{facts.train:,} training images", "hold out fewer (default 5000) or a share such as 0.1"))
    if (d.mean is None) != (d.std is None):
        given, missing = ("mean", "std") if d.std is None else ("std", "mean")
        problems.append(doc.problem(("data", given), f"data.{given} is given without data.{missing}",
                                    "give both (one value per channel), or neither to use the training split's"))
    for key, given_values in (("mean", d.mean), ("std", d.std)):
        if given_values is not None and len(given_values) != facts.image_shape[0]:
            problems.append(doc.problem(("data", key), f"{len(given_values)} value(s); {name} images have "
                                        f"{facts.image_shape[0]} channel(s)", "one value per channel"))
    if d.layout is not None and d.dataset != "npz":
        problems.append(doc.problem(("data", "layout"), f"data.layout is for npz archives; {name} says how its "
                                    "images are stored", "remove data.layout"))
    if d.test is not None and not facts.holds_out_test:
        problems.append(doc.problem(("data", "test"), f"{name} has its own test split; data.test is for a single "
                                    "image folder or an npz without x_test", "remove data.test"))
    return problems


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
    out += spec.family.training_problems(spec)
    return out


def apply_rules(rules: Rules, spec: Spec, analysis: Analysis) -> list[RuleResult]:
    out: list[RuleResult] = []
    r = rules.name
    names = spec.family.layer_names(spec.model)
    items = spec.family.named_places(spec.model)
    if rules.allowed_layers is not None:
        bad = sorted(set(names) - set(rules.allowed_layers))
        out.append(RuleResult(RuleKind.LAYERS, r, "layers", ", ".join(bad) or "all allowed", "only " + ", ".join(rules.allowed_layers),
                              not bad, ("model",), places=tuple(p for p in items if p[1] in bad)))
    if rules.allowed_blocks is not None:
        bad = sorted(set(spec.family.block_names(spec.model)) - set(rules.allowed_blocks))
        out.append(RuleResult(RuleKind.BLOCKS, r, "blocks", ", ".join(bad) or "all allowed",
                              "only " + ", ".join(rules.allowed_blocks) if rules.allowed_blocks else "none (a plain chain)",
                              not bad, ("model",), places=tuple(p for p in items if p[1] in bad)))
    if rules.max_params is not None:
        out.append(RuleResult(RuleKind.PARAMS, r, "params", f"{analysis.params:,}", f"<= {rules.max_params:,}",
                              analysis.params <= rules.max_params, ("model",), budget_hint(analysis)))
    if rules.params_below is not None:
        out.append(RuleResult(RuleKind.PARAMS, r, "params", f"{analysis.params:,}", f"< {rules.params_below:,}",
                              analysis.params < rules.params_below, ("model",), budget_hint(analysis)))
    if rules.max_hidden_units is not None:
        hidden = analysis.hidden_units
        out.append(RuleResult(
            RuleKind.HIDDEN_UNITS, r, "hidden units", "n/a (not a layer list)" if hidden is None else
            f"at least {hidden:,}" if analysis.unknown else f"{hidden:,}",  # items the schema refused count as 0
            f"<= {rules.max_hidden_units:,}", hidden is not None and hidden <= rules.max_hidden_units,
            ("model",), "hidden units: out_features of every Linear but the last"))
    for name in rules.required_layers:
        out.append(_required_result(rules, name, names))
    resolved = spec.to_dict()
    for key, want in rules.fixed:
        try:
            have = get_path(resolved, key)
        except (KeyError, IndexError, TypeError):
            have = None
        out.append(_fixed_result(rules, key, have, want))
    if rules.target_accuracy is not None:
        out.append(RuleResult(RuleKind.TARGET_ACCURACY, r, "test accuracy", "after the run", f">= {rules.target_accuracy}", None))
    return out


def _show(v: Any) -> str:
    return "(absent)" if v is None else str(v)


def rule_code(result: RuleResult) -> str:
    """rule/params, rule/hidden-units, rule/layers, rule/blocks, rule/required-layers, rule/fixed."""
    return "rule/" + result.kind.value


def problems_of(results: list[RuleResult], doc: Document) -> list[Problem]:
    problems = []
    for res in results:
        if res.ok is False and not res.waived:
            if res.kind is RuleKind.FIXED:
                msg = f"{res.rule} is {res.value}, but it is {res.limit} by rules '{res.rules}'"
            elif res.kind is RuleKind.REQUIRED_LAYER:
                layer = res.layer
                msg = f"rules '{res.rules}' require a {layer} layer, and the model has none"
                hint = f"add - {layer} to model.layers where it belongs"
                problems.append(doc.problem(res.path, msg, hint, code=rule_code(res)))
                continue
            elif res.places:  # each offending layer (block) at its own line, as the schema reports it
                what = res.rule[:-1]
                for path, name in res.places:
                    problems.append(doc.problem(path, f"{what} '{name}' is not allowed by rules '{res.rules}'",
                                                f"allowed: {res.limit.removeprefix('only ')}", code=rule_code(res)))
                continue
            else:
                msg = f"{res.rule} is {res.value}; rules '{res.rules}' require {res.limit}"
            problems.append(doc.problem(res.path, msg, res.hint, code=rule_code(res)))
    return problems
