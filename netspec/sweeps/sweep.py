"""Sweeps: search over spec settings with Optuna, every trial an ordinary run.

The space (netspec.sweeps.space) comes from the spec's `sweep:` section and/or the command line
(`--grid key=v1,v2`, `--range key=low:high[:log][:int]`). Before any trial starts, the whole
space is checked against the spec's rules: a swept setting that a rule fixes, or values that
break a budget, are refused up front.

The study (netspec.sweeps.study) lives in a journal file in the sweep folder (or, with
`--storage`, in a database), so an interrupted sweep run again continues where it stopped, and
several processes (netspec.runner.stop), or machines sharing a database, work on one study.
The best trial is chosen on validation accuracy; its test accuracy is reported, never used to
choose.
"""
from __future__ import annotations

import os
import pickle
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import optuna

from netspec.check.checker import check_document
from netspec.errors import Interrupted, Problem, RunError, SpecError
from netspec.runner import stop
from netspec.runner.metrics import Status
from netspec.runner.stop import check_workers, run_processes, worker_process
from netspec.runner.run import Reporter, run
from netspec.sweeps.space import Space, budget, check_space, decode_value, encode_value, make_space, with_values
from netspec.sweeps.study import (ahead, base_record, check_same_base, check_same_space, make_sampler, open_study,
                                  recover, space_record, spent, trial_seed, twin)
from netspec.runner.observer import Observer, Observers
from netspec.trackers import close_sweep, known, make_trackers, open_sweep
from netspec.spec.loader import load_file
from netspec.spec.overrides import apply_overrides


@dataclass(frozen=True)
class SweepJob:
    """What a sweep searches and where: plain and picklable, so that the command and every worker
    process derive the same spec, space and study from it. The fields are the command's options."""

    spec_path: str
    grid: tuple = ()  # --grid key=v1,v2
    ranges: tuple = ()  # --range key=low:high[:log][:int]
    sampler: str | None = None
    trials: int | None = None
    prune: bool | None = None
    overrides: tuple = ()  # --set: the base spec of every trial
    imposed: tuple = ()  # --rules
    draft: bool = False  # trials may override the rules' fixed settings (not gradable)
    storage: str | None = None
    out: str | None = None  # the sweep folder; None: runs/<name>-sweep
    data_dir: str | None = None
    limit: int | None = None
    log: tuple = ()  # --log: the trackers every trial reports to
    log_parents: tuple = ()  # (tracker, its record of the sweep: an MLflow parent run id), opened by sweep()

    @classmethod
    def of(cls, spec_path, **settings) -> "SweepJob":
        """A job from keyword settings as a caller writes them (lists, paths)."""
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"sweep() got unknown settings: {', '.join(sorted(unknown))}")
        if isinstance(settings.get("log"), str):  # log="mlflow": one tracker
            settings["log"] = [settings["log"]]
        plain = {k: (tuple(v) if isinstance(v, list) else str(v) if isinstance(v, Path) else v)
                 for k, v in settings.items()}
        return cls(str(spec_path), **plain)

    def folder(self, name: str) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"{name}-sweep"


@dataclass(frozen=True)
class _Work:
    """A worker process's share: the job, and the hooks it calls (pickled by reference: a worker
    writes the same run folders and tells of trials as the command would)."""

    job: SweepJob
    reporter: Reporter | None
    on_trial: Callable | None


@dataclass
class SweepResult:
    folder: Path
    study: optuna.Study
    space: Space


class _Pruning(Observer):
    """Reports each epoch's validation accuracy to Optuna and stops hopeless trials (the last of a
    trial's observers: the others have seen the epoch when it stops the trial)."""

    def __init__(self, trial: optuna.Trial, prune: bool):
        self.trial, self.prune = trial, prune

    def epoch(self, stats):
        self.trial.report(stats.val_acc, stats.epoch)
        if self.prune and self.trial.should_prune():
            return f"pruned after epoch {stats.epoch} (val acc {stats.val_acc:.4f})"
        return None



