"""One run, from a checked spec to a run folder written as it goes (kept at an interrupt or a non-finite loss)."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from netspec._version import __version__
from netspec.builder.model import build_model
from netspec.data.datasets import load_source
from netspec.data.splits import Data, check_limit, prepare
from netspec.errors import CheckpointError, Interrupted, RunError
from netspec.runner import stop
from netspec.runner.metrics import Metrics, Status
from netspec.runner.records import DataRecord, RunRecord, history_csv, read_history, resolved_spec, versions, write_rules
from netspec.runner.observer import Observer, Observers, RunInfo
from netspec.runner.distributed import Ranks, from_main, join, leave, settle
from netspec.runner.rundir import CHECKPOINT, SAFE_WEIGHTS, SPEC_FILE, WEIGHTS, RunDir
from netspec.runner.speed import Speed, backend_flags, resolve as resolve_speed, spec_with_speed, standard_state
from netspec.runner.steps import graph_problem
from netspec.runner.trainer import EpochStats, Outcome, Trainer, evaluate, logits_model, resolve_device, steps_per_epoch
from netspec.spec.datasets import FILES
from netspec.check.checker import Checked


@dataclass
class RunResult:
    run_dir: RunDir
    metrics: Metrics
    history: list[EpochStats]
    checked: Checked | None = None  # the spec it ran (its speed written in)
    model: torch.nn.Module | None = None  # the trained model, on the CPU (None: this process holds none)


def _require_dataset(spec) -> None:
    if spec.data.dataset == "none":
        raise RunError(f"{spec.name}: data.dataset is 'none' (a shapes-only spec); there is nothing to train on")


def load_data(checked: Checked, device, data_dir=None, limit: int | None = None) -> Data:
    spec = checked.spec
    _require_dataset(spec)
    return prepare(load_source(spec.data, data_dir), spec.data, seed=spec.train.seed, device=device, limit=limit)


class Reporter:
    """What a run writes for people (figures, report.md): hooks netspec.report.run_report.RunReporter implements."""

    def started(self, run_dir: RunDir, checked: Checked) -> None: ...
    def progress(self, run_dir: RunDir, checked: Checked, history: list[EpochStats],
                 steps: list[tuple[float, float]] | None = None) -> None: ...
    def finished(self, run_dir: RunDir, checked: Checked, metrics: Metrics, history: list[EpochStats],
                 model, data: Data, predictions: tuple | None = None) -> None:
        """`predictions`: (test labels, predicted labels), from the pass that measured test accuracy."""


@dataclass(frozen=True)
class RunOptions:
    """How `netspec run` was asked to run a spec (its options)."""

    out: str | Path | None = None  # the run folder (default: runs/<name>-<time>)
    data_dir: str | Path | None = None
    resume: bool = False  # `out` is an existing run folder: continue from its checkpoint
    limit: int | None = None  # train on the first N training images only
    runs_root: str | Path = "runs"
    force: bool = False  # empty `out` first if it holds an earlier run
    detect_anomaly: bool = False


def run(checked: Checked, options: RunOptions | None = None, *, observer: Observer | None = None,
        reporter: Reporter | None = None, **settings) -> RunResult:
    """Train `checked.spec` and write its run folder; `options` (or `settings`, its fields as keywords) are
    `netspec run`'s. An interrupted run raises Interrupted, a non-finite one RunError, once its folder is written."""
    options = options or RunOptions(**settings)
    _require_dataset(checked.spec)  # before any folder is made
    check_limit(options.limit)
    ranks, device = join(resolve_device(checked.spec.train.device))  # torchrun: this process's share
    try:
        plan = _plan(checked, ranks, device, options)
        if (plan.resumed and plan.state.get("epoch", 0) >= plan.spec.train.epochs and plan.run_dir.finished()
                and (plan.run_dir / WEIGHTS).is_file()):  # every epoch and the whole record written: nothing to redo
            if observer is not None and ranks.main:
                observer.note(f"{plan.run_dir.path} finished all {plan.spec.train.epochs} epochs: nothing to "
                              f"resume, and its folder is left as it was")
            return RunResult(plan.run_dir, plan.run_dir.metrics(), read_history(plan.run_dir), plan.checked)
        return _run(plan, Observers([observer]), reporter or Reporter(), options.detect_anomaly)
    finally:
        leave(ranks)


