"""Rich tables for the terminal (and their text for run folders): the
Keras-style model summary and its JSON twin."""
from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from netspec.builder.check import Checked


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
