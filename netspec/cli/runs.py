"""Working with run folders: attention, export, predict, compare."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from netspec.cli.base import Command, DataDirOpt, FormatOpt, _choices, app, emit, note, out, pick_format, user_errors
from netspec.report.markdown import compare_markdown
from netspec.report.tables import compare_tables, predictions_table

if TYPE_CHECKING:
    from netspec.report.compare import Comparison


@app.command(cls=Command)
def attention(
    run_dir: Annotated[Path, typer.Argument(help="run folder of a model with attention (a ViT)", show_default=False, metavar="RUN_DIR")],
    index: Annotated[int, typer.Option("--index", metavar="N", help="validation example")] = 0,
    layer: Annotated[int, typer.Option("--layer", metavar="L", help="encoder layer (negative: from the end)")] = -1,
    data_dir: DataDirOpt = None,
):
    """Draw the post-softmax attention of every head of one layer as heatmaps (PNG)."""
    import netspec

    with user_errors():
        path = netspec.open_run(run_dir).attention(index=index, layer=layer, data_dir=data_dir)
    out.print(f"wrote {escape(str(path))}", highlight=False)


@app.command("export", cls=Command)
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run folder", show_default=False, metavar="RUN_DIR")],
    format: Annotated[str, typer.Option("--format", metavar="onnx", help="file format")] = "onnx",
    out_file: Annotated[Optional[Path], typer.Option("--out", metavar="FILE", help="where (default RUN_DIR/model.onnx)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace FILE (and FILE.json) if they exist")] = False,
):
    """Write the trained model as an ONNX file (with its preprocessing in FILE.json)."""
    import netspec

    with user_errors():
        path = netspec.open_run(run_dir).export(out_file, format=format, force=force)
    out.print(f"wrote {escape(str(path))} and {escape(str(path))}.json", highlight=False)


@app.command("predict", cls=Command)
def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run folder", show_default=False, metavar="RUN_DIR")],
    images: Annotated[list[Path], typer.Argument(help="image files or folders of them", show_default=False, metavar="IMAGE")],
    format: FormatOpt = "text",
    invert: Annotated[bool, typer.Option("--invert", help="read 1 - pixel: dark ink on light paper, for a model "
                                                          "trained on light-on-dark images such as MNIST")] = False,
):
    """Classify image files with a run's model: class and probability per image."""
    import netspec

    fmt = pick_format(format)
    with user_errors():
        rows = netspec.open_run(run_dir).predict_files(images, invert=invert)
    suspects = [r.file for r in rows if r.looks_inverted]
    if suspects:
        note(f"{len(suspects)} image(s) look inverted against the training images (light background where they are "
             f"dark, or the reverse), so their predictions are likely wrong: {', '.join(suspects[:5])}"
             f"{' ...' if len(suspects) > 5 else ''}; {'remove --invert' if invert else 'try --invert'}", "warning")
    emit(fmt, rows, lambda rows: out.print(predictions_table(rows, f"predictions of {run_dir}")))
    unread = [r.file for r in rows if r.error]
    if unread:  # every readable file is predicted first; the unreadable ones fail the command at the end
        note(f"{len(unread)} of {len(rows)} file(s) could not be read (see their rows): {', '.join(unread[:5])}"
             f"{' ...' if len(unread) > 5 else ''}", "error")
        raise typer.Exit(1)


@app.command("compare", cls=Command)
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="run folders (the first is the baseline)", show_default=False, metavar="RUN_DIR")],
    figure: Annotated[Optional[Path], typer.Option("--figure", metavar="PNG", help="also write the overlaid loss curves here (PNG)")] = None,
    format: Annotated[str, typer.Option("--format", metavar="text|json|markdown", help="text, json or markdown (tables "
                                        "for a write-up)", autocompletion=_choices("text", "json", "markdown"))] = "text",
):
    """Runs side by side: architecture changes, settings that differ, accuracies, times, loss curves."""
    import netspec

    fmt = pick_format(format, ("text", "json", "markdown"))
    with user_errors():
        result = netspec.compare(*runs, figure=figure)
    emit(fmt, result, lambda result: _print_comparison(result, figure),
         markdown=lambda result: sys.stdout.write(compare_markdown(result)
                                                  + (f"\n![loss curves]({figure})\n" if figure is not None else "")))


def _print_comparison(result: Comparison, figure: Path | None) -> None:
    for shown in compare_tables(result):
        out.print(shown, highlight=False)
    for r in result.runs:
        for text in r.notes:
            note(f"{r.label}: {text}")
    if len({r.train_size for r in result.runs}) > 1:
        note("these runs trained on different numbers of images (see train images)")
    if figure is not None:
        out.print(f"loss curves: {escape(str(figure))}", highlight=False)
