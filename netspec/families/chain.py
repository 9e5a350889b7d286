"""The layer-list family (`model: {layers: [...]}`): a chain of registered layers, in which a
block (Residual, Concat, Repeat; netspec/families/blocks.py) holds layer lists of its own.

One walker goes through the list and into every block, with the layer table's shape and
parameter rules, so shapes, budgets, limits and errors are the same at every depth, and a
problem inside a block is reported at the inner layer's own line.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Iterator, Union

from netspec.spec.family import BLOCKS, Analysis, BuildProblem, Family, LintWarning, Row, Shape, plain, register_family
from netspec.families.blocks import MAX_DEPTH, block_params_text
from netspec.spec.layers import LAYERS, ShapeError, shape_text

MAX_MODULES = 5_000  # building (even on meta) costs ~1 ms per module
MAX_ITEMS = 1000  # items in one layer list
MAX_BRANCHES = 16
DIGIT = 20 / 28  # an MNIST digit fills about the central 20x20 pixels of 28x28; taken for any subject
DIGITS = ("mnist", "emnist-digits", "emnist-mnist")
RF_SHARE = 4  # small-receptive-field: the convolutions see less than a quarter of the subject's side


@dataclass(frozen=True)
class LayerSpec:
    name: str  # a key of the layer table
    args: tuple[tuple[str, Any], ...] = ()  # with defaults filled in

    @property
    def kwargs(self) -> dict:
        return dict(self.args)

    def describe(self) -> str:
        schema, args = LAYERS[self.name].args, dict(self.args)
        shown = {k: args[k] for k in schema if k in args and schema[k].get("default") != args[k]}
        return self.name + ("(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")


@dataclass(frozen=True)
class BlockSpec:
    name: str  # a key of the block table
    args: tuple[tuple[str, Any], ...] = ()  # with defaults filled in (not the layer lists)
    bodies: tuple[tuple, ...] = ()  # its layer lists: one body, or the branches

    @property
    def kwargs(self) -> dict:
        return dict(self.args)

    def describe(self) -> str:
        return block_params_text(self)


Item = Union[LayerSpec, BlockSpec]


@dataclass(frozen=True)
class LayerList:
    layers: tuple  # of Item

    def __iter__(self) -> Iterator[Item]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]


def layer_name(index: int, item: Item) -> str:
    """The child's name in its Sequential: conv2d_0, residual_3 (state_dict keys start with it)."""
    return f"{item.name.lower()}_{index}"


# --- spec side -------------------------------------------------------------------------------

def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


def parse_items(raw: list) -> tuple:
    items = []
    for entry in raw:
        name, args = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        args = dict(args or {})
        if name in BLOCKS:
            kind = BLOCKS[name]
            bodies = args.pop(kind.bodies)
            bodies = [bodies] if kind.bodies == "layers" else bodies
            full = {k: s["default"] for k, s in kind.args.items() if "default" in s} | args
            items.append(BlockSpec(name, tuple(sorted(full.items())), tuple(parse_items(b) for b in bodies)))
        else:
            full = LAYERS[name].with_defaults(args)
            items.append(LayerSpec(name, tuple(sorted((k, _frozen(v)) for k, v in full.items()))))
    return tuple(items)


def items_to_dict(items) -> list:
    out = []
    for item in items:
        if isinstance(item, BlockSpec):
            kind = BLOCKS[item.name]
            bodies = [items_to_dict(b) for b in item.bodies]
            out.append({item.name: {**plain(item.kwargs), kind.bodies: bodies[0] if kind.bodies == "layers" else bodies}})
        else:
            out.append({item.name: plain(item.kwargs)} if item.args else item.name)
    return out


def _obj(properties: dict, required=(), **extra) -> dict:
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    return out | ({"required": list(required)} if required else {}) | extra


