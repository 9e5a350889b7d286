"""The `netspec` command. Thin Typer commands over plain library functions;
this is the only place that prints or exits. A user's mistake is a message
and exit code 1, never a traceback."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from netspec.errors import Interrupted, NetspecError, SpecError, during_interrupt, os_error_text

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
def user_errors():
    """Library errors -> a message and exit 1; Ctrl-C -> exit 130."""
    try:
        yield
    except SpecError as e:
        for p in e.problems:
            err.print(_problem_text(p), highlight=False)
        err.print(f"[red]{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''}[/]")
        raise typer.Exit(1) from None
    except Interrupted as e:
        err.print(f"[yellow]{escape(str(e))}[/]")
        raise typer.Exit(130) from None
    except NetspecError as e:
        if during_interrupt(e):  # raised while Ctrl-C was being handled: it is the interruption
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    except OSError as e:  # the machine's, not the program's: a full disk, a folder we may not write
        err.print(f"[red]error:[/] {escape(os_error_text(e))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _print_warnings(checked, indent: str = "") -> None:
    for w in checked.warnings:
        out.print(f"{indent}[yellow]warning:[/] " + _problem_text(w), highlight=False)


def _problem_text(p) -> str:
    text = f"[bold]{escape(p.where)}[/]  [cyan]{escape(p.path or '(top)')}[/]: {escape(p.message)}"
    return text + (f"\n    [dim]hint: {escape(p.hint)}[/]" if p.hint else "")


def _check(spec: Path, rules, overrides, draft: bool = False):
    import netspec

    return netspec.load(Path(spec), rules=list(rules or ()), overrides=list(overrides or ()), draft=draft).checked


def _format(value: str, choices: tuple[str, ...] = ("text", "json")) -> str:
    if value not in choices:
        raise typer.BadParameter("use " + ", ".join(choices[:-1]) + " or " + choices[-1], param_hint="--format")
    return value


def _print_findings(fmt: str, results: list[dict]) -> None:
    from netspec._version import __version__
    from netspec.report.findings import FORMATS

    sys.stdout.write(FORMATS[fmt](results, __version__))


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

    fmt = _format(format, CHECK_FORMATS)
    if rubric is not None:
        if fmt != "text" or rules or set_ or draft:
            raise typer.BadParameter("--rubric shows the grader's verdicts as text; it takes no --rules, --set, "
                                     "--draft or --format", param_hint="--rubric")
        from netspec.cli_grade import print_rubric_verdicts

        raise typer.Exit(0 if print_rubric_verdicts(specs, rubric) else 1)
    results = []
    for spec in specs:
        try:
            checked = _check(spec, rules, set_, draft)
            results.append(result(str(spec), checked))
            if fmt == "text":
                out.print(f"[green]✓[/] {escape(str(spec))}  ({checked.analysis.params:,} params)", highlight=False)
                _print_warnings(checked, indent="  ")
        except SpecError as e:
            results.append(result(str(spec), error=e))
            if fmt == "text":
                out.print(f"[red]✗[/] {escape(str(spec))}", highlight=False)
                for p in e.problems:
                    out.print("  " + _problem_text(p), highlight=False)
    if fmt != "text":
        _print_findings(fmt, results)
    raise typer.Exit(0 if all(r["valid"] for r in results) else 1)


@app.command(cls=Command)
def summary(spec: SpecArg, rules: RulesOpt = None, set_: SetOpt = None, format: FormatOpt = "text",
            draft: DraftOpt = False):
    """Layers, output shapes and parameters (Keras style), and each rule with pass/fail.
    --format json: validate's list of results, its one result with the table's fields added."""
    from netspec.report.findings import result
    from netspec.report.tables import print_summary, summary_json

    fmt = _format(format)
    try:
        checked, failed = _check(spec, rules, set_, draft), None
    except SpecError as e:
        if e.checked is None:  # the model does not build: there is no table to show
            with user_errors():
                raise
        checked, failed = e.checked, e
    if fmt == "json":
        _print_findings("json", [result(str(spec), checked, failed) | summary_json(checked)])
    else:
        print_summary(out, checked)
        _print_warnings(checked)
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


class ProgressObserver:
    """Rich progress over epochs and batches, and a line per finished epoch."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.epochs = self.batches = None

    def start(self, *, epochs, first_epoch, steps):
        self.started = time.monotonic()
        self.progress.start()
        self.epochs = self.progress.add_task("epochs", total=epochs, completed=first_epoch - 1, info="")
        self.batches = self.progress.add_task(f"epoch {first_epoch}", total=steps, info="")

    def step(self, *, epoch, step, loss):
        if step % 25 == 0 or step == self.progress.tasks[self.batches].total:
            self.progress.update(self.batches, completed=step, description=f"epoch {epoch}", info=f"loss {loss:.4f}")

    def epoch(self, stats):
        self.progress.console.print(
            f"epoch {stats.epoch:>3}  train loss {stats.train_loss:.4f}  acc {stats.train_acc:.4f}  "
            f"val loss {stats.val_loss:.4f}  acc {stats.val_acc:.4f}  {stats.seconds:.1f}s  "
            f"(elapsed {_clock(time.monotonic() - self.started)})", highlight=False)
        self.progress.update(self.epochs, advance=1)
        if stats.epoch < self.progress.tasks[self.epochs].total:
            self.progress.reset(self.batches, description=f"epoch {stats.epoch + 1}")
        else:
            self.progress.remove_task(self.batches)

    def note(self, text):
        self.progress.console.print(f"[yellow]note:[/] {escape(text)}", highlight=False)

    def stop(self):
        self.progress.stop()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _report_run(result) -> None:
    m = result.metrics
    target = m.target_accuracy
    verdict = ""
    if target is not None:
        verdict = f"  (target {target}: " + ("[green]passed[/])" if m.passed else "[red]not reached[/])")
    out.print(f"test accuracy [bold]{m.test_accuracy:.4f}[/]{verdict}  (model of epoch {m.model_epoch}, "
              f"{m.test_size:,} test images)", highlight=False)
    if m.limit is not None:
        out.print(f"trained on {m.train_size:,} of {m.train_available:,} training images (--limit {m.limit})",
                  highlight=False)
    out.print(f"run folder: {escape(str(result.path))}  (report.md, loss.png, metrics.json, model.pt)", highlight=False)


