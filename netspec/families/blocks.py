"""The built-in blocks: layer lists nested in a layer list (residual, branching, repeated).

A block is one table entry, as a layer is: its argument schema, the key that holds its
layer lists (`layers` for one body, `branches` for several), its shape rule (which walks its
bodies with the same walker as the top-level list, so every rule, budget and error applies
inside) and its builder (torch modules in netspec/families/blocks_torch.py, imported when built).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from netspec.spec.family import BLOCKS, BlockType, BuildProblem, Row, Shape, register_block
from netspec.spec.layers import shape_text

MAX_DEPTH = 4  # blocks in blocks in blocks in blocks; deeper is surely a mistake (and a slow schema)
MAX_TIMES = 100


# --- Residual ---------------------------------------------------------------------------

def shortcut_plan(mode: str, shape: Shape, out: Shape) -> tuple[str, int] | str:
    """How a Residual's input reaches its output: ("identity", 1), ("conv", stride) for a 1x1
    convolution (+ BatchNorm) projection, ("linear", 1) for features; or why it cannot."""
    if mode in ("auto", "identity") and out == shape:
        return ("identity", 1)
    if mode == "identity":
        return (f"an identity shortcut needs the layers to keep the shape, but they turn {shape_text(shape)} into "
                f"{shape_text(out)}")
    if len(shape) == 1 and len(out) == 1:
        return ("linear", 1)
    if len(shape) == 3 and len(out) == 3:
        (_, h, w), (_, h2, w2) = shape, out
        for stride in range(1, max(h, w) + 1):  # a 1x1 convolution with stride s gives (n - 1) // s + 1
            if (h - 1) // stride + 1 == h2 and (w - 1) // stride + 1 == w2:
                return ("conv", stride)
        return (f"no 1x1 projection turns {shape_text(shape)} into {shape_text(out)}: the layers' height and width "
                f"are not the input's divided by one stride")
    return f"the layers turn {shape_text(shape)} into {shape_text(out)}, and no projection maps one rank onto the other"


def _residual_analyze(block, shape, path, walker, depth, main):
    here = path + ("Residual",)
    start = len(walker.rows)
    out = walker.items(block.bodies[0], shape, here + ("layers",), depth + 1, main)
    if out is None or shape is None:
        return None
    plan = shortcut_plan(block.kwargs["shortcut"], shape, out)
    if isinstance(plan, str):
        stated = block.kwargs["shortcut"] != "auto"  # then at its own line; else at the block's
        shrinks = _shrinking_layer(block, shape, walker.rows[start:], depth + 1)
        if shrinks:
            where, text, hint = shrinks
            walker.problem(BuildProblem(here + ("shortcut",) if stated else path,
                                        f"Residual: {plan.split(': ')[0]}: {text}",
                                        hint + ("" if block.kwargs["shortcut"] == "auto" else
                                                "; shortcut: auto then projects the channels where they differ"),
                                        refs=(where,)))
        else:
            walker.problem(BuildProblem(here + ("shortcut",) if stated else path, f"Residual: {plan}",
                                        "make the layers keep the input's height and width (padding), or halve "
                                        "them with a stride" + ("" if block.kwargs["shortcut"] == "auto" else
                                                                "; use shortcut: auto (a projection where shapes differ)")))
        walker.lose(here + ("shortcut",) if stated else path)
        walker.assume(path, out)  # the layers' output goes on: later findings say they assume it
        return out
    kind, stride = plan
    if kind == "conv":
        params = shape[0] * out[0] + 2 * out[0]
        walker.row(Row(0, "shortcut", f"Conv2d(1x1, stride={stride}) + BatchNorm2d", out, params,
                       depth=depth + 1, path=here + ("shortcut",), main=False, kind="shortcut"), modules=3)
    elif kind == "linear":
        walker.row(Row(0, "shortcut", "Linear(bias=False)", out, shape[0] * out[0], depth=depth + 1,
                       path=here + ("shortcut",), main=False, kind="shortcut"), modules=1)
    walker.activation(math.prod(out))  # the sum
    return out


def _shrinking_layer(block, shape: Shape, rows, depth: int):
    """The first layer of a Residual's own list that shrinks the map without a stride (a
    convolution or pooling short of padding): (its path, what it does, the padding that keeps the size)."""
    from netspec.spec.layers import LAYERS

    before = shape
    for row in rows:
        if row.depth != depth or row.kind == "shortcut":
            continue
        item = block.bodies[0][row.index]
        kw = item.kwargs if item.name in LAYERS else {}
        if len(before) == 3 and len(row.shape) == 3 and row.shape[1:] != before[1:] and "kernel_size" in kw:
            n = 2
            k, d = _pair(kw["kernel_size"], n), _pair(kw.get("dilation", 1), n)
            stride = _pair(kw.get("stride") or (1 if LAYERS[item.name].role == "conv" else kw["kernel_size"]), n)
            if stride == (1,) * n and all(x % 2 for x in k):
                need = tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
                pad = need[0] if len(set(need)) == 1 else list(need)
                have = kw.get("padding", 0)
                return (row.path, f"the {item.name} at {{0}} (kernel_size {kw['kernel_size']}, padding {have}) "
                                  f"shrinks {before[1]}x{before[2]} to {row.shape[1]}x{row.shape[2]}",
                        f"give that {item.name} padding: {pad} so it keeps {before[1]}x{before[2]}")
        before = row.shape
    return None


def _pair(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def _residual_make(block, shape, build_list):
    from netspec.families.blocks_torch import Residual, projection

    layers, out = build_list(block.bodies[0], shape)
    kind, stride = shortcut_plan(block.kwargs["shortcut"], shape, out)
    return Residual(layers, projection(kind, shape[0], out[0], stride)), out


register_block(BlockType(
    "Residual", "layers", _residual_analyze, _residual_make,
    args={"shortcut": {"enum": ["auto", "identity", "projection"], "default": "auto",
                       "description": "how the input reaches the sum: identity (shapes must match), projection "
                                      "(1x1 convolution + BatchNorm, or Linear), auto (identity where it can)"}},
    doc="output = layers(x) + shortcut(x)",
))


# --- Concat -----------------------------------------------------------------------------

def _concat_analyze(block, shape, path, walker, depth, main):
    here = path + ("Concat",)
    outs = []
    for b, branch in enumerate(block.bodies):  # each branch on its own, whatever the others hold
        outs.append(walker.items(branch, shape, here + ("branches", b), depth + 1, main and b == 0,
                                 label=f"branch {b}"))
    known = [(b, o) for b, o in enumerate(outs) if o is not None]  # those that fail are reported inside
    ranks = {len(o) for _, o in known}
    if len(ranks) > 1 or any(o[1:] != known[0][1][1:] for _, o in known):
        listed = ", ".join(f"branch {b} ({{{k}}}) ends in {shape_text(o)}" for k, (b, o) in enumerate(known))
        walker.problem(BuildProblem(
            path, f"Concat joins its branches on channels, so the rest of their shapes must agree: {listed}",
            "make every branch end in the same height and width (pooling, stride or padding)",
            refs=tuple(here + ("branches", b) for b, _ in known)))
        walker.lose(path)
        if len(ranks) > 1 or len(known) < len(outs):
            return None
        most = Counter(o[1:] for o in outs).most_common(1)[0][0]  # the odd branch out is taken as the mistake
        out = (sum(o[0] for o in outs), *most)
        walker.assume(path, out)
        return out
    if len(known) < len(outs):
        return None
    out = (sum(o[0] for o in outs), *outs[0][1:])
    walker.activation(math.prod(out))
    return out


def _concat_make(block, shape, build_list):
    from netspec.families.blocks_torch import Concat

    built = [build_list(branch, shape) for branch in block.bodies]
    out = (sum(o[0] for _, o in built), *built[0][1][1:])
    return Concat([module for module, _ in built]), out


register_block(BlockType(
    "Concat", "branches", _concat_analyze, _concat_make,
    doc="branches side by side on the same input, joined on channels (or features)",
))


# --- Repeat -----------------------------------------------------------------------------

def _repeat_analyze(block, shape, path, walker, depth, main):
    here = path + ("Repeat",)
    times = block.kwargs["times"]
    for k in range(times):
        if shape is None:  # the shape is unknown: the copies still count for the rules that need none
            walker.items(block.bodies[0], None, here + ("layers",), depth + 2, main)
            continue
        first = len(walker.rows)
        walker.row(Row(k, str(k), f"copy {k + 1} of {times}", shape, 0, depth=depth + 1, block=True,
                       path=here + ("layers",), main=main, kind="copy"), modules=1)
        shape = walker.items(block.bodies[0], shape, here + ("layers",), depth + 2, main,
                             label=f"copy {k + 1} of {times}" if k else "")
        if shape is not None:
            walker.close(first, shape)
    return shape


def _repeat_make(block, shape, build_list):
    from torch import nn

    copies = []
    for _ in range(block.kwargs["times"]):
        copy, shape = build_list(block.bodies[0], shape)
        copies.append(copy)
    return nn.Sequential(*copies), shape


register_block(BlockType(
    "Repeat", "layers", _repeat_analyze, _repeat_make,
    args={"times": {"type": "integer", "minimum": 1, "maximum": MAX_TIMES,
                    "description": "copies of the layers, one after another, each with its own weights"}},
    required=("times",),
    doc="the same layers several times in a row, each copy with its own weights",
))


def block_params_text(block: Any) -> str:
    shown = {k: v for k, v in block.args if BLOCKS[block.name].args.get(k, {}).get("default") != v}
    return block.name + ("(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")