@dataclass
class Plan:
    """What one run does, decided once; `state`: the checkpoint it continues from (None: a new run)."""

    checked: Checked
    speed: Speed
    run_dir: RunDir
    data_dir: str | Path | None
    limit: int | None
    state: dict | None
    ranks: Ranks
    device: torch.device
    notes: tuple[str, ...] = ()  # what the user should know of the plan (said once training starts)

    @property
    def resumed(self) -> bool:
        return self.state is not None

    @property
    def spec(self):
        return self.checked.spec


def _has_batchnorm(checked: Checked) -> bool:
    return any(r.kind.startswith("BatchNorm") for r in checked.analysis.rows)


def check_processes(checked: Checked, processes: int, device: torch.device) -> None:
    """What training on `processes` processes asks of the spec (checked before they start, too)."""
    train = checked.spec.train
    if train.batch_size % processes:
        raise RunError(f"train.batch_size {train.batch_size} is the batch of all {processes} processes "
                       f"together and must divide among them evenly")
    if processes > 1 and train.sync_batchnorm and device.type != "cuda" and _has_batchnorm(checked):
        raise RunError(f"train.sync_batchnorm: torch's SyncBatchNorm runs on GPUs, and these {processes} processes "
                       f"would train on {device.type}; set it to false (each process then normalises its own share)")


def _plan(checked: Checked, ranks: Ranks, device, options: RunOptions) -> Plan:
    """A new run's plan (its folder made by rank 0 alone), or a resumed one's (folder, checkpoint, data as recorded)."""
    check_processes(checked, ranks.size, device)
    speed = resolve_speed(checked.spec, device)
    checked = replace(checked, spec=spec_with_speed(checked.spec, speed))  # spec.yaml says what ran
    if not options.resume:
        made = ranks.main and RunDir.create(options.out, checked.spec.name, options.runs_root, force=options.force)
        run_dir = RunDir(Path(from_main(ranks, str(made.path) if made else None)))
        return Plan(checked, speed, run_dir, options.data_dir, options.limit, None, ranks, device)
    run_dir = RunDir.open(options.out)
    if not (run_dir / CHECKPOINT).is_file():
        raise CheckpointError(f"{run_dir.path} has no {CHECKPOINT}: no epoch finished, so there is nothing to "
                              f"resume; start the run again")
    record = run_dir.read_record(RunRecord)
    if options.limit is not None and options.limit != record.limit:
        raise RunError(f"{run_dir.path} was trained with --limit {record.limit}; resume it without --limit")
    data_dir = options.data_dir if options.data_dir is not None else record.existing_data_dir
    notes = () if record.processes == ranks.size else (
        f"{run_dir.path} trained on {record.processes} process(es) and resumes on {ranks.size}: its batches are "
        f"shared out differently from here on (resume with --nproc {record.processes} to continue as it started)",)
    return Plan(checked, speed, run_dir, data_dir, record.limit, run_dir.load(CHECKPOINT), ranks, device, notes)


def _load(plan: Plan) -> Data:
    """The run's data; a new run whose data never loaded leaves no folder behind to refuse the next try."""
    try:
        data = load_data(plan.checked, plan.device, plan.data_dir, plan.limit)
        if plan.speed.compile == "graph" and (problem := graph_problem(plan.speed, plan.ranks.size, data.loading)):
            raise RunError(f"train.compile: graph: {problem}")
        batch, n = plan.spec.train.batch_size, len(data.train)
        if not steps_per_epoch(n, batch, plan.ranks.size):
            raise RunError(f"{n} training image(s) make no step of train.batch_size {batch} on {plan.ranks.size} "
                           f"process(es) (each must train on at least 2): use more data (--limit) or a smaller batch")
        return data
    except BaseException:
        if not plan.resumed and plan.ranks.main:
            plan.run_dir.release()
        raise