@app.command(cls=Command)
def run(
    spec: Annotated[Optional[Path], typer.Argument(help="spec file (YAML)", show_default=False, metavar="SPEC")] = None,
    rules: RulesOpt = None,
    set_: SetOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="run folder (default runs/<name>-<time>)")] = None,
    data_dir: DataDirOpt = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", metavar="RUN_DIR", help="continue an interrupted run folder")] = None,
    detect_anomaly: Annotated[bool, typer.Option("--detect-anomaly", help="torch autograd anomaly detection (slow)")] = False,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", metavar="N", help="train on the first N training images only (quick checks); validation and test sets stay whole")] = None,
    force: Annotated[bool, typer.Option("--force", help="empty the --out run folder first if it holds an earlier run")] = False,
    draft: DraftOpt = False,
    nproc: Annotated[Optional[int], typer.Option("--nproc", metavar="N", help="train on N processes (DDP, launched "
                                                 "with torchrun; one GPU each on a GPU machine); the spec's batch "
                                                 "size is the batch of all N together")] = None,
):
    """Train a spec, evaluate on the test set, and write the run folder with its report."""
    import netspec

    if (spec is None) == (resume is None):  # usage errors: exit 2, as Click's own
        raise typer.BadParameter("give a spec to run, or --resume RUN_DIR (not both)", param_hint="SPEC")
    if resume is not None and (set_ or rules or force or out_dir or draft or limit is not None):
        raise typer.BadParameter("--set, --rules, --out, --force and --limit do not apply to a run being resumed: "
                                 "it continues as it started; start a new run instead", param_hint="--resume")
    if nproc is not None:
        _launch(nproc)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone shows progress and results
    observer = ProgressObserver(err if main_rank else Console(stderr=True, quiet=True))
    with user_errors():
        try:
            if resume is not None:
                result = netspec.resume(resume, data_dir=data_dir, progress=observer)
            else:
                loaded = netspec.load(Path(spec), rules=list(rules or ()), overrides=list(set_ or ()), draft=draft)
                if loaded.checked.draft:
                    err.print("[yellow]draft:[/] not gradable: " + escape("; ".join(loaded.checked.waived)), highlight=False)
                _print_warnings(loaded.checked)
                result = netspec.train(loaded, out=out_dir, data_dir=data_dir, limit=limit, force=force,
                                       progress=observer, detect_anomaly=detect_anomaly)
        finally:
            observer.stop()
    if not main_rank:
        return
    for note in result.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    _report_run(result)


