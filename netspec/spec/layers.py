"""The closed layer registry: one table entry per layer name.

Each entry holds everything netspec knows about a layer: the torch class, the
JSON Schema of its arguments (the spec schema is generated from these), and its
shape rule, which infers the input size torch needs (`in_features`,
`in_channels`, `num_features`) and the output shape. A spec's layer name is
only ever a key into `LAYERS`; nothing reaches `getattr`, `eval` or `import`.

Shapes here never include the batch dimension: `(1, 28, 28)` is one image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


Shape = tuple[int, ...]
MAX_SIZE = 2**31 - 1  # any single size argument; larger is surely a typo


class ShapeError(Exception):
    """A layer cannot take the shape that reaches it (message says why)."""


# Argument schemas, reused across entries.
def _int(minimum: int = 1, default: int | None = None) -> dict:
    s = {"type": "integer", "minimum": minimum, "maximum": MAX_SIZE}
    return s | ({"default": default} if default is not None else {})


def _int_or_pair(minimum: int = 1, default: int | None = None) -> dict:
    item = {"type": "integer", "minimum": minimum, "maximum": MAX_SIZE}
    s = {"type": ["integer", "array"], **item, "items": item, "minItems": 2, "maxItems": 2}
    return s | ({"default": default} if default is not None else {})


def _prob(default: float) -> dict:
    return {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": default}


def _bool(default: bool) -> dict:
    return {"type": "boolean", "default": default}


def _positive(default: float) -> dict:
    return {"type": "number", "exclusiveMinimum": 0, "default": default}


@dataclass(frozen=True)
class LayerType:
    name: str
    make: Callable[[Shape, dict], Any]  # input shape, arguments -> torch module (imports torch when called)
    shape: Callable[[Shape, dict], Shape]  # input shape, arguments -> output shape
    params: Callable[[Shape, dict], int] = lambda s, a: 0  # input shape, arguments -> trainable parameters
    args: dict[str, dict] = field(default_factory=dict)  # argument -> JSON Schema
    required: tuple[str, ...] = ()
    doc: str = ""
    # what the layer does, for the linter and the checks (never its name): linear, conv, pool,
    # batchnorm, norm, activation, dropout, softmax, flatten, identity
    role: str = ""
    dims: int = 0  # spatial dimensions of a windowed layer (Conv2d: 2)
    # what torch's constructor wants and netspec infers (in_features, in_channels, num_features): a spec
    # may state it out of PyTorch habit; it must then equal the inferred value
    inferred: dict[str, Callable[[Shape], int]] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.inferred:  # stated, they are whole numbers; the analysis compares them
            self.args.setdefault(name, {"type": "integer", "minimum": 1, "maximum": MAX_SIZE,
                                        "description": "inferred by netspec from the layer before; if stated, it "
                                                       "must equal the inferred value"})

    def with_defaults(self, args: dict) -> dict:
        defaults = {k: s["default"] for k, s in self.args.items() if "default" in s}
        return defaults | dict(args)


LAYERS: dict[str, LayerType] = {}


def register(entry: LayerType) -> LayerType:
    if entry.name in LAYERS:
        raise ValueError(f"layer {entry.name!r} is already registered")
    LAYERS[entry.name] = entry
    return entry


# --- shape rules ----------------------------------------------------------

def _rank(shape: Shape, ranks: tuple[int, ...], what: str) -> None:
    if len(shape) not in ranks:
        want = " or ".join(f"{r}-d" for r in ranks)
        raise ShapeError(f"expects a {want} input ({what}) but gets shape {shape_text(shape)}")


def shape_text(shape: Shape) -> str:
    """A shape as messages write it: (1, 28, 28)."""
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _n(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def _windowed(shape: Shape, a: dict, n: int, channels: int, pool: bool) -> Shape:
    """Output shape of an n-d convolution or pooling; `channels` is C_out."""
    k, p = _n(a["kernel_size"], n), _n(a.get("padding", 0), n)
    s = _n(a.get("stride") or a["kernel_size"], n) if pool else _n(a.get("stride", 1), n)
    d = _n(a.get("dilation", 1), n)
    out = []
    for size, k_, s_, p_, d_ in zip(shape[1:], k, s, p, d):
        if pool and p_ > k_ // 2:
            raise ShapeError(f"padding {p_} must be at most half the kernel size {k_}")
        span = d_ * (k_ - 1) + 1
        if size + 2 * p_ < span:
            raise ShapeError(f"kernel {k_} (dilation {d_}) does not fit input size {size} with padding {p_}")
        out.append((size + 2 * p_ - span) // s_ + 1)
    return (channels, *out)


_DIMS = {1: "channels, length", 2: "channels, height, width"}


def _conv(n: int):
    def shape(s: Shape, a: dict) -> Shape:
        _rank(s, (n + 1,), _DIMS[n])
        g = a.get("groups", 1)
        if s[0] % g or a["out_channels"] % g:
            raise ShapeError(f"groups={g} must divide input channels {s[0]} and out_channels {a['out_channels']}")
        return _windowed(s, a, n, a["out_channels"], pool=False)

    return shape


def _pool(n: int):
    def shape(s: Shape, a: dict) -> Shape:
        _rank(s, (n + 1,), _DIMS[n])
        return _windowed(s, a, n, s[0], pool=True)

    return shape


def _same(s: Shape, a: dict) -> Shape:
    return s


def _linear_shape(s: Shape, a: dict) -> Shape:
    _rank(s, tuple(range(1, 8)), "features last")
    return (*s[:-1], a["out_features"])


def _flatten_shape(s: Shape, a: dict) -> Shape:
    return (math.prod(s),)


def _softmax_shape(s: Shape, a: dict) -> Shape:
    if -a["dim"] > len(s):
        raise ShapeError(f"dim {a['dim']} is out of range for shape {shape_text(s)}")
    return s


def _batchnorm(ranks: tuple[int, ...], what: str):
    def shape(s: Shape, a: dict) -> Shape:
        _rank(s, ranks, what)
        return s

    return shape


def _norm_args() -> dict:
    return {"eps": _positive(1e-5), "momentum": _prob(0.1), "affine": _bool(True)}


def _conv_args(pair: bool) -> dict:
    size = _int_or_pair if pair else _int
    return {
        "out_channels": _int(),
        "kernel_size": size(),
        "stride": size(1, 1),
        "padding": size(0, 0),
        "dilation": size(1, 1),
        "groups": _int(1, 1),
        "bias": _bool(True),
    }


def _pool_args(pair: bool) -> dict:
    size = _int_or_pair if pair else _int
    return {"kernel_size": size(), "stride": size(), "padding": size(0, 0)}


def _kw(a: dict, *names: str) -> dict:
    return {k: a[k] for k in names if k in a}


_CONV_KW = ("stride", "padding", "dilation", "groups", "bias")

def _nn():
    """torch.nn, imported when a module is built (checking a spec never imports torch)."""
    from torch import nn

    return nn


# --- parameter rules: what torch's classes allocate, counted without them ----------
# (tests/test_analysis.py compares each with the torch module for random arguments)

def _linear_params(s: Shape, a: dict) -> int:
    return s[-1] * a["out_features"] + (a["out_features"] if a["bias"] else 0)


def _conv_params(n: int):
    def params(s: Shape, a: dict) -> int:
        k = math.prod(_n(a["kernel_size"], n))
        out = a["out_channels"]
        return out * (s[0] // a.get("groups", 1)) * k + (out if a.get("bias", True) else 0)

    return params


def _norm_params(s: Shape, a: dict) -> int:  # BatchNorm: weight and bias per channel (running stats are buffers)
    return 2 * s[0] if a["affine"] else 0


def _layernorm_params(s: Shape, a: dict) -> int:
    return 2 * s[-1] if a["affine"] else 0


# --- the table ------------------------------------------------------------

register(LayerType(
    "Linear",
    make=lambda s, a: _nn().Linear(s[-1], a["out_features"], bias=a["bias"]),
    shape=_linear_shape, params=_linear_params,
    args={"out_features": _int(), "bias": _bool(True)}, required=("out_features",),
    role="linear", inferred={"in_features": lambda s: s[-1]}, doc="fully-connected layer on the last dimension",
))
register(LayerType(
    "Conv1d",
    make=lambda s, a: _nn().Conv1d(s[0], a["out_channels"], a["kernel_size"], **_kw(a, *_CONV_KW)),
    shape=_conv(1), params=_conv_params(1), args=_conv_args(False), required=("out_channels", "kernel_size"),
    role="conv", dims=1, inferred={"in_channels": lambda s: s[0]}, doc="1-d convolution over (channels, length)",
))
register(LayerType(
    "Conv2d",
    make=lambda s, a: _nn().Conv2d(s[0], a["out_channels"], _n(a["kernel_size"], 2), **{
        k: (_n(v, 2) if k in ("stride", "padding", "dilation") else v) for k, v in _kw(a, *_CONV_KW).items()}),
    shape=_conv(2), params=_conv_params(2), args=_conv_args(True), required=("out_channels", "kernel_size"),
    role="conv", dims=2, inferred={"in_channels": lambda s: s[0]}, doc="2-d convolution over (channels, height, width)",
))
for _name, _cls, _dims in (
    ("MaxPool1d", lambda nn: nn.MaxPool1d, 1), ("MaxPool2d", lambda nn: nn.MaxPool2d, 2),
    ("AvgPool1d", lambda nn: nn.AvgPool1d, 1), ("AvgPool2d", lambda nn: nn.AvgPool2d, 2),
):
    register(LayerType(
        _name,
        make=(lambda cls, n: lambda s, a: cls(_nn())(_n(a["kernel_size"], n), stride=_n(a.get("stride") or a["kernel_size"], n),
                                              padding=_n(a["padding"], n)))(_cls, _dims),
        shape=_pool(_dims), args=_pool_args(_dims == 2), required=("kernel_size",), role="pool", dims=_dims,
        doc=f"{_dims}-d {'max' if 'Max' in _name else 'average'} pooling; stride defaults to the kernel size",
    ))
register(LayerType(
    "BatchNorm1d",
    make=lambda s, a: _nn().BatchNorm1d(s[0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"]),
    shape=_batchnorm((1, 2), "features, or channels and length"), params=_norm_params, args=_norm_args(),
    role="batchnorm", inferred={"num_features": lambda s: s[0]}, doc="batch normalization over features (or channels of a sequence)",
))
register(LayerType(
    "BatchNorm2d",
    make=lambda s, a: _nn().BatchNorm2d(s[0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"]),
    shape=_batchnorm((3,), "channels, height, width"), params=_norm_params, args=_norm_args(),
    role="batchnorm", inferred={"num_features": lambda s: s[0]}, doc="batch normalization over the channels of an image",
))
register(LayerType(
    "LayerNorm",
    make=lambda s, a: _nn().LayerNorm(s[-1], eps=a["eps"], elementwise_affine=a["affine"]),
    shape=_same, params=_layernorm_params, args={"eps": _positive(1e-5), "affine": _bool(True)},
    role="norm", doc="layer normalization over the last dimension",
))
register(LayerType(
    "Dropout", make=lambda s, a: _nn().Dropout(a["p"]), shape=_same,
    args={"p": _prob(0.5)}, role="dropout", doc="zeroes activations at random with probability p while training",
))
register(LayerType("ReLU", make=lambda s, a: _nn().ReLU(), shape=_same, role="activation", doc="max(0, x)"))
register(LayerType("GELU", make=lambda s, a: _nn().GELU(), shape=_same, role="activation", doc="Gaussian error linear unit"))
register(LayerType("Tanh", make=lambda s, a: _nn().Tanh(), shape=_same, role="activation", doc="hyperbolic tangent"))
register(LayerType("Sigmoid", make=lambda s, a: _nn().Sigmoid(), shape=_same, role="activation", doc="logistic function"))
register(LayerType(
    "Softmax", make=lambda s, a: _nn().Softmax(dim=a["dim"]), shape=_softmax_shape,
    args={"dim": {"type": "integer", "maximum": -1, "minimum": -8, "default": -1}},
    role="softmax", doc="probabilities over `dim` (negative: counted from the end of one sample's shape)",
))
register(LayerType(
    "Flatten", make=lambda s, a: _nn().Flatten(), shape=_flatten_shape,
    role="flatten", doc="flattens one sample to a vector",
))
register(LayerType("SiLU", make=lambda s, a: _nn().SiLU(), shape=_same, role="activation", doc="x * sigmoid(x) (swish)"))
register(LayerType(
    "Identity", make=lambda s, a: _nn().Identity(), shape=_same, role="identity",
    doc="passes its input through (a placeholder, e.g. an empty branch)",
))


def _global_pool_shape(s: Shape, a: dict) -> Shape:
    _rank(s, (3,), _DIMS[2])
    return (s[0], 1, 1)


register(LayerType(
    "AdaptiveAvgPool2d", make=lambda s, a: _nn().AdaptiveAvgPool2d(1), shape=_global_pool_shape,
    args={"output_size": {"enum": [1], "description": "netspec's AdaptiveAvgPool2d is global average pooling: "
                          "output_size 1 (PyTorch's AdaptiveAvgPool2d(1)), or leave it out; for another size, "
                          "pool with MaxPool2d or AvgPool2d and a kernel_size"}},
    role="pool", dims=2, doc="global average pooling: each channel's mean, a 1x1 map (before Flatten)",
))
