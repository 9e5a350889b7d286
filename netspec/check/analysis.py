"""Analyse a frozen spec without torch: exact shapes and parameter counts from its model
family's own rules (the layer table's, the ViT's formula), so `netspec validate` answers like
a linter and a spec asking for 10^12 parameters is reported, never allocated.
`tests/test_analysis.py` holds these numbers equal to what torch's modules allocate.
"""
from __future__ import annotations

from netspec.spec.family import BYTES, MAX_ACTIVATION_BYTES, Analysis, BuildProblem, Row, num_classes
from netspec.families.chain import assuming
from netspec.spec.config import Spec
from netspec.spec.layers import shape_text

MAX_PARAMS = 500_000_000  # 2 GB of float32 weights, 6 GB with Adam's state


def analyze(spec: Spec, unknown: frozenset = frozenset()) -> Analysis:
    """Exact shapes and parameter counts, and the limits they must keep, without torch.
    `unknown`: paths of layer items the schema refused (the shape is unknown after them)."""
    analysis = Analysis(input_shape=tuple(spec.data.input_shape), unknown=frozenset(unknown))
    spec.family.analyze(spec, analysis)
    classes = num_classes(spec)
    if analysis.output_features is not None and analysis.output_features != classes and spec.data.dataset != "none":
        analysis.problems.append(BuildProblem(  # the shape before it is unknown; its size is not
            analysis.output_path, f"the last Linear outputs {analysis.output_features} features but "
                                  f"{spec.data.dataset} has {classes} classes",
            analysis.output_hint.format(classes=classes), code="output-size"))
    if analysis.problems:  # the output and the limits wait for the shapes
        if analysis.assumed and analysis.output_shape is not None:
            analysis.problems.extend(_output_problems(spec, analysis))
        return analysis
    if analysis.params + analysis.frozen > MAX_PARAMS:
        analysis.problems.append(BuildProblem(
            ("model",), f"the model has {analysis.params + analysis.frozen:,} parameters; netspec builds at most "
                        f"{MAX_PARAMS:,}", budget_hint(analysis), code="limit"))
    for what, key, batch in (("training", "batch_size", spec.train.batch_size),
                             ("evaluation", "eval_batch_size", spec.train.eval_batch_size)):
        act = analysis.activation_elements * batch * BYTES
        if act > MAX_ACTIVATION_BYTES:
            analysis.problems.append(BuildProblem(
                ("train", key), f"one {what} batch needs about {act:,} bytes of activations "
                                f"({analysis.activation_elements:,} values per sample x {key} {batch}); "
                                f"the limit is {MAX_ACTIVATION_BYTES:,}", f"lower train.{key}", code="limit"))
            break
    if not analysis.problems:
        analysis.problems.extend(_output_problems(spec, analysis))
    return analysis


def _output_problems(spec: Spec, analysis: Analysis) -> list[BuildProblem]:
    classes = num_classes(spec)
    if spec.data.dataset == "none" or analysis.output_shape is None or tuple(analysis.output_shape) == (classes,):
        return []
    problem = BuildProblem(
        analysis.output_path,
        f"the model outputs shape {shape_text(analysis.output_shape)} but {spec.data.dataset} has {classes} classes",
        (analysis.output_hint or "end with Linear(out_features={classes}) on a flat input").format(classes=classes),
        code="output-size")
    return [assuming(problem, analysis.assumed) if analysis.assumed else problem]


def budget_hint(analysis: Analysis, n: int = 3) -> str:
    total = max(analysis.params, 1)
    top = sorted((r for r in analysis.rows if not r.block), key=lambda r: -r.params)[:n]
    return "most parameters are in " + ", ".join(
        f"{_qualified(analysis, r)} {r.layer} ({r.params:,}, {100 * r.params / total:.0f}%)" for r in top if r.params)


def _qualified(analysis: Analysis, row: Row) -> str:
    """A row's module name with its blocks': residual_3.layers.conv2d_0."""
    return module_names(analysis)[id(row)]


def module_names(analysis: Analysis) -> dict[int, str]:
    """id(row) -> the dotted module name its parameters live under (state_dict keys start with it)."""
    names, stack = {}, []
    for row in analysis.rows:
        del stack[row.depth:]
        if row.depth and row.kind != "copy" and stack and stack[-1][1] == "Residual" and row.kind != "shortcut":
            prefix = stack[-1][0] + ".layers"
        elif row.depth and stack and stack[-1][1] == "Concat":
            prefix = f"{stack[-1][0]}.branches.{row.path[len(stack[-1][2]) + 2]}"
        else:
            prefix = stack[-1][0] if row.depth and stack else ""
        name = f"{prefix}.{row.name}" if prefix else row.name
        names[id(row)] = name
        stack.append((name, row.kind, row.path))
    return names
