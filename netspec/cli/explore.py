"""Looking at data and layers before training: data (a dataset's facts), forward (layers applied by hand)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from netspec.cli.base import Command, DataDirOpt, SpecArg, app, out, user_errors
from netspec.report.tables import facts_tables


@app.command(cls=Command)
def data(
    dataset: Annotated[str, typer.Argument(help="a dataset name (mnist, cifar10, ...), a folder of class sub-folders, "
                                                "an .npz file, or a spec (its data section)", metavar="DATASET")] = "mnist",
    data_dir: DataDirOpt = None,
    validation: Annotated[Optional[float], typer.Option("--validation", metavar="N", help="validation images held out of training (a count, or a share below 1)")] = None,
    image_shape: Annotated[Optional[str], typer.Option("--image-shape", metavar="C,H,W", help="a folder's images: channels (1 or 3), height, width (default: the first image's)")] = None,
    samples: Annotated[Optional[Path], typer.Option("--samples", metavar="PNG", help="also write a PNG grid of sample images here")] = None,
):
    """Dataset facts: image size, pixel meaning and range, split sizes, class counts."""
    import netspec

    with user_errors():
        shape = _shape(image_shape) if image_shape else None
        count = None if validation is None else (int(validation) if validation >= 1 or validation == 0 else validation)
        facts = netspec.data_facts(dataset, data_dir=data_dir, validation=count, image_shape=shape, samples=samples)
    for table in facts_tables(facts):
        out.print(table)
    if samples is not None:
        out.print(f"sample grid: {escape(str(samples))}", highlight=False)


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise typer.BadParameter(f"'{text}': give channels,height,width such as 3,32,32", param_hint="--image-shape") from None
    if c not in (1, 3) or h < 1 or w < 1:
        raise typer.BadParameter(f"'{text}': 1 or 3 channels and a positive size", param_hint="--image-shape")
    return c, h, w


@app.command(cls=Command)
def forward(
    spec: SpecArg,
    input_file: Annotated[Path, typer.Option("--input", metavar="FILE", help="YAML list of inputs, each of the spec's input shape")],
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="seed for the layers' initial weights")] = 0,
):
    """Apply a spec's (untrained) layers to given inputs and print the outputs (pooling by hand, say)."""
    import netspec

    with user_errors():
        outputs = netspec.load(spec).forward(input_file, seed)
    for i, o in enumerate(outputs):
        out.print(f"[bold]output {i}[/] shape {tuple(o.shape)}")
        out.print(_matrix(o))


def _matrix(t) -> str:
    from fractions import Fraction

    def cell(v: float) -> str:
        f = Fraction(v).limit_denominator(100)
        return str(f) if abs(float(f) - v) < 1e-6 else f"{v:.4f}"

    if t.dim() == 1:
        return "  ".join(cell(float(v)) for v in t)
    if t.dim() == 2:
        return "\n".join("  [" + "  ".join(f"{cell(float(v)):>5}" for v in row) + " ]" for row in t)
    return "\n".join(_matrix(sub) for sub in t)