def layers_schema(allowed: list[str] | None) -> tuple[dict, dict]:
    """model.layers, and the two $defs it recurses through (a list, and one item of it)."""
    names = sorted(n for n in (allowed if allowed is not None else [*LAYERS, *BLOCKS]) if n in LAYERS or n in BLOCKS)
    layers = [n for n in names if n in LAYERS]
    blocks = [n for n in names if n in BLOCKS]
    ref = {"$ref": "#/$defs/layers"}
    properties = {n: _obj(LAYERS[n].args, LAYERS[n].required, description=LAYERS[n].doc) for n in layers}
    for n in blocks:
        kind = BLOCKS[n]
        body = ref if kind.bodies == "layers" else {"type": "array", "minItems": 2, "maxItems": MAX_BRANCHES, "items": ref,
                                                    "description": "the branches, each a layer list"}
        properties[n] = _obj({kind.bodies: body, **kind.args}, (kind.bodies, *kind.required), description=kind.doc)
    item = {
        "if": {"type": "string"},
        "then": {"enum": [n for n in layers if not LAYERS[n].required]},
        "else": {"type": "object", "minProperties": 1, "maxProperties": 1, "propertyNames": {"enum": names},
                 "properties": properties},
    }
    return ref, {"layers": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": {"$ref": "#/$defs/layer"}},
                 "layer": item}


def walk_items(items, path: tuple = ("model", "layers")) -> Iterator[tuple[tuple, Item]]:
    """Every item with its spec path, blocks before their contents."""
    for i, item in enumerate(items):
        where = path + (i,)
        yield where, item
        if isinstance(item, BlockSpec):
            kind = BLOCKS[item.name]
            for b, body in enumerate(item.bodies):
                inner = where + (item.name, kind.bodies) + ((b,) if kind.bodies == "branches" else ())
                yield from walk_items(body, inner)


# --- analysis --------------------------------------------------------------------------------

class _TooMany(Exception):
    pass


SAME_FEATURES = ("activation", "dropout", "softmax", "identity")  # keep the last dimension's size


def assuming(problem: BuildProblem, assumed: tuple) -> BuildProblem:
    """A finding made on the shape a failed block's layers give: says so, naming the block's line."""
    path, shape = assumed
    message = problem.message if problem.refs else problem.message.replace("{", "{{").replace("}", "}}")
    return replace(problem, message=message + f" (found taking the block at {{{len(problem.refs)}}} to output "
                                              f"{shape_text(shape)}, as its layers do; check again once it is fixed)",
                   refs=problem.refs + (path,))


class Walker:
    """Goes through a layer list and into its blocks, filling an Analysis."""

    def __init__(self, analysis: Analysis):
        self.analysis = analysis
        self.rows = analysis.rows
        self.linears: list[int] = []  # out_features of every Linear, in the order they run

    def row(self, row: Row, modules: int = 1) -> None:
        self.rows.append(row)
        self.analysis.modules += modules
        if self.analysis.modules > MAX_MODULES:
            raise _TooMany

    def problem(self, problem: BuildProblem) -> None:
        if self.analysis.assumed and problem.code == "shape":  # found on a shape an earlier mistake decides
            problem = assuming(problem, self.analysis.assumed)
        if problem not in self.analysis.problems:  # a Repeat's copies walk the same items again
            self.analysis.problems.append(problem)

    def assume(self, path: tuple, shape: Shape) -> None:
        """A block failed; the shape its layers give is carried on, and later findings say so."""
        if not self.analysis.assumed:
            self.analysis.assumed = (path, shape)

    def lose(self, path: tuple) -> None:
        """The finding at `path` leaves the shapes after it unknown or assumed."""
        if self.analysis.lost is None:
            self.analysis.lost = path

    def activation(self, elements: int) -> None:
        self.analysis.activation_elements += elements

    def close(self, first: int, shape: Shape) -> None:
        """The block row at `first` gets its output shape and its children's subtotal."""
        inner = [r for r in self.rows[first + 1:] if not r.block]
        self.rows[first] = replace(self.rows[first], shape=shape, params=sum(r.params for r in inner),
                                   frozen=sum(r.frozen for r in inner))

    def items(self, items, shape: Shape, path: tuple, depth: int, main: bool, label: str = "") -> Shape | None:
        nesting = sum(1 for p in path if p in BLOCKS)
        if nesting > MAX_DEPTH:
            self.problem(BuildProblem(path, f"blocks nest {nesting} deep here; netspec allows {MAX_DEPTH}",
                                      "use Repeat for many copies rather than nesting", code="limit"))
            self.lose(path)
            return None
        for i, item in enumerate(items):  # after a shape error the rest is walked with the shape unknown (None)
            where = path + (i,)
            if where in self.analysis.unknown:  # refused by the schema: what it outputs is unknown
                shape = None
                continue
            if isinstance(item, BlockSpec):
                first = len(self.rows)
                if shape is not None:
                    self.row(Row(i, layer_name(i, item), item.describe(), shape, 0, depth=depth, block=True,
                                 path=where, main=main, kind=item.name))
                out = BLOCKS[item.name].analyze(item, shape, where, self, depth, main)
                if out is not None and shape is not None:
                    self.close(first, out)
                shape = out
                continue
            entry, kw = LAYERS[item.name], item.kwargs
            if shape is None:  # still counted for the rules that need no shape (hidden units)
                if entry.role == "linear":
                    self.linears.append(kw["out_features"])
                continue
            try:
                out = entry.shape(shape, kw)
                if any(s < 1 for s in out):
                    raise ShapeError(f"output shape {shape_text(out)} is empty")
            except ShapeError as e:
                came = (f"the layer before it outputs {shape_text(shape)}" if i else
                        f"the block's input is {shape_text(shape)}" if depth else f"the input shape is {shape_text(shape)}")
                self.problem(BuildProblem(where, (f"in {label}: " if label else "") + f"{item.name} {e}", came))
                self.lose(where)
                if entry.role == "linear":
                    self.linears.append(kw["out_features"])
                shape = None
                continue
            for arg, infer in entry.inferred.items():  # the output does not depend on it: go on
                if arg in kw and kw[arg] != infer(shape):
                    self.problem(BuildProblem(where + (item.name, arg), f"netspec infers {arg} = {infer(shape)} from "
                                              f"the layer before (it outputs {shape_text(shape)}); {kw[arg]} is stated",
                                              f"remove {arg} (netspec fills it in) or make it {infer(shape)}"))
            self.row(Row(i, layer_name(i, item), item.describe(), out, entry.params(shape, kw), depth=depth,
                         path=where, main=main, kind=item.name))
            self.activation(math.prod(out))
            if entry.role == "linear":
                self.linears.append(kw["out_features"])
            shape = out
        return shape