def _launch(nproc: int) -> None:
    """`netspec run --nproc N ...` is `torchrun --standalone --nproc-per-node N -m netspec run ...`."""
    if nproc < 1:
        raise typer.BadParameter("give at least 1 process", param_hint="--nproc")
    if "WORLD_SIZE" in os.environ:
        raise typer.BadParameter("already running under torchrun; drop --nproc", param_hint="--nproc")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={nproc}", "-m", "netspec", *args])


@app.command("eval", cls=Command)
def eval_(run_dir: Annotated[Path, typer.Argument(help="run folder", show_default=False, metavar="RUN_DIR")], data_dir: DataDirOpt = None,
          format: FormatOpt = "text"):
    """Reload a run's saved weights and report test accuracy."""
    import netspec

    fmt = _format(format)
    with user_errors():
        result = netspec.open_run(run_dir).evaluate(data_dir)
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    for note in result["notes"]:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    out.print(f"test accuracy {result['test_accuracy']:.4f}  (loss {result['test_loss']:.4f}, "
              f"{result['test_size']:,} test images, model of epoch {result['model_epoch']}, {result['speed']})",
              highlight=False)
    if result["recorded_test_accuracy"] is not None:
        same = abs(result["recorded_test_accuracy"] - result["test_accuracy"]) < 1e-9
        out.print(f"recorded by the run: {result['recorded_test_accuracy']:.4f} on {result['recorded_test_size']:,} "
                  f"test images" + ("  [green](same)[/]" if same else ""), highlight=False)


@app.command(cls=Command)
def attention(
    run_dir: Annotated[Path, typer.Argument(help="run folder of a model with attention (a ViT)", show_default=False, metavar="RUN_DIR")],
    index: Annotated[int, typer.Option("--index", metavar="N", help="validation example")] = 0,
    layer: Annotated[int, typer.Option("--layer", metavar="L", help="encoder layer (negative: from the end)")] = -1,
    data_dir: DataDirOpt = None,
):
    """Draw the post-softmax attention of every head of one layer as heatmaps (PNG)."""
    import torch

    import netspec
    from netspec.report.run_report import write_attention
    from netspec.runner.run import load_data
    from netspec.runner.rundir import RunDir

    with user_errors():
        run = netspec.open_run(run_dir)
        if not run.spec.config.family.attention:
            raise NetspecError(f"{run_dir} has no attention layers ({run.spec.config.family.key}); attention maps "
                               f"need a model with attention, such as model: vit")
        data = load_data(run.spec.checked, torch.device("cpu"), data_dir)
        path = write_attention(RunDir(run.path), run.spec.config.family, run.model, data, index=index, layer=layer)
    out.print(f"wrote {escape(str(path))}", highlight=False)


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
    from netspec.data.facts import data_spec_for, dataset_facts_table
    from netspec.report import plots

    with user_errors():
        shape = _shape(image_shape) if image_shape else None
        count = None if validation is None else (int(validation) if validation >= 1 or validation == 0 else validation)
        if Path(dataset).suffix in (".yaml", ".yml") and Path(dataset).is_file():
            spec_data = _check(Path(dataset), None, None).spec.data
            spec_data = spec_data if count is None else dataclasses.replace(spec_data, validation=count)
        else:
            spec_data = data_spec_for(dataset, shape, count)
        table_data, source, first = dataset_facts_table(spec_data, data_dir)
    table = Table(title=escape(table_data["title"]), title_justify="left")
    table.add_column("fact")
    table.add_column("value")
    for k, v in table_data["facts"]:
        table.add_row(k, escape(v))
    out.print(table)
    counts = Table(title="images per class", title_justify="left")
    counts.add_column("class")
    counts.add_column("train", justify="right")
    counts.add_column("test", justify="right")
    for c, tr, te in table_data["class_counts"]:
        counts.add_row(escape(c), f"{tr:,}", f"{te:,}")
    out.print(counts)
    if samples is not None:
        fig = plots.samples_figure(first.images.numpy(), first.labels, source.classes)
        fig.savefig(samples, dpi=100, bbox_inches="tight")
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
    from netspec.builder.forward import forward_file

    with user_errors():
        checked = _check(spec, None, None)
        outputs = forward_file(checked, input_file, seed)
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


