"""Warnings for the classic architecture mistakes (never errors: the spec still trains).

Each warning has a name; a spec silences one with `lint: {ignore: [name, ...]}`.
Two Softmax layers are not here: a Softmax anywhere but last is already an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from netspec.builder.analysis import Analysis
from netspec.spec.config import Spec
from netspec.spec.schema import LINT_WARNINGS as WARNINGS  # noqa: F401 (names and one-line reasons)

ACTIVATIONS = ("ReLU", "GELU", "Tanh", "Sigmoid")
POOLS = ("MaxPool2d", "AvgPool2d")
DIGIT = 20 / 28  # an MNIST digit fills about the central 20x20 pixels of 28x28; taken for any subject
DIGITS = ("mnist", "emnist-digits", "emnist-mnist")



@dataclass(frozen=True, order=True)
class LintWarning:
    path: tuple  # where in the spec, e.g. ("model", "layers", 4)
    name: str  # a key of WARNINGS
    message: str


def lint(spec: Spec, analysis: Analysis) -> list[LintWarning]:
    if spec.is_vit or not analysis.rows:
        return []
    names = [layer.name for layer in spec.model]
    found: list[LintWarning] = []

    def warn(i: int, name: str, message: str) -> None:
        if name not in spec.lint_ignore:
            found.append(LintWarning(("model", "layers", i), name, message))

    linears = [i for i, n in enumerate(names) if n == "Linear"]
    if linears:
        last = linears[-1]
        for i in range(last + 1, len(names)):
            if names[i] in ACTIVATIONS:
                warn(i, "activation-after-output", f"{names[i]} after the output layer (layers[{last}]) clips or squashes "
                                                   f"the logits before the loss; remove it")
            elif names[i] == "Dropout":
                warn(i, "dropout-after-output", f"Dropout after the output layer (layers[{last}]) zeroes logits at "
                                                f"random; put it before the last Linear")
            elif names[i].startswith("BatchNorm"):
                warn(i, "batchnorm-after-output", f"{names[i]} after the output layer (layers[{last}]) normalises the "
                                                  f"logits; put it before the activation of a hidden layer")
    for a, b in zip(linears, linears[1:]):
        if b == a + 1:
            warn(b, "linear-after-linear", f"Linear right after Linear (layers[{a}]) with no nonlinearity between: the "
                                           f"two collapse to one linear map; add e.g. ReLU between them")
    convs = [i for i, n in enumerate(names) if n == "Conv2d"]
    for i, n in enumerate(names):
        row = analysis.rows[i]
        if n in POOLS and len(row.shape) == 3 and row.shape[1:] == (1, 1) and any(c > i for c in convs):
            warn(i, "pool-to-1x1", f"{n} leaves a 1x1 map, and convolutions follow it: they see one pixel; "
                                   f"pool less or remove the later convolutions")
    classified = "Flatten" in names and any(i > names.index("Flatten") for i in linears)
    if convs and classified and spec.data.dataset != "none":
        rf, jump, end = 1, 1, len(names)
        for i, layer in enumerate(spec.model):
            if layer.name == "Flatten":
                end = i
                break
            a = layer.kwargs
            if layer.name == "Conv2d" or layer.name in POOLS:
                k = _side(a["kernel_size"])
                d = _side(a.get("dilation", 1)) if layer.name == "Conv2d" else 1
                stride = _side(a.get("stride") or (1 if layer.name == "Conv2d" else a["kernel_size"]))
                rf += (k - 1) * d * jump
                jump *= stride
        side = min(spec.data.input_shape[-2:]) if len(spec.data.input_shape) == 3 else 0
        if side and rf < DIGIT * side:
            warn(end, "small-receptive-field",
                 f"the convolutions before the classifier see {rf}x{rf} pixels, less than "
                 f"{'a digit' if spec.data.dataset in DIGITS else 'the subject of an image'} (about "
                 f"{round(DIGIT * side)}x{round(DIGIT * side)} of {side}x{side}); add convolutions or pooling")
    return sorted(found)


def _side(value) -> int:
    return value[0] if isinstance(value, (list, tuple)) else int(value)