# --- lints -----------------------------------------------------------------------------------

def _where(path: tuple) -> str:
    from netspec.spec.loader import format_path

    return format_path(path)


def _lint(spec, analysis: Analysis) -> list[LintWarning]:
    config: LayerList = spec.model
    found: set[LintWarning] = set()
    at = dict(walk_items(config.layers))  # spec path -> item, once (a Repeat's copies share their paths)
    # the main path, in the order it runs (each copy of a Repeat again; a Concat's first branch)
    rows = [r for r in analysis.rows if not r.block and r.main and r.kind in LAYERS]
    roles = [LAYERS[r.kind].role for r in rows]

    def warn(row: Row, name: str, message: str) -> None:
        found.add(LintWarning(row.path, name, message))

    for row in rows:  # PyTorch habit: a size netspec infers, stated (and equal, or it is an error)
        stated = [a for a in LAYERS[row.kind].inferred if a in at[row.path].kwargs]
        if stated:
            warn(row, "inferred-argument", f"{', '.join(stated)} of {row.kind} is inferred by netspec from the "
                                           f"layer before; stating it is not needed (it matches)")
    linears = [i for i, role in enumerate(roles) if role == "linear"]
    if linears:
        last = rows[linears[-1]]
        for row, role in zip(rows[linears[-1] + 1:], roles[linears[-1] + 1:]):
            if role == "activation":
                warn(row, "activation-after-output", f"{row.kind} after the output layer ({_where(last.path)}) clips "
                                                     f"or squashes the logits before the loss; remove it")
            elif role == "dropout":
                warn(row, "dropout-after-output", f"Dropout after the output layer ({_where(last.path)}) zeroes logits "
                                                  f"at random; put it before the last Linear")
            elif role == "batchnorm":
                warn(row, "batchnorm-after-output", f"{row.kind} after the output layer ({_where(last.path)}) "
                                                    f"normalises the logits; put it before the activation of a hidden layer")
    for a, b in zip(linears, linears[1:]):
        if b == a + 1:
            warn(rows[b], "linear-after-linear", f"Linear right after Linear ({_where(rows[a].path)}) with no "
                                                 f"nonlinearity between: the two collapse to one linear map; add e.g. ReLU between them")
    convs = [i for i, role in enumerate(roles) if role == "conv"]
    for i, (row, role) in enumerate(zip(rows, roles)):
        if role == "pool" and len(row.shape) == 3 and row.shape[1:] == (1, 1) and any(c > i for c in convs):
            warn(row, "pool-to-1x1", f"{row.kind} leaves a 1x1 map, and convolutions follow it: they see one pixel; "
                                     f"pool less or remove the later convolutions")
    flat = next((i for i, role in enumerate(roles) if role == "flatten"), None)
    if convs and flat is not None and any(i > flat for i in linears) and spec.data.dataset != "none":
        rf = _receptive_field([(at[row.path].kwargs, role) for row, role in zip(rows[:flat], roles[:flat])
                               if role in ("conv", "pool") and LAYERS[row.kind].dims == 2])
        side = min(spec.data.input_shape[-2:]) if len(spec.data.input_shape) == 3 else 0
        # warn only where it is clearly too small: under a quarter of the subject's side. The
        # classic two-convolution nets (Keras' and PyTorch's MNIST examples, receptive field 6;
        # LeNet-5, 16) train to 99% because the Linear after Flatten sees the whole map
        if side and rf * RF_SHARE < DIGIT * side:
            warn(rows[flat], "small-receptive-field",
                 f"the convolutions before the classifier see {rf}x{rf} pixels, less than a quarter of "
                 f"{'a digit' if spec.data.dataset in DIGITS else 'the subject of an image'} (about "
                 f"{round(DIGIT * side)}x{round(DIGIT * side)} of {side}x{side}); add convolutions or pooling")
    return sorted(found)