class TrialLine:
    """A line per finished trial, printed by whichever worker process ran it (picklable)."""

    def __call__(self, study, frozen):
        from netspec.runner.study import counted

        if not counted(frozen):
            return
        if frozen.state.name == "COMPLETE":
            text = f"complete: val acc {frozen.value:.4f}"
        else:
            text = frozen.state.name.lower() + (f": {frozen.user_attrs['error']}" if "error" in frozen.user_attrs else "")
        Console(stderr=True, soft_wrap=True).print(f"trial {frozen.number} {text}  (worker {os.getpid()})", highlight=False)


@app.command("sweep", cls=Command)
def sweep_cmd(
    spec: SpecArg,
    grid: Annotated[Optional[list[str]], typer.Option("--grid", metavar="KEY=V1,V2,...", help="key=v1,v2,... (repeatable)")] = None,
    range_: Annotated[Optional[list[str]], typer.Option("--range", metavar="KEY=LOW:HIGH[:log][:int]", help="key=low:high[:log][:int] (repeatable)")] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", metavar="grid|tpe|random", help="grid, tpe or random",
                                                      autocompletion=_choices("grid", "tpe", "random"))] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", metavar="N", help="trial budget (grid: its size)")] = None,
    prune: Annotated[Optional[bool], typer.Option("--prune/--no-prune", help="stop hopeless trials early")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL", help="Optuna storage URL, e.g. postgresql://... (default: a journal file in the sweep folder)")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="sweep folder (default runs/<name>-sweep)")] = None,
    workers: Annotated[int, typer.Option("--workers", metavar="N", help="worker processes on this machine, each with its share of the cores")] = 1,
    rules: RulesOpt = None,
    set_: SetOpt = None,
    data_dir: DataDirOpt = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", metavar="N", help="train every trial on the first N training images only; validation and test stay whole")] = None,
    draft: DraftOpt = False,
):
    """Search over spec settings (grid, TPE or random, with Optuna); every trial is a run. Rerun to resume."""
    from netspec.report.run_report import RunReporter
    from netspec.report.sweep_report import leaderboard_table, write_sweep_outputs
    from netspec.runner.sweep import SweepJob, sweep

    if sampler is not None and sampler not in ("grid", "tpe", "random"):
        raise typer.BadParameter("use grid, tpe or random", param_hint="--sampler")
    progress: dict = {}

    def observer(trial, values):
        progress["obs"] = ProgressObserver(err)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        err.print(f"[bold]trial {trial.number}[/]: {escape(shown)}", highlight=False)
        return progress["obs"]

    def on_trial(study, frozen):
        if "obs" in progress:
            progress.pop("obs").stop()
        from netspec.runner.study import counted

        if not counted(frozen):
            return
        if frozen.state.name == "PRUNED":
            step = frozen.last_step
            text = f"pruned after epoch {step} (val acc {frozen.intermediate_values[step]:.4f})" if step else "pruned"
        elif frozen.value is not None:
            text = f"complete: val acc {frozen.value:.4f}"
        else:
            text = frozen.state.name.lower() + (f": {frozen.user_attrs['error']}" if "error" in frozen.user_attrs else "")
        err.print(f"trial {frozen.number} {text}", highlight=False)

    with user_errors():
        try:
            job = SweepJob.of(spec, grid=grid or (), ranges=range_ or (), sampler=sampler, trials=trials, prune=prune,
                              storage=storage, out=out_dir, imposed=rules or (), data_dir=data_dir, limit=limit,
                              overrides=set_ or (), draft=draft)
            result = sweep(job, workers=workers, reporter=RunReporter(), observer=observer,
                           on_trial=on_trial if workers == 1 else TrialLine())
        except Interrupted as e:  # one line, and the command that continues the sweep
            raise Interrupted(f"{e}:  netspec {shlex.join(sys.argv[1:])}", e.run_dir) from None
        finally:
            if "obs" in progress:
                progress.pop("obs").stop()
        rows = write_sweep_outputs(result.folder, result.study.study_name, result.study, result.space)
    drafted = " [draft: not gradable]" if result.study.user_attrs.get("draft") else ""
    out.print(leaderboard_table(rows, f"sweep {result.study.study_name}{drafted}: validation accuracy of the saved model first"))
    out.print(f"sweep folder: {escape(str(result.folder))}  (sweep.md, leaderboard.csv, trials.png, settings.png)",
              highlight=False)


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

    fmt = _format(format)
    with user_errors():
        rows = netspec.open_run(run_dir).predict_files(images, invert=invert)
    suspects = [r["file"] for r in rows if r["looks_inverted"]]
    if suspects:
        err.print(f"[yellow]warning:[/] {len(suspects)} image(s) look inverted against the training images (light "
                  f"background where they are dark, or the reverse), so their predictions are likely wrong: "
                  f"{escape(', '.join(suspects[:5]))}{' ...' if len(suspects) > 5 else ''}; "
                  f"{'remove --invert' if invert else 'try --invert'}", highlight=False)
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"predictions of {escape(str(run_dir))}", title_justify="left")
    for col in ("image", "class", "probability"):
        table.add_column(col, justify="right" if col == "probability" else "left", overflow="fold")
    for r in rows:
        table.add_row(escape(r["file"]), escape(r["class"]), f"{r['probability']:.4f}")
    out.print(table)


