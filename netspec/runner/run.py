"""One run, from a checked spec to a complete run folder.

The folder is written as the run goes: the resolved spec and summary before
training, a checkpoint, history and loss plot after every epoch, and the
metrics, weights, attention maps and report at the end (or at an interrupt,
or at a non-finite loss: whatever was finished is kept).
"""
from __future__ import annotations

import csv
import io
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torchvision

from netspec._version import __version__
from netspec.builder.model import build_model
from netspec.data.datasets import load_source
from netspec.data.splits import Data, check_limit, prepare
from netspec.errors import CheckpointError, during_interrupt, first_line, Interrupted, RunError, SpecError
from netspec.runner.graphstep import graph_problem
from netspec.runner.metrics import Metrics
from netspec.runner.observer import Observers, RunInfo
from netspec.runner.distributed import Ranks, from_main, join, leave, settle
from netspec.runner.rundir import CHECKPOINT, SAFE_WEIGHTS, SPEC_FILE, WEIGHTS, RunDir
from netspec.runner.speed import Speed, backend_flags, standard_state
from netspec.runner.speed import arrange
from netspec.runner.speed import resolve as resolve_speed
from netspec.runner.speed import spec_with_speed
from netspec.runner.train import EpochStats, NonFinite, Observer, Trainer, evaluate, logits_model, resolve_device
from netspec.spec.datasets import FILES, NAMED
from netspec.spec.loader import load_file
from netspec.spec.rules import resolve_rules, rules_from_dict, shipped_rule_sets
from netspec.builder.check import Checked, check_document



@dataclass
class RunResult:
    run_dir: RunDir
    metrics: Metrics
    history: list[EpochStats]


METRICS = "metrics.json"  # the Metrics record


def read_metrics(run_dir: RunDir) -> Metrics:
    """The run's Metrics (defaults where a folder has none yet: a run still training, or killed)."""
    return Metrics.from_dict(run_dir.read_json(METRICS)) if (run_dir / METRICS).is_file() else Metrics()


def versions() -> dict:
    return {"netspec": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


RULES_RECORD = "rules.json"  # the content of every rule set the run was checked against
SPEC_RULES = "spec-rules.yaml"  # a copy of the spec's own rules file, when it is a file
RUN_RECORD = "run.json"  # how the run was started: what --resume must repeat


def resolved_spec(checked: Checked) -> dict:
    """The spec with defaults written out. A rules file (not a shipped name) is copied into
    the run folder as spec-rules.yaml and referenced from there, so the folder is portable."""
    data = checked.spec.to_dict()
    ref = data.get("rules")
    if ref and ref not in shipped_rule_sets():
        data["rules"] = SPEC_RULES
    return data


def _write_rules(run_dir: RunDir, checked: Checked) -> None:
    run_dir.write_json(RULES_RECORD, [r.to_dict() for r in checked.rules])
    ref = checked.spec.rules
    if ref and ref not in shipped_rule_sets():
        own = resolve_rules(ref, Path(checked.doc.file).parent)
        if own is not None:
            run_dir.write_text(SPEC_RULES, own.read_text(encoding="utf-8"))


def _require_dataset(spec) -> None:
    if spec.data.dataset == "none":
        raise RunError(f"{spec.name}: data.dataset is 'none' (a shapes-only spec); there is nothing to train on")


def load_data(checked: Checked, device, data_dir=None, limit: int | None = None) -> Data:
    spec = checked.spec
    _require_dataset(spec)
    source = load_source(spec.data, data_dir)
    return prepare(source, spec.data, seed=spec.train.seed, device=device, limit=limit)


DATA_RECORD = "data.json"  # classes, normalisation and loading path: how to preprocess new images


def preprocessing(run_dir: RunDir, spec) -> dict:
    """The run's data record (data.json). Folders from before it trained MNIST or Fashion-MNIST
    with these fixed statistics."""
    if (run_dir / DATA_RECORD).is_file():
        record = run_dir.read_json(DATA_RECORD)
        problem = _record_problem(record, spec)
        if problem:
            raise CheckpointError(f"{run_dir / DATA_RECORD} {problem}; it was edited or damaged (rerun the spec to "
                                  "write it again)")
        return record
    legacy = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
    if spec.data.dataset not in legacy:
        raise CheckpointError(f"{run_dir.path} has no {DATA_RECORD}: its preprocessing is unknown")
    mean, std = legacy[spec.data.dataset]
    return {"dataset": spec.data.dataset, "classes": list(NAMED[spec.data.dataset].classes), "image_shape": list(NAMED[spec.data.dataset].image_shape),
            "input_shape": list(spec.data.input_shape), "mean": [mean], "std": [std], "stats_from": "fixed"}


def _record_problem(record, spec) -> str | None:
    """What is wrong with a data record, checked like any input against the run's own spec: a
    hand-edited std of 0 would give NaN probabilities, a huge image_shape a huge allocation."""
    if not isinstance(record, dict) or not {"classes", "mean", "std", "image_shape"} <= record.keys():
        return "is not a data record"
    shape = record["image_shape"]
    if not (isinstance(shape, list) and all(type(v) is int for v in shape)) or (
            spec.data.image_shape and tuple(shape) != tuple(spec.data.image_shape)):
        return f"says image_shape {shape!r}, the run's spec {list(spec.data.image_shape or ())}"
    classes = record["classes"]
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)) or (
            spec.data.classes and len(classes) != spec.data.classes):
        return f"names {len(classes) if isinstance(classes, list) else 'no'} classes, the run's spec {spec.data.classes}"
    for key, low in (("mean", -math.inf), ("std", 0)):
        values = record[key]
        if not (isinstance(values, list) and len(values) == shape[0]
                and all(type(v) in (int, float) and math.isfinite(v) and v > low for v in values)):
            return (f"has {key} {values!r}: one finite number per channel ({shape[0]})"
                    + (", each above 0" if key == "std" else ""))
    return None