def sweep(job: SweepJob | str | Path, *, workers: int = 1, reporter: Reporter | None = None,
          observer: Callable[[optuna.Trial, dict], Observer] | None = None,
          on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
          **settings) -> SweepResult:
    """Run (or continue) a sweep: `job` is a SweepJob, or a spec path with the job's settings as
    keywords (grid=[...], out=..., limit=...).

    `workers` > 1 starts that many processes on the one study, each with its share of the CPU
    cores; any number of `netspec sweep` commands, on this machine or (with a shared storage) on
    others, may work on the same study at once. `observer(trial, values)` gives each trial's
    observer and `on_trial(study, trial)` is told of each finished one; with workers, the trials
    run in the worker processes, so `on_trial` must be picklable and `observer` is not used."""
    if isinstance(job, SweepJob) and settings:
        raise TypeError("give the settings in the SweepJob, or a spec path with the settings as keywords")
    job = job if isinstance(job, SweepJob) else SweepJob.of(job, **settings)
    check_workers(workers)
    if workers > 1 and on_trial is not None and not _picklable(on_trial):
        raise TypeError("with workers, on_trial runs in the worker processes and must be picklable "
                        "(a top-level function or class instance, not a closure)")
    known(job.log)  # an unknown tracker's name, before anything is made
    doc, space, base = _derive(job, whole=True)
    if base.spec.data.validation == 0:
        raise SpecError([Problem(job.spec_path, 0, 0, "data.validation",
                                 "a sweep chooses on validation accuracy, and data.validation is 0",
                                 "hold out some training images, e.g. data.validation: 5000")])
    folder = job.folder(base.spec.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot write the sweep folder {folder}: {e.strerror or e}") from None
    verbosity = optuna.logging.get_verbosity()  # process-wide: restored below
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by netspec, with their reason
    try:
        study, heartbeats = open_study(folder, base.spec.name, job.storage, space, base.spec.train.seed)
        _claim(study, job, space, base, folder)
        recover(study, heartbeats)
        job = replace(job, log_parents=open_sweep(job.log, folder, base.spec.name))
        status = Status.STOPPED
        with stop.listening(hold=True), _closing(job.log_parents, lambda: status):
            try:
                if workers > 1:
                    run_processes(_worker, _Work(job, reporter, on_trial), workers, folder)
                else:
                    _optimize(study, doc, space, _Work(job, reporter, on_trial), observer, base.spec.train.seed)
                if stop.requested():
                    raise Interrupted("stopped between trials", folder)
                status = Status.FINISHED
            except Interrupted:
                status = Status.INTERRUPTED
                raise Interrupted(f"sweep interrupted; {folder} keeps every finished trial. Run the same netspec "
                                  f"sweep command again to continue (the interrupted trial runs again)", folder) from None
        if workers > 1:
            study, _ = open_study(folder, base.spec.name, job.storage, space, base.spec.train.seed)
        return SweepResult(folder, study, space)
    finally:
        optuna.logging.set_verbosity(verbosity)


@contextmanager
def _closing(parents, status: Callable[[], Status]):
    """The trackers' records of the sweep closed when its trials end (as finished, interrupted or stopped)."""
    try:
        yield
    finally:
        close_sweep(parents, status())


def _claim(study: optuna.Study, job: SweepJob, space: Space, base, folder: Path) -> None:
    """Refuse to continue a study of other data, another space or another spec; then record this
    job's, for the next rerun to be checked against."""
    recorded_limit = study.user_attrs.get("limit", "unset")
    if recorded_limit != "unset" and recorded_limit != job.limit:
        shown = lambda v: "the full training set" if v is None else f"--limit {v}"  # noqa: E731
        raise RunError(f"this sweep's trials trained on {shown(recorded_limit)}; rerunning it with {shown(job.limit)} "
                       f"would rank trials trained on different data side by side. Rerun with the same --limit, "
                       f"or start a new sweep with --out")
    check_same_space(study, space, folder)
    check_same_base(study, base, folder)
    study.set_user_attr("limit", job.limit)
    study.set_user_attr("draft", job.draft)  # trials may break the rules' fixed settings: not gradable
    study.set_user_attr("space", space_record(space))
    study.set_user_attr("base", base_record(base))


def _derive(job: SweepJob, whole: bool = False):
    """The spec (with --set applied), the search space and the checked base spec of a sweep:
    what the command and every worker process derive from the same job."""
    doc = load_file(job.spec_path)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), "a spec is a mapping of keys")])
    if job.overrides:  # --set: the base spec of every trial (e.g. fewer epochs for a quick sweep)
        apply_overrides(doc, list(job.overrides))
    base_dir = Path(job.spec_path).parent
    if whole:  # the sweep section itself, once, in the command
        check_document(with_values(doc, {}, keep_sweep=True), imposed=job.imposed, base_dir=base_dir, draft=job.draft)
    space = make_space(doc, list(job.grid), list(job.ranges), job.sampler, job.trials, job.prune)
    return doc, space, check_space(doc, space, job.imposed, base_dir, job.draft)