@app.command("compare", cls=Command)
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="run folders (the first is the baseline)", show_default=False, metavar="RUN_DIR")],
    figure: Annotated[Optional[Path], typer.Option("--figure", metavar="PNG", help="also write the overlaid loss curves here (PNG)")] = None,
    format: Annotated[str, typer.Option("--format", metavar="text|json|markdown", help="text, json or markdown (tables "
                                        "for a write-up)", autocompletion=_choices("text", "json", "markdown"))] = "text",
):
    """Runs side by side: architecture changes, settings that differ, accuracies, times, loss curves."""
    from netspec.report import plots
    from netspec.runner.compare import compare, read_runs

    fmt = _format(format, ("text", "json", "markdown"))
    with user_errors():
        infos = read_runs(runs)
        result = compare(infos)
    if figure is not None:
        fig = plots.overlay_figure({r.label: r.history for r in infos if r.history})
        fig.savefig(figure, dpi=110, bbox_inches="tight")
        result["figure"] = str(figure)
    if fmt == "json":
        print(json.dumps(result, indent=2, default=str))
        return
    if fmt == "markdown":
        from netspec.report.markdown import compare_markdown

        sys.stdout.write(compare_markdown(result) + (f"\n![loss curves]({figure})\n" if figure is not None else ""))
        return
    table = Table(title="runs", title_justify="left")
    for col in ("run", "status", "params", "train images", "best val acc", "test acc", "model epoch", "train s"):
        table.add_column(col, justify="left" if col in ("run", "status") else "right")
    f = lambda v, d=4: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    for r in result["runs"]:
        images = f(r["train_size"]) + (" (--limit)" if r["limit"] is not None else "")
        table.add_row(escape(r["label"]), r["status"], f(r["params"]), images, f(r["best_val_accuracy"]),
                      f(r["test_accuracy"]), f(r["model_epoch"]), f(r["train_seconds"], 1))
    out.print(table)
    for r in result["runs"]:
        for note in r["notes"]:
            err.print(f"[yellow]note:[/] {escape(r['label'])}: {escape(note)}", highlight=False)
    if len({r["train_size"] for r in result["runs"]}) > 1:
        err.print("[yellow]note:[/] these runs trained on different numbers of images (see train images)", highlight=False)
    for label, changes in result["architecture"].items():
        out.print(f"[bold]architecture[/] {escape(label)} vs {escape(result['baseline'])}: "
                  + ("same layers" if not changes else ""), highlight=False)
        for c in changes:
            out.print(f"  {escape(c)}", highlight=False)
    if result["settings"]:
        st = Table(title="settings that differ", title_justify="left")
        st.add_column("setting")
        for r in result["runs"]:
            st.add_column(escape(r["label"]))
        for k, values in result["settings"].items():
            st.add_row(escape(k), *[escape(str(v)) for v in values])
        out.print(st)
    else:
        out.print("settings: all the same")
    if figure is not None:
        out.print(f"loss curves: {escape(str(figure))}", highlight=False)


from netspec import cli_grade  # noqa: E402,F401 - registers `netspec grade` on the app