def _receptive_field(layers: list[tuple[dict, str]]) -> int:
    """The side of the input square one output pixel sees, through 2-d convolutions and poolings
    (their arguments and role, in order); global pooling sees everything."""
    rf, jump = 1, 1
    for a, role in layers:
        if "kernel_size" not in a:  # global pooling sees the whole map
            return 10**9
        k = _side(a["kernel_size"])
        d = _side(a.get("dilation", 1)) if role == "conv" else 1
        stride = _side(a.get("stride") or (1 if role == "conv" else a["kernel_size"]))
        rf += (k - 1) * d * jump
        jump *= stride
    return rf


def _side(value) -> int:
    return value[0] if isinstance(value, (list, tuple)) else int(value)


# --- the family ------------------------------------------------------------------------------

class LayersFamily(Family):
    key = "layers"
    config = LayerList
    doc = "a list of layers, in which blocks (Residual, Concat, Repeat) hold layer lists of their own"

    def schema(self, allowed):
        return layers_schema(allowed)

    def parse(self, raw):
        return LayerList(parse_items(raw))

    def to_dict(self, config):
        return items_to_dict(config.layers)

    def layer_names(self, config):
        return [item.name for _, item in walk_items(config.layers) if isinstance(item, LayerSpec)]

    def block_names(self, config):
        return [item.name for _, item in walk_items(config.layers) if isinstance(item, BlockSpec)]

    def named_places(self, config):
        return [(where, item.name) for where, item in walk_items(config.layers)]

    def describe(self, config):
        return [(item.name, "  " * sum(1 for p in where if p in BLOCKS) + item.describe())
                for where, item in walk_items(config.layers)]

    def has_conv(self, config):
        return any(isinstance(item, LayerSpec) and LAYERS[item.name].role == "conv" and LAYERS[item.name].dims == 2
                   for _, item in walk_items(config.layers))

    def analyze(self, spec, analysis: Analysis) -> None:
        walker = Walker(analysis)
        try:
            out = walker.items(spec.model.layers, analysis.input_shape, ("model", "layers"), 0, True)
        except _TooMany:
            analysis.problems.append(BuildProblem(
                ("model", "layers"), f"the layers and blocks would build more than {MAX_MODULES:,} modules; "
                                     f"netspec builds at most {MAX_MODULES:,}", "use fewer Repeat copies or layers",
                code="limit"))
            analysis.lost = analysis.lost or ("model", "layers")
            return
        last = spec.model.layers[-1]
        analysis.hidden_units = sum(walker.linears[:-1])
        analysis.softmax_head = isinstance(last, LayerSpec) and LAYERS[last.name].role == "softmax"
        if out is None:  # the shape is unknown: the last Linear still says how many outputs there are
            top = [(('model', 'layers', k), item) for k, item in enumerate(spec.model.layers)]
            tail = next((k for k in range(len(top) - 1, -1, -1) if isinstance(top[k][1], BlockSpec)
                         or top[k][0] in analysis.unknown or LAYERS[top[k][1].name].role == "linear"), None)
            if tail is not None and isinstance(top[tail][1], LayerSpec) and top[tail][0] not in analysis.unknown:
                if all(LAYERS[i.name].role in SAME_FEATURES for _, i in top[tail + 1:]):
                    analysis.output_features = top[tail][1].kwargs["out_features"]
                    analysis.output_path = top[tail][0]
                    analysis.output_hint = "make the last Linear's out_features {classes}"
            return
        analysis.output_shape = out
        analysis.output_path = ("model", "layers", len(spec.model) - 1)
        linears = [r for r in analysis.rows if r.kind in LAYERS and LAYERS[r.kind].role == "linear" and r.main]
        if len(out) > 1:
            analysis.output_hint = ("the output is not flat: add Flatten before the last Linear" if linears else
                                    "end with Flatten and Linear(out_features={classes})")
        elif linears:  # the layer that decides the output size, not the Softmax after it
            analysis.output_path = linears[-1].path
            analysis.output_hint = "make the last Linear's out_features {classes}"

    def lint(self, spec, analysis):
        return _lint(spec, analysis)

    def hint_within(self, hint, allowed, spec):
        """Without Flatten, flat input vectors (data.input_shape) do its work; another activation
        the rules allow stands in for ReLU."""
        shape = list(spec.data.input_shape)
        if "Flatten" in hint and "Flatten" not in allowed:
            hint = (f"the rules allow no Flatten: give the model flat vectors, data.input_shape: "
                    f"[{math.prod(shape)}] (not {shape})" if len(shape) > 1 else
                    "the rules allow no Flatten: the layers must keep the input flat")
        if "ReLU" in hint and "ReLU" not in allowed:
            other = [n for n in allowed if n in LAYERS and LAYERS[n].role == "activation"]
            hint = hint.replace("ReLU", other[0] if other else "an activation the rules allow")
        return hint

    def training_problems(self, spec):
        out = []
        items = list(walk_items(spec.model.layers))
        last = ("model", "layers", len(spec.model) - 1)
        norms = [(where, item) for where, item in items
                 if isinstance(item, LayerSpec) and LAYERS[item.name].role == "batchnorm"]
        if spec.train.batch_size == 1 and norms:
            where, item = norms[0]
            out.append((("train", "batch_size"),
                        f"batch size 1 with {item.name} ({_where(where)}): batch statistics of one sample are "
                        "undefined in training", "use a batch size of 2 or more"))
        for k, (where, item) in enumerate(items):
            if isinstance(item, LayerSpec) and LAYERS[item.name].role == "softmax" and where != last:
                learns = [i.name for _, i in items[k + 1:] if isinstance(i, LayerSpec) and LAYERS[i.name].role in ("linear", "conv")]
                if learns:  # what it does there: squashes hidden features
                    out.append((where, f"Softmax between layers turns the features into probabilities that sum to 1 "
                                       f"before the {learns[0]} after it: a hidden layer wants an activation",
                                "use ReLU here; Softmax belongs at the end, if anywhere"))
                else:
                    out.append((where, "Softmax is allowed only as the last layer: cross-entropy would otherwise be "
                                       "computed on probabilities", "remove it, or move it to the end"))
        return out

    def build(self, spec):
        return build_list(spec.model.layers, tuple(spec.data.input_shape))[0]


def build_list(items, shape: Shape):
    """(nn.Sequential of the items with readable child names, its output shape)."""
    from torch import nn

    children: OrderedDict = OrderedDict()
    for i, item in enumerate(items):
        if isinstance(item, BlockSpec):
            children[layer_name(i, item)], shape = BLOCKS[item.name].make(item, shape, build_list)
        else:
            entry = LAYERS[item.name]
            children[layer_name(i, item)] = entry.make(shape, item.kwargs)
            shape = entry.shape(shape, item.kwargs)
    return nn.Sequential(children), shape


LAYERS_FAMILY = register_family(LayersFamily())