def _run(plan: Plan, observer: Observers, reporter: Reporter, detect_anomaly: bool) -> RunResult:
    """run() in one process of `plan.ranks`: rank 0 writes, reports and tells the user; every rank trains."""
    ranks, run_dir, spec = plan.ranks, plan.run_dir, plan.spec
    data = _load(plan)
    if not ranks.main:
        reporter, observer = Reporter(), Observers([])
    else:
        _record_start(plan, data, reporter)
        if plan.data_dir is not None and spec.data.dataset in FILES:
            observer.note(f"--data-dir is where the named datasets are; {spec.data.dataset} reads data.path ({spec.data.path})")
        if data.loading == "stream":
            observer.note(f"data streamed by a DataLoader with {data.workers} worker process(es) ({data.loading_reason})")
        for text in plan.notes:
            observer.note(text)
        observer.run_start(_run_info(plan))
    with torch.random.fork_rng(devices=[plan.device] if plan.device.type == "cuda" else []), \
            backend_flags(plan.speed, plan.device):
        torch.manual_seed(spec.train.seed)
        model = build_model(spec, plan.device)
        folder = _Folder(plan, reporter)
        if ranks.main:  # the folder's records first: observers hear of an epoch once it is saved
            observer.observers.insert(0, folder)
        trainer = folder.trainer = Trainer(spec, model, data, plan.device, softmax_head=plan.checked.analysis.softmax_head,
                                           speed=plan.speed, observer=observer, ranks=ranks)
        trainer.detect_anomaly = detect_anomaly
        if plan.resumed:
            trainer.load_state(plan.state, source=run_dir / CHECKPOINT)
        if not ranks.main:  # trains its share; rank 0 keeps the folder, and is waited for when finished
            _raise_unless_done(trainer.fit(), len(trainer.history), run_dir)
            settle(ranks)
            return RunResult(run_dir, run_dir.metrics(), trainer.history, plan.checked)
        result = _train(plan, trainer, reporter, observer)
        settle(ranks)  # the folder is complete: every process may read it
        return result


class _Folder(Observer):
    """The run folder as training goes: after each epoch its checkpoint, history and loss plot."""

    def __init__(self, plan: Plan, reporter: Reporter):
        self.plan, self.reporter, self.trainer = plan, reporter, None

    def epoch(self, stats) -> None:
        tr, run_dir = self.trainer, self.plan.run_dir
        run_dir.save(CHECKPOINT, tr.state())
        run_dir.write_text("history.csv", history_csv(tr.history))
        self.reporter.progress(run_dir, self.plan.checked, tr.history, steps=tr.step_losses)


def _record_start(plan: Plan, data: Data, reporter: Reporter) -> None:
    """What rank 0 writes before training: a new run's spec, rules and run.json; every run's data.json."""
    run_dir = plan.run_dir
    if not plan.resumed:
        run_dir.write_yaml(SPEC_FILE, resolved_spec(plan.checked))
        write_rules(run_dir, plan.checked)
        data_dir = str(Path(plan.data_dir).resolve()) if plan.data_dir is not None else None
        run_dir.write_record(RunRecord(plan.limit, " ".join(sys.argv), data_dir, **plan.ranks.record()))
        reporter.started(run_dir, plan.checked)
    run_dir.write_record(DataRecord.from_dict(data.record()))


def _run_info(plan: Plan) -> RunInfo:
    return RunInfo(plan.run_dir.path, resolved_spec(plan.checked), tuple(r.name for r in plan.checked.rules),
                   plan.checked.draft, str(plan.device), plan.resumed)


def _train(plan: Plan, trainer: Trainer, reporter: Reporter, observer: Observers) -> RunResult:
    """Rank 0's training, its run folder written whole (a stop request waits for it), then run_end."""
    run_dir, started = plan.run_dir, time.perf_counter()
    try:
        with stop.held():
            outcome = trainer.fit()
        with stop.held(final=True):
            # a half-finished epoch's weights are nobody's result: back to the last finished epoch's, or initial ones
            if outcome.status in (Status.INTERRUPTED, Status.FAILED) and (run_dir / CHECKPOINT).is_file():
                trainer.model.load_state_dict(run_dir.load(CHECKPOINT)["model"])
            elif outcome.status is Status.FAILED:
                torch.manual_seed(plan.spec.train.seed)
                trainer.model.load_state_dict(build_model(plan.spec, plan.device).state_dict())
            metrics = _finish(plan, trainer, outcome, time.perf_counter() - started, reporter)
    except Exception:
        observer.run_end(_run_info(plan), test_accuracy=None, status=Status.STOPPED)
        raise
    observer.run_end(_run_info(plan), test_accuracy=metrics.test_accuracy, status=metrics.status)
    _raise_unless_done(outcome, len(trainer.history), run_dir)
    return RunResult(run_dir, metrics, trainer.history, plan.checked, trainer.model.cpu())


