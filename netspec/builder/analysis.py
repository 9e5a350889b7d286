"""Analyse a frozen spec without torch: exact shapes and parameter counts from the layer
table's own rules (and the ViT's formula), so `netspec validate` answers like a linter and a
spec asking for 10^12 parameters is reported, never allocated. `tests/test_analysis.py` holds
these numbers equal to what torch's modules allocate, for random arguments of every layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from netspec.spec.config import LayerSpec, Spec, ViTSpec
from netspec.spec.layers import LAYERS, Shape, ShapeError, _fmt

DEFAULT_CLASSES = 10  # a shapes-only spec (dataset none) that does not state data.classes
MAX_PARAMS = 500_000_000  # 2 GB of float32 weights, 6 GB with Adam's state
MAX_ACTIVATION_BYTES = 8 << 30  # one training (or evaluation) batch's activations, float32
MAX_MODULES = 5_000  # building (even on meta) costs ~1 ms per module; real ViTs have hundreds
BYTES = 4


@dataclass(frozen=True)
class BuildProblem:
    path: tuple  # where in the spec, e.g. ("model", "layers", 3)
    message: str
    hint: str = ""


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    index: int
    name: str  # child name in the module, e.g. conv2d_0 (state_dict keys start with it)
    layer: str  # what it is, with its non-default arguments
    shape: Shape  # output shape of one sample
    params: int  # trainable
    frozen: int = 0  # non-trainable parameters


@dataclass
class Analysis:
    input_shape: Shape
    rows: list[Row] = field(default_factory=list)
    problems: list[BuildProblem] = field(default_factory=list)
    output_shape: Shape | None = None
    hidden_units: int | None = None  # Sequential models only
    activation_elements: int = 0  # per sample, summed over layer outputs
    softmax_head: bool = False  # the model ends in Softmax (folded into the loss)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def frozen(self) -> int:
        return sum(r.frozen for r in self.rows)

    @property
    def ok(self) -> bool:
        return not self.problems


def layer_name(index: int, layer: LayerSpec) -> str:
    return f"{layer.name.lower()}_{index}"


def _sequential(spec: Spec, shape: Shape, analysis: Analysis) -> None:
    linears = []
    for i, layer in enumerate(spec.model):
        entry = LAYERS[layer.name]
        try:
            out = entry.shape(shape, layer.kwargs)
            if any(s < 1 for s in out):
                raise ShapeError(f"output shape {_fmt(out)} is empty")
        except ShapeError as e:
            analysis.problems.append(BuildProblem(
                ("model", "layers", i), f"{layer.name} {e}",
                f"the layer before it outputs {_fmt(shape)}" if i else f"the input shape is {_fmt(shape)}"))
            return
        analysis.rows.append(Row(i, layer_name(i, layer), layer.describe(), out, entry.params(shape, layer.kwargs)))
        analysis.activation_elements += math.prod(out)
        if layer.name == "Linear":
            linears.append(layer.kwargs["out_features"])
        shape = out
    analysis.output_shape = shape
    analysis.hidden_units = sum(linears[:-1])
    analysis.softmax_head = spec.model[-1].name == "Softmax"


def vit_modules(v: ViTSpec) -> int:
    """Modules of the encoder: norms, MLP (4), attention (4, or 4 per head when run head by head)."""
    return v.depth * (7 + (5 * v.heads + 1 if v.attention == "per_head" else 4))


def _vit(spec: Spec, shape: Shape, analysis: Analysis) -> None:
    v: ViTSpec = spec.model
    where = ("model", "vit", "patch_size")
    if len(shape) != 3:
        analysis.problems.append(BuildProblem(
            ("data", "input_shape"), f"a ViT needs an image shape [channels, height, width], got {list(shape)}"))
        return
    c, h, w = shape
    classes = num_classes(spec)
    if h % v.patch_size or w % v.patch_size:
        divisors = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
        analysis.problems.append(BuildProblem(
            where, f"patch size {v.patch_size} does not tile a {h}x{w} image",
            f"use one of {divisors}"))
        return
    tokens = (h // v.patch_size) * (w // v.patch_size) + 1
    # activations per sample and layer: the attention maps dominate for long sequences
    per_layer = v.heads * tokens * tokens * 2 + tokens * (3 * v.heads * v.dim_head + 6 * v.dim + 2 * v.mlp_dim)
    analysis.activation_elements = tokens * v.dim * 2 + v.depth * per_layer
    if analysis.activation_elements * max(spec.train.batch_size, spec.train.eval_batch_size) * BYTES > MAX_ACTIVATION_BYTES:
        return  # reported by the activation check in analyze
    if vit_modules(v) > MAX_MODULES:
        analysis.problems.append(BuildProblem(
            ("model", "vit"), f"depth {v.depth} x {v.heads} heads ({v.attention}) would build about {vit_modules(v):,} "
                              f"modules; netspec builds at most {MAX_MODULES:,}",
            "use fewer layers or heads, or attention: batched (one module for all heads)"))
        return
    d, inner = v.dim, v.heads * v.dim_head
    # two LayerNorms; q, k, v without bias and the output projection; the MLP's two Linears
    encoder = 4 * d + (3 * inner * d + inner * d + d) + (d * v.mlp_dim + v.mlp_dim + v.mlp_dim * d + d)
    n = tokens - 1
    rows = [
        ("to_patch_embedding", f"patches {v.patch_size}x{v.patch_size} -> Linear", (n, d),
         v.patch_size * v.patch_size * c * d + d),
        ("tokens", "class token + position embedding", (tokens, d), d + tokens * d),
        *((f"layers.{i}", f"EncoderLayer(heads={v.heads}, dim_head={v.dim_head}, mlp_dim={v.mlp_dim})",
           (tokens, d), encoder) for i in range(v.depth)),
        ("norm", "LayerNorm", (tokens, d), 2 * d),
        ("mlp_head", f"{v.pool} token -> Linear", (classes,), d * classes + classes),
    ]
    for i, (name, text, out, params) in enumerate(rows):
        analysis.rows.append(Row(i, name, text, out, params))
    analysis.output_shape = (classes,)


def num_classes(spec: Spec) -> int:
    """The model's output size: the dataset's classes (the check writes them into the spec)."""
    return spec.data.classes or DEFAULT_CLASSES


def analyze(spec: Spec) -> Analysis:
    """Exact shapes and parameter counts, and the limits they must keep, without torch."""
    shape = tuple(spec.data.input_shape)
    analysis = Analysis(input_shape=shape)
    (_vit if spec.is_vit else _sequential)(spec, shape, analysis)
    if analysis.problems:
        return analysis
    where = ("model",)
    if analysis.params + analysis.frozen > MAX_PARAMS:
        analysis.problems.append(BuildProblem(
            where, f"the model has {analysis.params + analysis.frozen:,} parameters; netspec builds at most {MAX_PARAMS:,}",
            budget_hint(analysis)))
    for what, key, batch in (("training", "batch_size", spec.train.batch_size),
                             ("evaluation", "eval_batch_size", spec.train.eval_batch_size)):
        act = analysis.activation_elements * batch * BYTES
        if act > MAX_ACTIVATION_BYTES:
            analysis.problems.append(BuildProblem(
                ("train", key), f"one {what} batch needs about {act:,} bytes of activations "
                                f"({analysis.activation_elements:,} values per sample x {key} {batch}); "
                                f"the limit is {MAX_ACTIVATION_BYTES:,}", f"lower train.{key}"))
            break
    trains = spec.data.dataset != "none"
    classes = num_classes(spec)
    if trains and analysis.output_shape is not None and tuple(analysis.output_shape) != (classes,) and not analysis.problems:
        analysis.problems.append(BuildProblem(
            ("model", "layers", len(spec.model) - 1),
            f"the model outputs shape {_fmt(analysis.output_shape)} but {spec.data.dataset} has {classes} classes",
            f"end with Linear(out_features={classes}) on a flat input (add Flatten before it)"))
    return analysis


def budget_hint(analysis: Analysis, n: int = 3) -> str:
    total = max(analysis.params, 1)
    top = sorted(analysis.rows, key=lambda r: -r.params)[:n]
    return "most parameters are in " + ", ".join(
        f"{r.name} {r.layer} ({r.params:,}, {100 * r.params / total:.0f}%)" for r in top if r.params)
