"""Rich tables for the terminal (and their text for run folders): the
Keras-style model summary and its JSON twin."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from netspec.check.checker import Checked

if TYPE_CHECKING:  # the records' types only: drawing a table imports no runner (nor torch)
    from netspec.report.compare import Comparison
    from netspec.runner.export import FilePrediction


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _mark(ok: bool | None) -> str:
    return {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]after run[/]"}[ok]


def summary_table(checked: Checked) -> Table:
    a, spec = checked.analysis, checked.spec
    d = spec.data
    source = f"{d.dataset}, {d.classes} classes, " if d.dataset != "none" and d.classes else ""
    table = Table(title=escape(f"{spec.name}  ({source}input {_shape(a.input_shape)})"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("name")
    table.add_column("layer")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    for r in a.rows:  # a block's row holds its layers' subtotal; its layers are indented under it
        indent = "  " * r.depth
        branch = f"[{r.path[-2]}] " if len(r.path) > 3 and r.path[-3] == "branches" else ""
        params = f"{r.params + r.frozen:,}"
        table.add_row(str(r.index) if r.kind != "shortcut" else "", escape(indent + branch + r.name),
                      escape(indent + r.layer) if r.block else escape(r.layer), _shape(r.shape),
                      f"[dim]({params})[/]" if r.block else params)
    return table


def totals_lines(checked: Checked) -> list[str]:
    a = checked.analysis
    lines = [f"Total params: {a.params + a.frozen:,}",
             f"Trainable params: {a.params:,}",
             f"Non-trainable params: {a.frozen:,}"]
    if a.hidden_units is not None:
        lines.append(f"Hidden units: {a.hidden_units:,} (out_features of every Linear but the last)")
    if a.softmax_head:
        lines.append("Final Softmax: folded into the loss (cross-entropy is computed on the logits before it)")
    return lines


def rules_table(checked: Checked) -> Table | None:
    if not checked.results:
        return None
    table = Table(title="rules", title_justify="left")
    for col in ("rule set", "rule", "value", "limit", ""):
        table.add_column(col)
    for r in checked.results:
        table.add_row(escape(r.rules), escape(r.rule), escape(r.value), escape(r.limit),
                      "[yellow]✗ waived (draft)[/]" if r.waived else _mark(r.ok))
    return table


def print_summary(console: Console, checked: Checked) -> None:
    console.print(summary_table(checked))
    for line in totals_lines(checked):
        console.print(line)
    rules = rules_table(checked)
    if rules is not None:
        console.print(rules)


def summary_text(checked: Checked, width: int = 110) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None, force_jupyter=False)
    print_summary(console, checked)
    return console.export_text()


def rows_tree(rows) -> list[dict]:
    """Summary rows nested as the spec nests them: a block's layers (and shortcut) under it."""
    top: list[dict] = []
    stack: list[list[dict]] = [top]
    for r in rows:
        del stack[r.depth + 1:]
        node = {"index": r.index, "name": r.name, "layer": r.layer, "output_shape": list(r.shape),
                "params": r.params + r.frozen, "trainable": r.params}
        stack[r.depth].append(node)
        if r.block:
            node["layers"] = []
            stack.append(node["layers"])
    return top


def summary_json(checked: Checked) -> dict:
    a = checked.analysis
    return {
        "name": checked.spec.name,
        "input_shape": list(a.input_shape),
        "layers": rows_tree(a.rows),
        "output_shape": list(a.output_shape) if a.output_shape else None,
        "total_params": a.params + a.frozen,
        "trainable_params": a.params,
        "non_trainable_params": a.frozen,
        "hidden_units": a.hidden_units,
        "softmax_folded_into_loss": a.softmax_head,
        "draft": checked.draft,
        "rules": [{"rules": r.rules, "rule": r.rule, "value": r.value, "limit": r.limit, "ok": r.ok, "waived": r.waived}
                  for r in checked.results],
    }


def epoch_line(stats) -> str:
    """One finished epoch, as the terminal and the API's printed progress show it."""
    return (f"epoch {stats.epoch:>3}  train loss {stats.train_loss:.4f}  acc {stats.train_acc:.4f}  "
            f"val loss {stats.val_loss:.4f}  acc {stats.val_acc:.4f}  {stats.seconds:.1f}s")


def trial_line(frozen) -> str | None:
    """One finished sweep trial (None for one that did not count: a grid duplicate, or one over
    the budget), as the sweep command prints it, from its own process or a worker's."""
    from netspec.sweeps.study import counted

    if not counted(frozen):
        return None
    if frozen.state.name == "PRUNED":
        step = frozen.last_step
        text = f"pruned after epoch {step} (val acc {frozen.intermediate_values[step]:.4f})" if step else "pruned"
    elif frozen.value is not None:
        text = f"complete: val acc {frozen.value:.4f}"
    else:
        text = frozen.state.name.lower() + (f": {frozen.user_attrs['error']}" if "error" in frozen.user_attrs else "")
    return f"trial {frozen.number} {text}"


def facts_tables(facts: dict) -> list[Table]:
    """`netspec data`: the dataset's facts, and its images per class."""
    table = Table(title=escape(facts["title"]), title_justify="left")
    table.add_column("fact")
    table.add_column("value")
    for k, v in facts["facts"]:
        table.add_row(k, escape(v))
    counts = Table(title="images per class", title_justify="left")
    counts.add_column("class")
    counts.add_column("train", justify="right")
    counts.add_column("test", justify="right")
    for c, tr, te in facts["class_counts"]:
        counts.add_row(escape(c), f"{tr:,}", f"{te:,}")
    return [table, counts]


def predictions_table(rows: list[FilePrediction], title: str) -> Table:
    """`netspec predict`: class and probability per image."""
    table = Table(title=escape(title), title_justify="left")
    for col in ("image", "class", "probability"):
        table.add_column(col, justify="right" if col == "probability" else "left", overflow="fold")
    for r in rows:
        if r.error:  # an unreadable file: its reason in its row
            table.add_row(escape(r.file), f"[red]{escape(r.error)}[/]", "-")
        else:
            table.add_row(escape(r.file), escape(r.class_name), f"{r.probability:.4f}")
    return table


def _cell(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def compare_tables(result: Comparison) -> list:
    """`netspec compare`: the runs' numbers, each run's architecture against the baseline, and the
    settings that differ (tables, and lines of text)."""
    runs = Table(title="runs", title_justify="left")
    for col in ("run", "status", "params", "train images", "best val acc", "test acc", "model epoch", "train s"):
        runs.add_column(col, justify="left" if col in ("run", "status") else "right")
    for r in result.runs:
        images = _cell(r.train_size) + (" (--limit)" if r.limit is not None else "")
        runs.add_row(escape(r.label), escape(r.status_text), _cell(r.params), images, _cell(r.best_val_accuracy),
                     _cell(r.test_accuracy), _cell(r.model_epoch), _cell(r.train_seconds, 1))
    shown: list = [runs]
    for label, changes in result.architecture.items():
        shown.append(f"[bold]architecture[/] {escape(result.baseline)} vs {escape(label)}: "  # the command's order
                     + ("same layers" if not changes else ""))
        shown += [f"  {escape(c)}" for c in changes]
    if not result.settings:
        return shown + ["settings: all the same"]
    settings = Table(title="settings that differ", title_justify="left")
    settings.add_column("setting")
    for r in result.runs:
        settings.add_column(escape(r.label))
    for k, values in result.settings.items():
        settings.add_row(escape(k), *[escape(str(v)) for v in values])
    return shown + [settings]