def history_csv(history: list[EpochStats]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(EpochStats)])
    writer.writeheader()
    for h in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(h).items()})
    return buf.getvalue()


def read_history(run_dir: RunDir) -> list[EpochStats]:
    try:
        with open(run_dir / "history.csv", newline="") as f:
            return [EpochStats(**{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()})
                    for row in csv.DictReader(f)]
    except (OSError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot read {run_dir / 'history.csv'}: {e}") from None


class Reporter:
    """What a run writes for people to look at (figures, report.md). The runner calls these
    hooks; netspec.report.run_report.RunReporter implements them (the report layer sits above
    the runner, so the runner never imports it). The default writes nothing."""

    def started(self, run_dir: RunDir, checked: Checked) -> None: ...

    def progress(self, run_dir: RunDir, checked: Checked, history: list[EpochStats],
                 steps: list[tuple[float, float]] | None = None) -> None: ...

    def finished(self, run_dir: RunDir, checked: Checked, metrics: Metrics, history: list[EpochStats],
                 model, data: Data, predictions: tuple | None = None) -> None:
        """`predictions`: (test labels, predicted labels), from the pass that measured test accuracy."""


def run(checked: Checked, *, out=None, data_dir=None, observer: Observer | None = None,
        resume: bool = False, detect_anomaly: bool = False, limit: int | None = None,
        runs_root: str | Path = "runs", force: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Train `checked.spec` and write its run folder. (The keywords are the `netspec run` options;
    they become one Plan at once.)

    With `resume`, `out` is an existing run folder and training continues from its
    checkpoint on the same data it used (its recorded `limit`). `limit` trains on the
    first N training images only; validation and test sets stay whole.
    """
    _require_dataset(checked.spec)  # before any folder is made
    check_limit(limit)
    if observer is not None and not isinstance(observer, Observers):
        observer = Observers([observer])  # every event reaches it, and a hook it lacks is skipped
    ranks, device = join(resolve_device(checked.spec.train.device))  # torchrun: this process's share
    try:
        plan = _plan(checked, ranks, device, out=out, data_dir=data_dir, resume=resume, limit=limit,
                     runs_root=runs_root, force=force)
        if _complete(plan):  # resumed after its last epoch and its record were written: nothing to redo
            if observer is not None and ranks.main:
                observer.note(f"{plan.run_dir.path} finished all {plan.spec.train.epochs} epochs: nothing to "
                              f"resume, and its folder is left as it was")
            return RunResult(plan.run_dir, read_metrics(plan.run_dir), read_history(plan.run_dir))
        return _run(plan, observer, reporter or Reporter(), detect_anomaly)
    finally:
        leave(ranks)


def _complete(plan: "Plan") -> bool:
    """A resumed run whose every epoch and whole record are written. (One whose last epoch finished
    but whose writing was cut short is not: resuming writes it.)"""
    return (plan.resumed and plan.state.get("epoch", 0) >= plan.spec.train.epochs
            and read_metrics(plan.run_dir).finished and (plan.run_dir / WEIGHTS).is_file())


@dataclass
class Plan:
    """What one run does, decided once: the spec (with the speed it runs at written in), the folder,
    the data, and the checkpoint it continues from (None: a new run)."""

    checked: Checked
    speed: Speed
    run_dir: RunDir
    data_dir: str | Path | None
    limit: int | None
    state: dict | None
    ranks: Ranks
    device: torch.device

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


def _plan(checked: Checked, ranks: Ranks, device, *, out, data_dir, resume: bool, limit, runs_root, force) -> Plan:
    """The plan of a new run (its folder made by rank 0 alone; the others learn where) or of a
    resumed one (its folder, checkpoint, data and limit as recorded). Its keywords are run()'s,
    passed on once."""
    check_processes(checked, ranks.size, device)
    speed = resolve_speed(checked.spec, device)
    problem = graph_problem(checked.spec, speed, ranks.size) if speed.compile == "graph" else None
    if problem:  # before any folder is made
        raise RunError(f"train.compile: graph: {problem}")
    checked = replace(checked, spec=spec_with_speed(checked.spec, speed))  # spec.yaml says what ran
    if not resume:
        made = RunDir.create(out, checked.spec.name, runs_root, force=force).path if ranks.main else None
        return Plan(checked, speed, RunDir(Path(from_main(ranks, str(made) if made else None))), data_dir, limit,
                    None, ranks, device)
    run_dir = RunDir.open(out)
    if not (run_dir / CHECKPOINT).is_file():
        raise CheckpointError(f"{run_dir.path} has no {CHECKPOINT}: no epoch finished, so there is nothing to "
                              f"resume; start the run again")
    record = _read_run_record(run_dir)
    recorded = record.get("limit")
    if limit is not None and limit != recorded:
        raise RunError(f"{run_dir.path} was trained with --limit {recorded}; resume it without --limit")
    data_dir = data_dir if data_dir is not None else recorded_data_dir(record)
    return Plan(checked, speed, run_dir, data_dir, recorded, run_dir.load(CHECKPOINT), ranks, device)


def _run(plan: Plan, observer: Observer | None, reporter: Reporter, detect_anomaly: bool) -> RunResult:
    """run() in one process of `plan.ranks`: rank 0 writes, reports and tells the user; every rank trains."""
    ranks, run_dir, spec = plan.ranks, plan.run_dir, plan.spec
    try:
        data = load_data(plan.checked, plan.device, plan.data_dir, plan.limit)
        problem = graph_problem(spec, plan.speed, ranks.size, data.loading) if plan.speed.compile == "graph" else None
        if problem:  # known once the data is loaded (streamed or in memory)
            raise RunError(f"train.compile: graph: {problem}")
    except BaseException:
        if not plan.resumed and ranks.main:  # a run whose data never loaded leaves no folder behind to refuse the next try
            run_dir.release()
        raise
    if not ranks.main:
        reporter, observer = Reporter(), None
    else:
        _record_start(plan, data, reporter)
        _notes(plan, data, observer)
        if observer is not None:
            observer.run_start(_run_info(plan))
    with torch.random.fork_rng(devices=[plan.device] if plan.device.type == "cuda" else []), \
            backend_flags(plan.speed, plan.device):
        torch.manual_seed(spec.train.seed)
        model = build_model(spec, plan.device)
        trainer = Trainer(spec, model, data, plan.device, softmax_head=plan.checked.analysis.softmax_head,
                          observer=observer, detect_anomaly=detect_anomaly, ranks=ranks)
        if plan.resumed:
            trainer.load_state(plan.state, source=run_dir / CHECKPOINT)
        if not ranks.main:  # trains its share; rank 0 keeps the folder, and is waited for
            trainer.fit()
            settle(ranks)
            return RunResult(run_dir, Metrics.from_dict(run_dir.read_json(METRICS)), trainer.history)
        result = _train(plan, trainer, reporter, observer)
        settle(ranks)  # the folder is complete: every process may read it
        return result


def _record_start(plan: Plan, data: Data, reporter: Reporter) -> None:
    """What rank 0 writes before training: for a new run its spec, rules and how it was started;
    for every run the data record."""
    run_dir = plan.run_dir
    if not plan.resumed:
        run_dir.write_yaml(SPEC_FILE, resolved_spec(plan.checked))
        _write_rules(run_dir, plan.checked)
        run_dir.write_json(RUN_RECORD, {"limit": plan.limit, "command": " ".join(sys.argv),
                                        "data_dir": str(Path(plan.data_dir).resolve()) if plan.data_dir is not None else None,
                                        **plan.ranks.record()})
        reporter.started(run_dir, plan.checked)
    run_dir.write_json(DATA_RECORD, data.record())


def _notes(plan: Plan, data: Data, observer: Observer | None) -> None:
    spec = plan.spec
    if observer is not None and plan.data_dir is not None and spec.data.dataset in FILES:
        observer.note(f"--data-dir is where the named datasets are; {spec.data.dataset} reads data.path ({spec.data.path})")
    if observer is not None and data.loading == "stream":
        observer.note(f"data streamed by a DataLoader with {data.workers} worker process(es) ({data.loading_reason})")


def recorded_data_dir(record: dict) -> str | None:
    """The folder of named datasets the run read, where it still exists (else the default applies)."""
    where = record.get("data_dir")
    return where if isinstance(where, str) and Path(where).is_dir() else None


def _read_run_record(run_dir: RunDir) -> dict:
    if not (run_dir / RUN_RECORD).is_file():
        return {}  # folders from before run.json: full data
    record = run_dir.read_json(RUN_RECORD)
    return record if isinstance(record, dict) else {}


def _run_info(plan: Plan) -> RunInfo:
    return RunInfo(plan.run_dir.path, resolved_spec(plan.checked), tuple(r.name for r in plan.checked.rules),
                   plan.checked.draft, str(plan.device), plan.resumed)


def _train(plan: Plan, trainer: Trainer, reporter: Reporter, observer: Observer | None) -> RunResult:
    """Rank 0's training, its run folder written as it goes; the observer's run_end comes last, once
    the folder is complete (or, when an error ends the run, as it is left)."""
    run_dir, checked = plan.run_dir, plan.checked
    observer = observer or Observer()

    def end_of_epoch(tr: Trainer) -> None:
        run_dir.save(CHECKPOINT, tr.state())
        run_dir.write_text("history.csv", history_csv(tr.history))
        reporter.progress(run_dir, checked, tr.history, steps=tr.step_losses)

    started = time.perf_counter()
    status, error = "finished", None
    try:
        trainer.fit(on_epoch_end=end_of_epoch)
    except (KeyboardInterrupt, Exception) as e:
        if not (during_interrupt(e) or isinstance(e, NonFinite)
                or (isinstance(e, RuntimeError) and trainer.ranks.size > 1 and _peer_lost(e))):
            observer.run_end(_run_info(plan), test_accuracy=None, status=f"stopped: {first_line(e, type(e).__name__)}")
            raise
        # under torchrun, Ctrl-C reaches every process: one may be stopped inside a collective by
        # another's leaving, which is the same interruption
        status, error = ("failed", e) if isinstance(e, NonFinite) else ("interrupted", None)
        _last_good_weights(plan, trainer.model, status)
    metrics = _finish(plan, trainer, status + (f": {error}" if error else ""), time.perf_counter() - started, reporter)
    observer.run_end(_run_info(plan), test_accuracy=metrics.test_accuracy, status=metrics.status)
    if status == "interrupted":
        if not trainer.history:
            raise Interrupted(f"interrupted before the first epoch finished; nothing to resume "
                              f"({run_dir.path} holds the spec only). Start the run again to train.", run_dir.path)
        raise Interrupted(
            f"interrupted after {len(trainer.history)} finished epoch(s); the model and metrics in {run_dir.path} "
            f"are those of epoch {len(trainer.history)}. Continue with: netspec run --resume {run_dir.path}",
            run_dir.path)
    if error is not None:
        raise RunError(f"{error}. The last good weights are in {run_dir / WEIGHTS}") from None
    return RunResult(run_dir, metrics, trainer.history)


def _last_good_weights(plan: Plan, model, status: str) -> None:
    """The weights of a half-finished epoch are nobody's result: back to the last finished one
    (or, when a first epoch failed, to the initial weights as built)."""
    if (plan.run_dir / CHECKPOINT).is_file():
        model.load_state_dict(plan.run_dir.load(CHECKPOINT)["model"])
    elif status == "failed":
        torch.manual_seed(plan.spec.train.seed)
        model.load_state_dict(build_model(plan.spec, plan.device).state_dict())


def _peer_lost(e: RuntimeError) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("connection closed", "connection reset", "broken pipe", "gloo", "nccl"))


def _finish(plan: Plan, trainer: Trainer, status: str, wall: float, reporter: Reporter) -> Metrics:
    """Test the model (if there is one), and write the weights, history, metrics and report."""
    checked, run_dir, history, data = plan.checked, plan.run_dir, trainer.history, trainer.data
    # an interrupt before the first finished epoch leaves no model worth saving or testing
    has_model = bool(history) or not status.startswith("interrupted")
    test_loss = test_acc = predictions = None
    if has_model:
        net = logits_model(trainer.model, checked.analysis.softmax_head)
        kept: list = []
        test_loss, test_acc = evaluate(net, data.test, plan.spec.train.eval_batch_size, trainer.speed, keep=kept)
        predictions = (torch.cat([y for y, _ in kept]), torch.cat([g for _, g in kept])) if kept else None
    metrics = _metrics(plan, trainer, status, test_loss, test_acc, has_model, wall)
    if has_model:  # model.safetensors first: model.pt, written last, marks the pair complete
        state = standard_state(trainer.model)
        run_dir.save_safetensors(SAFE_WEIGHTS, state, data.record(), epoch=len(history), version=__version__)
        run_dir.save(WEIGHTS, {"spec": resolved_spec(checked), "data": data.record(),
                               "state_dict": state, "epoch": len(history), "netspec": __version__})
    if not history:  # every finished epoch already wrote its history
        run_dir.write_text("history.csv", history_csv(history))
    run_dir.write_json(METRICS, metrics.to_dict())
    reporter.finished(run_dir, checked, metrics, history, trainer.model, data, predictions)
    return metrics


def _batchnorm(plan: Plan) -> str | None:
    """How BatchNorm statistics were taken when several processes trained: each over its own share
    of the batch (DDP's default), or over all of it (SyncBatchNorm)."""
    if plan.ranks.size == 1 or not _has_batchnorm(plan.checked):
        return None
    return "synchronised" if plan.spec.train.sync_batchnorm else "per process"


def _metrics(plan: Plan, trainer: Trainer, status: str, test_loss, test_acc, has_model: bool, wall: float) -> Metrics:
    spec, analysis, history, data, device = plan.spec, plan.checked.analysis, trainer.history, trainer.data, plan.device
    validated = len(data.val) > 0
    best = max(history, key=lambda h: h.val_acc) if history and validated else None
    target = plan.checked.target_accuracy
    train_seconds = sum(h.seconds for h in history)
    return Metrics(
        name=spec.name, status=status, test_accuracy=test_acc, test_loss=test_loss, target_accuracy=target,
        passed=None if target is None or test_acc is None else test_acc >= target,
        model_epoch=len(history) if has_model else None,
        best_val_accuracy=best.val_acc if best else None, best_epoch=best.epoch if best else None,
        final_val_accuracy=history[-1].val_acc if history and validated else None,
        epochs_completed=len(history), epochs_planned=spec.train.epochs,
        params=analysis.params, draft=plan.checked.draft, hidden_units=analysis.hidden_units, limit=plan.limit,
        train_size=len(data.train), train_available=data.train_available, val_size=len(data.val),
        test_size=len(data.test), dataset=spec.data.dataset, loading=data.loading,
        device=str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        **plan.ranks.record(), batchnorm=_batchnorm(plan), speed=asdict(trainer.speed), evaluated_in=trainer.speed.precision,
        seed=spec.train.seed, train_seconds=train_seconds,
        seconds_per_epoch=train_seconds / len(history) if history else None, wall_seconds=wall,
        versions=versions(), command=" ".join(sys.argv))


def check_run_spec(run_dir: RunDir) -> tuple[Checked, list[str]]:
    """The run's spec, checked against the rule sets recorded when it ran (their content, in
    rules.json), so a moved folder or a later change to a shipped rule set never refuses an old
    run. Returns notes saying where today's rules would judge it differently."""
    if not (run_dir / RULES_RECORD).is_file():  # folders from before rules.json
        return check_document(load_file(run_dir / SPEC_FILE), base_dir=run_dir.path, read_data=False), []
    record = run_dir.read_json(RULES_RECORD)
    try:
        recorded = [rules_from_dict(d) for d in record]
    except (TypeError, KeyError, ValueError, AttributeError):
        raise CheckpointError(f"{run_dir / RULES_RECORD} is not a record of rule sets") from None
    doc = load_file(run_dir / SPEC_FILE)
    checked = check_document(doc, rule_sets=recorded, base_dir=run_dir.path, read_data=False)
    notes = []
    if checked.draft:  # its fixed settings were waived on purpose: that is no news from today's rules
        notes.append("a draft run (`--draft`: not gradable); it waived " + "; ".join(checked.waived))
    ref = checked.spec.rules
    if ref:
        try:
            check_document(load_file(run_dir / SPEC_FILE), base_dir=run_dir.path, read_data=False, draft=checked.draft)
        except SpecError as e:
            notes.append(f"today's rules '{ref}' would refuse this run (it was checked against the rules recorded "
                         f"in {RULES_RECORD} when it ran): " + "; ".join(p.message for p in e.problems))
    return checked, notes


def load_run(path: str | Path, device: str = "cpu"):
    """(run folder, checked spec, model with the saved weights, notes) of a run folder."""
    run_dir = RunDir.open(path)
    checked, notes = check_run_spec(run_dir)
    weights = run_dir.weights_name()  # model.safetensors when there is one: no pickle machinery
    state = run_dir.load_weights(weights)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave torch's RNG alone
        model = build_model(checked.spec, device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir / weights} does not match {run_dir / SPEC_FILE}: {first_line(e)}") from None
    return run_dir, checked, model, notes


def evaluate_run(path: str | Path, data_dir=None) -> dict:
    run_dir, checked, model, notes = load_run(path)
    device = torch.device("cpu")
    if data_dir is None:  # the data the run used, not a download
        data_dir = recorded_data_dir(_read_run_record(run_dir))
    data = load_data(checked, device, data_dir)  # the whole test set, as every run is tested
    speed = resolve_speed(checked.spec, device)  # the run's own precision and layout (spec.yaml holds them)
    net = logits_model(arrange(model, speed), checked.analysis.softmax_head)
    loss, acc = evaluate(net, data.test, checked.spec.train.eval_batch_size, speed)
    recorded = read_metrics(run_dir)
    ran_on = recorded.device or ""
    if ran_on and not ran_on.startswith("cpu") and speed.precision != "fp32":
        notes.append(f"the run trained and tested on {ran_on}; {speed.precision} arithmetic on this CPU may round "
                     f"differently, so the accuracy can differ in the last digits")
    return {"run": str(run_dir.path), "test_accuracy": acc, "test_loss": loss, "test_size": len(data.test),
            "precision": speed.precision, "speed": speed.describe(),
            "recorded_test_accuracy": recorded.test_accuracy, "recorded_test_size": recorded.test_size,
            "model_epoch": recorded.model_epoch, "target_accuracy": checked.target_accuracy, "notes": notes}