def _raise_unless_done(outcome: Outcome, epochs: int, run_dir: RunDir) -> None:
    """An interrupted run is Interrupted, a non-finite one RunError (its folder written by then)."""
    if outcome.status is Status.INTERRUPTED:
        if not epochs:
            raise Interrupted(f"interrupted before the first epoch finished: {run_dir.path} holds no trained model "
                              f"and nothing to resume. Train again with --out {run_dir.path} --force (or another "
                              f"--out)", run_dir.path)
        raise Interrupted(f"interrupted after {epochs} finished epoch(s); the model and metrics in {run_dir.path} "
                          f"are those of epoch {epochs}. Continue with: netspec run --resume {run_dir.path}",
                          run_dir.path)
    if outcome.status is Status.FAILED:
        raise RunError(f"{outcome.reason}; stopped. The last good weights are in {run_dir / WEIGHTS}")


def _finish(plan: Plan, trainer: Trainer, outcome: Outcome, wall: float, reporter: Reporter) -> Metrics:
    """Test the model (if there is one), and write the weights, history, metrics and report."""
    checked, run_dir, history, data = plan.checked, plan.run_dir, trainer.history, trainer.data
    # an interrupt before the first finished epoch leaves no model worth saving or testing
    has_model = bool(history) or outcome.status is not Status.INTERRUPTED
    test_loss = test_acc = predictions = None
    if has_model:
        net = logits_model(trainer.model, checked.analysis.softmax_head)
        kept: list = []
        test_loss, test_acc = evaluate(net, data.test, plan.spec.train.eval_batch_size, trainer.speed, keep=kept)
        predictions = (torch.cat([y for y, _ in kept]), torch.cat([g for _, g in kept])) if kept else None
        state = standard_state(trainer.model)  # safetensors first: model.pt, written last, marks the pair complete
        run_dir.save_safetensors(SAFE_WEIGHTS, state, data.record(), epoch=len(history), version=__version__)
        run_dir.save(WEIGHTS, {"spec": resolved_spec(checked), "data": data.record(),
                               "state_dict": state, "epoch": len(history), "netspec": __version__})
    metrics = _metrics(plan, trainer, outcome, test_loss, test_acc, has_model, wall)
    if not history:  # every finished epoch already wrote its history
        run_dir.write_text("history.csv", history_csv(history))
    run_dir.write_record(metrics)
    reporter.finished(run_dir, checked, metrics, history, trainer.model, data, predictions)
    return metrics


def _metrics(plan: Plan, trainer: Trainer, outcome: Outcome, test_loss, test_acc, has_model: bool,
             wall: float) -> Metrics:
    spec, analysis, history, data, device = plan.spec, plan.checked.analysis, trainer.history, trainer.data, plan.device
    last = history[-1] if history and len(data.val) > 0 else None  # no validation split: no validation accuracy
    best = max(history, key=lambda h: h.val_acc) if last else None
    target, train_seconds = plan.checked.target_accuracy, sum(h.seconds for h in history)
    # several processes and BatchNorm: statistics over each one's share (DDP's default), or all (SyncBatchNorm)
    batchnorm = None if plan.ranks.size == 1 or not _has_batchnorm(plan.checked) else (
        "synchronised" if spec.train.sync_batchnorm else "per process")
    return Metrics(
        name=spec.name, status=outcome.status, reason=outcome.reason, test_accuracy=test_acc, test_loss=test_loss,
        target_accuracy=target, passed=None if target is None or test_acc is None else test_acc >= target,
        model_epoch=len(history) if has_model else None, best_val_accuracy=best.val_acc if best else None,
        best_epoch=best.epoch if best else None, final_val_accuracy=last.val_acc if last else None,
        epochs_completed=len(history), epochs_planned=spec.train.epochs, params=analysis.params,
        draft=plan.checked.draft, hidden_units=analysis.hidden_units, limit=plan.limit, train_size=len(data.train),
        train_available=data.train_available, val_size=len(data.val), test_size=len(data.test),
        dataset=spec.data.dataset, loading=data.loading,
        device=str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        **plan.ranks.record(), batchnorm=batchnorm, speed=asdict(trainer.speed), evaluated_in=trainer.speed.precision,
        seed=spec.train.seed, train_seconds=train_seconds, wall_seconds=wall, versions=versions(),
        seconds_per_epoch=train_seconds / len(history) if history else None, command=" ".join(sys.argv))


