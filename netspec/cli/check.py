"""Checking specs without training: validate, summary, schema (no torch is imported)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from netspec.cli.base import (CHECK_FORMATS, CheckFormatOpt, Command, DraftOpt, FormatOpt, RulesOpt, SetOpt, SpecArg,
                              _yaml_files, app, check_spec, out, pick_format, print_findings, print_warnings,
                              problem_text, user_errors)
from netspec.errors import SpecError


@app.command(cls=Command)
def validate(
    specs: Annotated[list[Path], typer.Argument(help="spec files", show_default=False, metavar="SPEC",
                                                autocompletion=_yaml_files)],
    rules: RulesOpt = None,
    set_: SetOpt = None,
    format: CheckFormatOpt = "text",
    draft: DraftOpt = False,
    rubric: Annotated[Optional[Path], typer.Option("--rubric", metavar="RUBRIC", help="show the points a grader's "
                                                   "rubric gives each spec before training (its rules replace the spec's)")] = None,
):
    """Check specs against the schema and their rules; exit 0 if all are valid (warnings do not
    fail), 1 if any is not. The findings are the result: they go to stdout in every format."""
    from netspec.report.findings import result

    fmt = pick_format(format, CHECK_FORMATS)
    if rubric is not None:
        if fmt != "text" or rules or set_ or draft:
            raise typer.BadParameter("--rubric shows the grader's verdicts as text; it takes no --rules, --set, "
                                     "--draft or --format", param_hint="--rubric")
        from netspec.cli.grade import print_rubric_verdicts

        raise typer.Exit(0 if print_rubric_verdicts(specs, rubric) else 1)
    results = []
    for spec in specs:
        try:
            checked = check_spec(spec, rules, set_, draft)
            results.append(result(str(spec), checked))
            if fmt == "text":
                out.print(f"[green]✓[/] {escape(str(spec))}  ({checked.analysis.params:,} params)", highlight=False)
                print_warnings(checked, indent="  ")
        except SpecError as e:
            results.append(result(str(spec), error=e))
            if fmt == "text":
                out.print(f"[red]✗[/] {escape(str(spec))}", highlight=False)
                for p in e.problems:
                    out.print("  " + problem_text(p), highlight=False)
    if fmt != "text":
        print_findings(fmt, results)
    raise typer.Exit(0 if all(r["valid"] for r in results) else 1)


@app.command(cls=Command)
def summary(spec: SpecArg, rules: RulesOpt = None, set_: SetOpt = None, format: FormatOpt = "text",
            draft: DraftOpt = False):
    """Layers, output shapes and parameters (Keras style), and each rule with pass/fail.
    --format json: validate's list of results, its one result with the table's fields added."""
    from netspec.report.findings import result
    from netspec.report.tables import print_summary, summary_json

    fmt = pick_format(format)
    try:
        checked, failed = check_spec(spec, rules, set_, draft), None
    except SpecError as e:
        if e.checked is None:  # the model does not build: there is no table to show
            with user_errors():
                raise
        checked, failed = e.checked, e
    if fmt == "json":
        print_findings("json", [result(str(spec), checked, failed) | summary_json(checked)])
    else:
        print_summary(out, checked)
        print_warnings(checked)
    if failed is not None:
        if fmt == "text":
            with user_errors():
                raise failed
        raise typer.Exit(1)


@app.command(cls=Command)
def schema():
    """Print the JSON Schema of specs (the file editors use)."""
    from netspec.spec.schema import schema_text

    sys.stdout.write(schema_text())
