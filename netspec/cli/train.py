"""Training: run (and --resume, --nproc), eval, sweep."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from netspec.cli.base import (Command, DataDirOpt, DraftOpt, FormatOpt, RulesOpt, SetOpt, SpecArg, _choices, app, emit,
                              err, note, out, pick_format, print_warnings, user_errors)
from netspec.cli.progress import ProgressObserver, TrialLine, TrialProgress
from netspec.errors import Interrupted

LogOpt = Annotated[Optional[list[str]], typer.Option(
    "--log", metavar="TRACKER", autocompletion=_choices("tensorboard", "mlflow"),
    help="record the run where you look at runs too: tensorboard (RUN_DIR/tensorboard/) or mlflow "
         "(MLFLOW_TRACKING_URI); repeatable")]


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
    out.print(f"run folder: {escape(str(result.path))}  (report.md, loss.png, metrics.json, model.safetensors, model.pt)", highlight=False)


# A command's parameters are its command-line options (Typer reads them from the signature), hence
# more than eight for run, sweep and grade.
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
    log: LogOpt = None,
):
    """Train a spec, evaluate on the test set, and write the run folder with its report."""
    import netspec
    from netspec.runner import stop

    if (spec is None) == (resume is None):  # usage errors: exit 2, as Click's own
        raise typer.BadParameter("give a spec to run, or --resume RUN_DIR (not both)", param_hint="SPEC")
    if resume is not None and (set_ or rules or force or out_dir or draft or limit is not None):
        raise typer.BadParameter("--set, --rules, --out, --force and --limit do not apply to a run being resumed: "
                                 "it continues as it started; start a new run instead", param_hint="--resume")
    if nproc is not None:
        with user_errors():  # a spec the processes would refuse is refused here, in one line
            _before_launch(nproc, spec, rules, set_, draft, resume)
        _launch(nproc)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone shows progress and results
    observer = ProgressObserver(err if main_rank else Console(stderr=True, quiet=True))
    # Ctrl-C and SIGTERM (`kill`, a scheduler's stop, torchrun's) stop training at the next step and
    # the run folder is written; before training (loading, downloading) they stop at once
    with user_errors(say_interrupted=main_rank), stop.listening(hold=False):
        try:
            if resume is not None:
                result = netspec.resume(resume, data_dir=data_dir, progress=observer, log=log or ())
            else:
                loaded = netspec.load(Path(spec), rules=list(rules or ()), overrides=list(set_ or ()), draft=draft)
                if loaded.checked.draft:
                    err.print("[yellow]draft:[/] not gradable: " + escape("; ".join(loaded.checked.waived)), highlight=False)
                print_warnings(loaded.checked)
                result = netspec.train(loaded, out=out_dir, data_dir=data_dir, limit=limit, force=force,
                                       progress=observer, detect_anomaly=detect_anomaly, log=log or ())
        finally:
            observer.stop()
    if not main_rank:
        return
    for text in result.notes:
        note(text)
    _report_run(result)


def _before_launch(nproc: int, spec, rules, set_, draft: bool, resume) -> None:
    """The checks the N processes would make, made once before torchrun starts them (a process
    that fails makes torchrun print its own traceback)."""
    import netspec
    from netspec.runner.reopen import check_run_spec
    from netspec.runner.run import check_processes
    from netspec.runner.rundir import RunDir
    from netspec.runner.trainer import resolve_device

    if nproc < 1:
        raise typer.BadParameter("give at least 1 process", param_hint="--nproc")
    if "WORLD_SIZE" in os.environ:
        raise typer.BadParameter("already running under torchrun; drop --nproc", param_hint="--nproc")
    checked = (check_run_spec(RunDir.open(resume))[0] if resume is not None else
               netspec.load(Path(spec), rules=list(rules or ()), overrides=list(set_ or ()), draft=draft).checked)
    check_processes(checked, nproc, resolve_device(checked.spec.train.device))


def _launch(nproc: int) -> NoReturn:
    """`netspec run --nproc N ...` is `torchrun --standalone --nproc-per-node N -m netspec run ...`,
    through torchrun's own entry point, so that its end is said in one line instead of torchrun's
    traceback: Ctrl-C exits 130 (each process has said where its run stands); a process that ended
    is named with how it ended. torchrun stops the others with SIGTERM, a stop request in each,
    so the run folder is left resumable."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run as torchrun

    from netspec.runner.stop import INTERRUPTED_EXIT

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    # torchrun would set 1 thread per process (and say so); a process gets its share of the cores
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.disable(logging.CRITICAL)  # torchrun's log lines (this process only runs it) say what ours do
    try:
        torchrun(get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "netspec", *args]))
    except SignalException:
        raise typer.Exit(INTERRUPTED_EXIT) from None
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode == INTERRUPTED_EXIT:  # stopped on its own (a signal to that process alone)
            err.print(f"[yellow]process {rank} of {nproc} was interrupted; torchrun stopped the others[/]")
            raise typer.Exit(INTERRUPTED_EXIT) from None
        how = (f"was killed by {failure.signal_name()}; torchrun stopped the others (a run folder keeps its "
               f"finished epochs: netspec run --resume RUN_DIR)" if failure.exitcode < 0 else
               f"stopped with the error above (exit code {failure.exitcode}); torchrun stopped the others")
        err.print(f"[red]error:[/] process {rank} of {nproc} {how}", highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(0)


@app.command("eval", cls=Command)
def eval_(run_dir: Annotated[Path, typer.Argument(help="run folder", show_default=False, metavar="RUN_DIR")], data_dir: DataDirOpt = None,
          format: FormatOpt = "text"):
    """Reload a run's saved weights and report test accuracy."""
    import netspec

    fmt = pick_format(format)
    with user_errors():
        result = netspec.open_run(run_dir).evaluate(data_dir)
    emit(fmt, result.to_dict(), _print_evaluation)


def _print_evaluation(result: dict) -> None:
    for text in result["notes"]:
        note(text)
    out.print(f"test accuracy {result['test_accuracy']:.4f}  (loss {result['test_loss']:.4f}, "
              f"{result['test_size']:,} test images, model of epoch {result['model_epoch']}, {result['speed']})",
              highlight=False)
    if result["recorded_test_accuracy"] is not None:
        same = abs(result["recorded_test_accuracy"] - result["test_accuracy"]) < 1e-9
        out.print(f"recorded by the run: {result['recorded_test_accuracy']:.4f} on {result['recorded_test_size']:,} "
                  f"test images" + ("  [green](same)[/]" if same else ""), highlight=False)


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
    log: LogOpt = None,
):
    """Search over spec settings (grid, TPE or random, with Optuna); every trial is a run. Rerun to resume."""
    import netspec
    from netspec.report.sweep_report import leaderboard_table

    if sampler is not None and sampler not in ("grid", "tpe", "random"):
        raise typer.BadParameter("use grid, tpe or random", param_hint="--sampler")
    progress = TrialProgress(err) if workers == 1 else TrialLine()
    with user_errors():
        try:
            result = netspec.sweep(spec, workers=workers, progress=progress, grid=grid or (), ranges=range_ or (),
                                   sampler=sampler, trials=trials, prune=prune, storage=storage, out=out_dir,
                                   imposed=rules or (), data_dir=data_dir, limit=limit, overrides=set_ or (),
                                   draft=draft, log=log or ())
        except Interrupted as e:  # one line, and the command that continues the sweep
            raise Interrupted(f"{e}:  netspec {shlex.join(sys.argv[1:])}", e.run_dir) from None
        finally:
            progress.stop()
    drafted = " [draft: not gradable]" if result.draft else ""
    out.print(leaderboard_table(result.rows, f"sweep {result.name}{drafted}: validation accuracy of the saved model first"))
    out.print(f"sweep folder: {escape(str(result.folder))}  (sweep.md, leaderboard.csv, trials.png, settings.png)",
              highlight=False)