def _suggest(trial: optuna.Trial, space: Space) -> dict:
    values = {}
    for key, options in space.grid.items():
        values[key] = decode_value(trial.suggest_categorical(key, [encode_value(o) for o in options]))
    for key, r in space.ranges.items():
        low, high = r.bounds()
        values[key] = (trial.suggest_int(key, low, high, log=r.log) if r.integer
                       else trial.suggest_float(key, low, high, log=r.log))
    return values


def _optimize(study, doc, space: Space, work: _Work, observer, seed: int) -> None:
    job = work.job
    folder, base_dir = job.folder(study.study_name), Path(job.spec_path).parent
    limit_of_trials = budget(space)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", [socket.gethostname(), os.getpid()])
        started = ahead(trial.study, trial.number)
        if started >= limit_of_trials:  # other workers started the last trials of the budget meanwhile
            trial.set_user_attr("over_budget", started)
            trial.study.stop()
            raise optuna.TrialPruned(f"the budget of {limit_of_trials} trials is taken by earlier trials")
        if space.sampler != "grid":  # the grid sampler hands out distinct points itself
            trial.study.sampler = make_sampler(space, trial_seed(seed, trial.number))
        values = _suggest(trial, space)
        if space.sampler == "grid":
            # Optuna's GridSampler hands out a grid point that is still running once every point has
            # been started (its docs: all points must finish before it stops). Another worker already
            # trains this one: record the duplicate without training, and let this worker stop.
            same = twin(trial.study, trial)
            if same is not None:
                trial.set_user_attr("duplicate_of", same)
                trial.study.stop()
                raise optuna.TrialPruned(f"trial {same} already trains these settings")
        try:
            checked = check_document(with_values(doc, values), imposed=job.imposed, base_dir=base_dir, draft=job.draft)
        except SpecError as e:  # a combination the rules or shapes refuse: a failed trial with its reason, never retried
            trial.set_user_attr("error", "; ".join(p.message for p in e.problems))
            raise RunError(trial.user_attrs.get("error", str(e))) from None
        inner = observer(trial, values) if observer else None
        return _train_trial(trial, checked, folder / f"trial-{trial.number:03d}", work, Observers([inner]), space.prune)

    def at_budget(study: optuna.Study, _trial) -> None:  # the budget of the study, shared by every worker
        if spent(study) >= limit_of_trials or stop.requested():  # or a stop request, between trials
            study.stop()

    on_trial = work.on_trial
    callbacks = [at_budget] + ([lambda s, t: on_trial(s, t)] if on_trial else [])
    if spent(study) < limit_of_trials:
        study.optimize(objective, callbacks=callbacks, catch=(RunError,))


def _train_trial(trial: optuna.Trial, checked, trial_dir: Path, work: _Work, observer: Observers, prune: bool) -> float:
    """A trial's run, in its own folder, marked as it ends: its validation accuracy; pruned,
    interrupted (to run again) or failed for good (never run again)."""
    job = work.job
    if trial_dir.exists():
        shutil.rmtree(trial_dir)
    trial.set_user_attr("run_dir", str(trial_dir))
    trial.set_user_attr("params_count", checked.analysis.params)
    trackers = make_trackers(job.log, parents=dict(job.log_parents), check=False)  # checked by sweep()
    try:
        result = run(checked, out=trial_dir, data_dir=job.data_dir, limit=job.limit, reporter=work.reporter,
                     observer=Observers([*observer.observers, *trackers, _Pruning(trial, prune)]))
    except Interrupted:
        trial.set_user_attr("interrupted", True)  # to run again when the sweep continues
        raise
    except RunError as e:
        trial.set_user_attr("error", str(e))  # never run again
        raise
    m = result.metrics
    if m.status is Status.STOPPED:  # pruned: its folder is complete, at the epoch it stopped
        raise optuna.TrialPruned(m.reason)
    trial.set_user_attr("test_accuracy", m.test_accuracy)
    trial.set_user_attr("seconds", m.train_seconds)
    trial.set_user_attr("train_size", m.train_size)
    return m.final_val_accuracy  # the saved model's, the one its test accuracy belongs to


def _worker(work: _Work, threads: int, parent: int) -> None:
    """One worker process: its share of the cores, then trials until the study's budget is spent.
    Stopped (`worker_process`), its trial is marked interrupted and it exits without a traceback."""
    with worker_process(parent):
        import torch

        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        doc, space, base = _derive(work.job)
        folder = work.job.folder(base.spec.name)
        study, _ = open_study(folder, base.spec.name, work.job.storage, space, base.spec.train.seed)
        _optimize(study, doc, space, work, None, base.spec.train.seed)


def _picklable(value) -> bool:
    try:
        return bool(pickle.dumps(value))
    except Exception:  # noqa: BLE001 - closures and lambdas are not
        return False
