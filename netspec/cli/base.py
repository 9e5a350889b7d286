"""What every `netspec` command shares: the app, the consoles, the common options, the one way a
user's mistake becomes a message and an exit code (never a traceback), and the one way a result
is written in the format asked for. The commands live beside it, a module per group."""
from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand
from rich.console import Console
from rich.markup import escape

from netspec.errors import Interrupted, NetspecError, SpecError, os_error_text

class Command(TyperCommand):
    """Plain help without type labels beside arguments (SPEC, RUN_DIR say enough), aligned as before."""

    def collect_usage_pieces(self, ctx):  # "SPEC...", not Typer's "{SPEC}..." for a required argument
        return [re.sub(r"\{(\w+)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx, formatter):
        buffer = type(formatter)(width=formatter.width, max_width=formatter.width)
        super().format_options(ctx, buffer)
        formatter.write_paragraph()
        formatter.write(re.sub(r"(\S) (<[^>\s]+>)", lambda m: m.group(1) + " " * (len(m.group(2)) + 1), buffer.getvalue()))


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Describe, check and train small neural networks from one YAML file.")
PIPED_WIDTH = 4096  # piped or redirected, a table keeps its whole rows (a terminal wraps at its width)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)
err = Console(stderr=True, soft_wrap=True)

def _version(value: bool):
    if value:
        from netspec._version import __version__

        print(f"netspec {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[Optional[bool], typer.Option("--version", help="print the version and exit",
                                                         callback=_version, is_eager=True)] = None):
    """Describe, check and train small neural networks from one YAML file."""


def _yaml_files(incomplete: str) -> list[str]:
    """Completion for SPEC: YAML files and folders that start with what is typed."""
    folder, _, stem = incomplete.rpartition("/")
    base = Path(folder or ".")
    try:
        entries = sorted(p for p in base.iterdir() if p.name.startswith(stem) and not p.name.startswith("."))
    except OSError:
        return []
    shown = [(f"{folder}/" if folder else "") + p.name + ("/" if p.is_dir() else "") for p in entries
             if p.is_dir() or p.suffix in (".yaml", ".yml")]
    return shown


def _rule_sets(incomplete: str) -> list[str]:
    from netspec.spec.rules import shipped_rule_sets

    return [n for n in shipped_rule_sets() if n.startswith(incomplete)] + _yaml_files(incomplete)


def _choices(*values: str):
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


SpecArg = Annotated[Path, typer.Argument(help="spec file (YAML)", show_default=False, metavar="SPEC",
                                         autocompletion=_yaml_files)]
RulesOpt = Annotated[Optional[list[str]], typer.Option("--rules", metavar="NAME_OR_FILE", autocompletion=_rule_sets,
                                                       help="impose a rule set (name or file); repeatable")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override a setting: key=value (dotted key); repeatable")]
FormatOpt = Annotated[str, typer.Option("--format", metavar="text|json", help="text or json",
                                        autocompletion=_choices("text", "json"))]
CHECK_FORMATS = ("text", "json", "github", "sarif")
CheckFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="|".join(CHECK_FORMATS), help="text; json (a list of file results); github (workflow "
    "annotations); sarif (SARIF 2.1.0)", autocompletion=_choices(*CHECK_FORMATS))]
DraftOpt = Annotated[bool, typer.Option("--draft", help="let --set override the rules' fixed settings (epochs, batch "
                                         "size, ...) to try things quickly; every other rule still applies, and the "
                                         "run is marked 'draft: not gradable'")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", metavar="DIR", envvar="NETSPEC_DATA_DIR",
                                                    help="folder of the named datasets in torchvision's layout: MNIST/raw, cifar-10-batches-py, ... (default: ~/.cache/netspec, downloaded)")]


@contextmanager
def user_errors(say_interrupted: bool = True):
    """Library errors -> a message and exit 1; Ctrl-C -> exit 130 (said unless `say_interrupted` is
    False: a torchrun process other than rank 0, whose run rank 0 speaks for)."""
    try:
        yield
    except typer.Exit:  # a command's own exit code, said already
        raise
    except SpecError as e:
        for p in e.problems:
            err.print(problem_text(p), highlight=False)
        err.print(f"[red]{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}[/]")
        raise typer.Exit(1) from None
    except Interrupted as e:
        if say_interrupted:  # under torchrun, rank 0 alone says where the run stands
            err.print(f"[yellow]{escape(str(e))}[/]")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # Ctrl-C before training, or pressed twice
        if say_interrupted:
            err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as e:
        if isinstance(e, NetspecError):
            err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None
        if isinstance(e, OSError):  # the machine's, not the program's: a full disk, a folder we may not write
            err.print(f"[red]error:[/] {escape(os_error_text(e))}", highlight=False)
            raise typer.Exit(1) from None
        raise


def print_warnings(checked, indent: str = "") -> None:
    for w in checked.warnings:
        out.print(f"{indent}[yellow]warning:[/] " + problem_text(w), highlight=False)


def problem_text(p) -> str:
    text = f"[bold]{escape(p.where)}[/]  [cyan]{escape(p.path or '(top)')}[/]: {escape(p.message)}"
    return text + (f"\n    [dim]hint: {escape(p.hint)}[/]" if p.hint else "")


def check_spec(spec: Path, rules, overrides, draft: bool = False):
    import netspec

    return netspec.load(Path(spec), rules=list(rules or ()), overrides=list(overrides or ()), draft=draft).checked


def pick_format(value: str, choices: tuple[str, ...] = ("text", "json")) -> str:
    if value not in choices:
        raise typer.BadParameter("use " + ", ".join(choices[:-1]) + " or " + choices[-1], param_hint="--format")
    return value


def emit(fmt: str, result, text, **writers) -> None:
    """A command's result in the format asked for: json writes the result as it is; text (or another
    format named in `writers`) calls that command's own writer with it."""
    if fmt == "json":
        print(json.dumps(as_json(result), indent=2, default=str))
    else:
        (writers.get(fmt) or text)(result)


def as_json(result):
    """A command's result as JSON values: a typed result (Comparison, FilePrediction, ...) by its
    `to_dict`, a list of them item by item."""
    if isinstance(result, list):
        return [as_json(r) for r in result]
    to_dict = getattr(result, "to_dict", None)
    return to_dict() if callable(to_dict) else result


def note(text: str, label: str = "note") -> None:
    err.print(f"[yellow]{label}:[/] {escape(text)}", highlight=False)


def print_findings(fmt: str, results: list[dict]) -> None:
    from netspec._version import __version__
    from netspec.report.findings import FORMATS

    sys.stdout.write(FORMATS[fmt](results, __version__))


