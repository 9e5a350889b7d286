"""Sweeps: search over spec settings with Optuna, every trial an ordinary run.

The space comes from the spec's `sweep:` section and/or the command line
(`--grid key=v1,v2`, `--range key=low:high[:log][:int]`). Before any trial
starts, the whole space is checked against the spec's rules: a swept setting
that a rule fixes, or values that break a budget, are refused up front.

The study lives in a journal file in the sweep folder (or, with `--storage`,
in a database), so an interrupted sweep run again continues where it stopped,
and several processes, or machines sharing a database, work on one study. The best trial is chosen on
validation accuracy; its test accuracy is reported, never used to choose.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from netspec.errors import first_line, Interrupted, NetspecError, os_error_text, Problem, RunError, SpecError
from netspec.runner.run import Reporter, run
from netspec.runner.rundir import process_alive
from netspec.spec.datasets import memory_bytes
from netspec.runner.train import Observer
from netspec.spec.loader import Document, load_file, load_text
from netspec.builder.check import Checked, check_document
from netspec.spec.overrides import apply_overrides

MAX_GRID = 10_000  # combinations; a larger grid is surely a mistake


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def bounds(self) -> tuple:
        """The values tried at the ends: for integers ceil(low)..floor(high), one rule for
        checking and for sampling."""
        return (math.ceil(self.low), math.floor(self.high)) if self.integer else (self.low, self.high)


@dataclass
class Space:
    grid: dict[str, list] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    sampler: str = "grid"  # grid | tpe | random
    trials: int | None = None  # budget; grid: its size
    prune: bool = False

    @property
    def keys(self) -> list[str]:
        return list(self.grid) + list(self.ranges)

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1

    def combinations(self) -> list[dict]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]


def parse_grid(text: str) -> tuple[str, list]:
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise SpecError([Problem(f"--grid {text}", 0, 0, "", "expected key=v1,v2,... e.g. train.batch_size=32,64,128")])
    parsed = [load_text(v.strip(), f"--grid {text}").data for v in values.split(",")]
    return key.strip(), parsed


def parse_range(text: str) -> tuple[str, Range]:
    key, sep, rest = text.partition("=")
    parts = rest.split(":")
    where = f"--range {text}"
    try:
        if not sep or len(parts) < 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
        flags = set(parts[2:])
        if flags - {"log", "int"} or not low < high or ("log" in flags and low <= 0):
            raise ValueError
        if "int" in flags and (math.ceil(low) > math.floor(high) or ("log" in flags and math.ceil(low) < 1)):
            raise SpecError([Problem(where, 0, 0, key.strip(), f"no whole number {'>= 1 ' if 'log' in flags else ''}lies "
                                     f"between {low} and {high}", "integer ranges use ceil(low)..floor(high)")])
    except ValueError:
        raise SpecError([Problem(where, 0, 0, "", "expected key=low:high[:log][:int] with low < high "
                                                  "(and low > 0 for log), e.g. train.optimizer.lr=1e-4:1e-2:log")]) from None
    return key.strip(), Range(low, high, "log" in flags, "int" in flags)


def make_space(doc: Document, grid: list[str], ranges: list[str], sampler: str | None,
               trials: int | None, prune: bool | None) -> Space:
    """The spec's `sweep:` section, extended (and overridden key by key) by the command line."""
    section = doc.data.get("sweep") or {} if isinstance(doc.data, dict) else {}
    space = Space(
        grid={k: list(v) for k, v in (section.get("grid") or {}).items()},
        ranges={k: Range(v["low"], v["high"], v.get("log", False), v.get("int", False))
                for k, v in (section.get("range") or {}).items()},
        sampler=section.get("sampler", "grid"), trials=section.get("trials"), prune=section.get("prune", False),
    )
    for text in grid:
        k, v = parse_grid(text)
        space.ranges.pop(k, None)
        space.grid[k] = v
    for text in ranges:
        k, r = parse_range(text)
        space.grid.pop(k, None)
        space.ranges[k] = r
    if sampler:
        space.sampler = sampler
    if trials is not None:
        if trials < 1:
            raise SpecError([Problem(f"--trials {trials}", 0, 0, "", "the trial budget must be at least 1")])
        space.trials = trials
    if prune is not None:
        space.prune = prune
    if not space.keys:
        raise SpecError([Problem(doc.file, 0, 0, "sweep", "nothing to sweep: add a sweep: section or --grid/--range")])
    if space.ranges and space.sampler == "grid":
        space.sampler = "tpe"  # a continuous range cannot be a grid
    if space.grid_size() > MAX_GRID:
        raise SpecError([Problem(doc.file, 0, 0, "sweep", f"the grid has {space.grid_size():,} combinations; at most {MAX_GRID:,}")])
    return space


def _with(doc: Document, values: dict, keep_sweep: bool = False) -> Document:
    """A copy of the spec with `values` set (and without its sweep section, unless kept)."""
    trial = Document(copy.deepcopy(doc.data), doc.file, doc.positions, doc.key_positions, doc.texts, dict(doc.overrides))
    if not keep_sweep:
        trial.data.pop("sweep", None)
    apply_overrides(trial, [f"{k}={_yaml(v)}" for k, v in values.items()])
    return trial


def _yaml(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: lists, numbers and strings round-trip


def check_space(doc: Document, space: Space, imposed: tuple[str, ...], base_dir: Path, draft: bool = False) -> Checked:
    """Refuse, before any training, a sweep that varies a fixed setting (unless a draft) or breaks a rule."""
    base = check_document(_with(doc, {}), imposed=imposed, base_dir=base_dir, draft=draft)
    problems = []
    for rules in base.rules if not draft else ():
        fixed = dict(rules.fixed)
        for key in space.keys:
            if key in fixed:
                values = space.grid.get(key) or list(space.ranges[key].bounds())
                if any(v != fixed[key] for v in values):
                    problems.append(Problem(
                        "sweep", 0, 0, key,
                        f"rules '{rules.name}' fix {key} at {fixed[key]}; the sweep tries {values}",
                        "remove it from the sweep: fixed settings may not be tuned"))
    if problems:
        raise SpecError(problems)
    # every grid combination, and every corner of the ranges, must pass the rules
    corners = [dict(zip(space.ranges, c)) for c in itertools.product(
        *([r.bounds() for r in space.ranges.values()]))] if space.ranges else [{}]
    for combo in space.combinations():
        for corner in corners:
            values = {**combo, **corner}
            try:
                check_document(_with(doc, values), imposed=imposed, base_dir=base_dir, draft=draft)
            except SpecError as e:
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                problems += [Problem("sweep", 0, 0, p.path, f"with {shown}: {p.message}", p.hint) for p in e.problems]
    if problems:
        raise SpecError(problems)
    return base


def encode_value(value):
    """Optuna's choices are scalars; a list or mapping (a whole layer list) travels as JSON text."""
    return _JSON + json.dumps(value) if isinstance(value, (list, dict)) else value


def decode_value(value):
    return json.loads(value[len(_JSON):]) if isinstance(value, str) and value.startswith(_JSON) else value


_JSON = "json:"


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number` of a sweep whose spec says `seed`: every trial its own
    stream, the same on every rerun and in whichever worker draws it (workers seeded alike would
    propose the same values, and a rerun with more --trials would repeat the earlier ones)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _sampler(space: Space, seed: int):
    if space.sampler == "grid":
        return optuna.samplers.GridSampler({k: [encode_value(o) for o in v] for k, v in space.grid.items()}, seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class _Pruning(Observer):
    """Reports each epoch's validation accuracy to Optuna and stops hopeless trials."""

    def __init__(self, trial: optuna.Trial, inner: Observer | None, prune: bool):
        self.trial, self.inner, self.prune = trial, inner or Observer(), prune

    def start(self, **kw):
        self.inner.start(**kw)

    def step(self, **kw):
        self.inner.step(**kw)

    def epoch(self, stats):
        self.inner.epoch(stats)
        self.trial.report(stats.val_acc, stats.epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {stats.epoch} (val acc {stats.val_acc:.4f})")


@dataclass
class SweepResult:
    folder: Path
    study: optuna.Study
    space: Space


def open_study(folder: Path, name: str, storage: str | None, space: Space, seed: int) -> tuple[optuna.Study, bool]:
    """The study, in the storage Optuna recommends for the case (its FAQ and docs):

    - no --storage: a JournalStorage file (`study.journal` in the sweep folder), which several
      processes on one machine share safely (SQLite is not for parallel optimization); a folder
      from an earlier netspec version that holds `study.db` keeps using it;
    - --storage URL (PostgreSQL, MySQL, SQLite...): an RDBStorage with Optuna's heartbeats, so a
      worker that dies has its trial failed after the grace period and retried once
      (RetryHeartbeatStaleTrialCallback), on any machine sharing the database.

    Returns (study, heartbeats): whether Optuna itself watches for dead workers.
    """
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if space.prune else optuna.pruners.NopPruner()
    try:
        if storage is None and not (folder / "study.db").is_file():
            repair_journal(folder / "study.journal")
            backend = optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))
            store, heartbeats = optuna.storages.JournalStorage(backend), False
        else:
            url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
            store = rdb_storage(url)
            heartbeats = True
        try:
            study = optuna.create_study(study_name=name, storage=store, load_if_exists=True, direction="maximize",
                                        sampler=_sampler(space, seed), pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it at the same moment
            study = optuna.load_study(study_name=name, storage=store, sampler=_sampler(space, seed), pruner=pruner)
    except Exception as e:  # bad URL, unreachable server, unreadable file: one line for the user
        raise RunError(f"cannot open the study storage {storage or folder}: {first_line(e)}") from None
    return study, heartbeats


def repair_journal(path: Path) -> None:
    """A journal whose last record was cut off (a crash, a full disk) made whole, under the lock
    Optuna's own writers take: Optuna skips a cut last line when reading, but its next record would
    be appended onto it, and the study would never open again. A cut line that is a whole record
    gets its newline; anything else of it is dropped (no finished trial is in it: Optuna reads
    none of it)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    while not lock.acquire():
        time.sleep(0.05)
    try:
        with open(path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            if b"\n" not in tail:  # a last line longer than the tail read: read it all
                f.seek(0)
                tail = f.read()
            cut = tail.rfind(b"\n") + 1  # the start of the last line, within the tail read
            try:
                json.loads(tail[cut:])
                f.write(b"\n")
            except ValueError:
                f.truncate(size - len(tail) + cut)
    finally:
        lock.release()


def rdb_storage(url: str, attempts: int = 5):
    """Optuna's RDBStorage with heartbeats. Workers starting together race to create the tables
    (PostgreSQL answers one of them with a unique-key violation): the loser tries again."""
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(attempts):
            try:
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            except Exception:  # noqa: BLE001 - the last attempt's error is reported by the caller
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 + random.random() * (attempt + 1))


HEARTBEAT_S, GRACE_S = 30, 120  # Optuna's heartbeat for RDB storages: a worker silent for 2 minutes is dead


def _space_record(space: Space) -> dict:
    return json.loads(json.dumps({"grid": space.grid, "ranges": {k: vars(r) for k, r in space.ranges.items()},
                                  "sampler": space.sampler}))


def _check_same_space(study: optuna.Study, space: Space, folder: Path) -> None:
    """A study holds the trials of one search space; an edited space is a new study."""
    old, new = study.user_attrs.get("space"), _space_record(space)
    if old is None or old == new:
        return
    changes = []
    for kind in ("grid", "ranges"):
        for key in sorted(set(old.get(kind, {})) | set(new.get(kind, {}))):
            before, after = old.get(kind, {}).get(key), new.get(kind, {}).get(key)
            if before != after:
                changes.append(f"{key}: {before if before is not None else '(not swept)'} -> "
                               f"{after if after is not None else '(not swept)'}")
    if old.get("sampler") != new.get("sampler"):
        changes.append(f"sampler: {old.get('sampler')} -> {new.get('sampler')}")
    raise RunError(f"{folder} holds a sweep over another search space ({'; '.join(changes)}); its trials would be "
                   f"mixed with this one's. Start a new sweep with --out (or delete the folder)")


def _recover(study: optuna.Study, heartbeats: bool) -> None:
    """Trials that will never finish run again, once: a trial that failed for no reason of its own
    (FAIL without an "error": cut short by Ctrl-C or a stop, marked interrupted or, when the
    signal landed where the mark could not be written, not) and, in a journal study, a RUNNING
    trial whose worker process on this machine is gone (killed). A trial refused for a reason
    (the rules, a shape, a non-finite loss) is not retried; a RUNNING trial of a live worker is
    never touched. RDB studies leave dead workers to Optuna's heartbeats (fail_stale_trials +
    RetryHeartbeatStaleTrialCallback)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.number in retried or t.user_attrs.get("retry_of") is not None:
            continue
        stale = (t.state == TrialState.RUNNING and not heartbeats and "worker" in t.user_attrs
                 and not process_alive(*t.user_attrs["worker"]))
        if stale:
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # finished meanwhile after all
                continue
        elif not (t.state == TrialState.FAIL and "error" not in t.user_attrs):
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _budget(space: Space) -> int:
    return space.grid_size() if space.sampler == "grid" and not space.trials else (space.trials or 20)


def sweep(spec_path: str | Path, *, grid: list[str] = (), ranges: list[str] = (), sampler: str | None = None,
          trials: int | None = None, prune: bool | None = None, storage: str | None = None,
          out: str | Path | None = None, imposed: tuple[str, ...] = (), data_dir=None, limit: int | None = None,
          overrides: tuple[str, ...] = (), reporter: Reporter | None = None, workers: int = 1,
          observer: Callable[[optuna.Trial, dict], Observer] | None = None,
          on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
          draft: bool = False) -> SweepResult:
    """Run (or continue) a sweep. `workers` > 1 starts that many processes on the one study, each
    with its share of the CPU cores; any number of `netspec sweep` commands, on this machine or
    (with a shared --storage) on others, may work on the same study at once."""
    check_workers(workers)
    job = _Job(str(spec_path), tuple(grid), tuple(ranges), sampler, trials, prune, storage, None, tuple(imposed),
               None if data_dir is None else str(data_dir), limit, tuple(overrides), reporter,
               on_trial if workers > 1 and _picklable(on_trial) else None, draft)
    doc, space, base = _derive(job, whole=True)
    if base.spec.data.validation == 0:
        raise SpecError([Problem(str(spec_path), 0, 0, "data.validation",
                                 "a sweep chooses on validation accuracy, and data.validation is 0",
                                 "hold out some training images, e.g. data.validation: 5000")])
    folder = Path(out) if out else Path("runs") / f"{base.spec.name}-sweep"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot write the sweep folder {folder}: {e.strerror or e}") from None
    job = replace(job, folder=str(folder))
    verbosity = optuna.logging.get_verbosity()  # process-wide: restored below
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by netspec, with their reason
    try:
        study, heartbeats = open_study(folder, base.spec.name, storage, space, base.spec.train.seed)
        recorded_limit = study.user_attrs.get("limit", "unset")
        if recorded_limit != "unset" and recorded_limit != limit:
            shown = lambda v: "the full training set" if v is None else f"--limit {v}"  # noqa: E731
            raise RunError(f"this sweep's trials trained on {shown(recorded_limit)}; rerunning it with {shown(limit)} "
                           f"would rank trials trained on different data side by side. Rerun with the same --limit, "
                           f"or start a new sweep with --out")
        _check_same_space(study, space, folder)
        _check_same_base(study, base, folder)
        study.set_user_attr("limit", limit)
        study.set_user_attr("draft", draft)  # trials may break the rules' fixed settings: not gradable
        study.set_user_attr("space", _space_record(space))
        study.set_user_attr("base", _base_record(base))
        _recover(study, heartbeats)
        with terminate_as_interrupt():
            try:
                if workers > 1:
                    run_processes(_worker, job, workers, folder)
                else:
                    _optimize(study, doc, space, job, reporter, observer, on_trial, base.spec.train.seed)
            except (KeyboardInterrupt, Interrupted):
                raise Interrupted(f"sweep interrupted; {folder} keeps every finished trial. Run the same netspec "
                                  f"sweep command again to continue (the interrupted trial runs again)", folder) from None
        if workers > 1:
            study, _ = open_study(folder, base.spec.name, storage, space, base.spec.train.seed)
        return SweepResult(folder, study, space)
    finally:
        optuna.logging.set_verbosity(verbosity)


def check_workers(workers: int) -> None:
    """Worker processes this machine can hold: one per core, and about 1 GiB of memory each (torch
    and the data); more only thrash, and 1000 would exhaust the memory before training one trial."""
    cores, memory = os.cpu_count() or 1, memory_bytes()
    most = max(1, min(cores, memory >> 30))
    if not 1 <= workers <= most:
        raise RunError(f"--workers {workers}: give 1 to {most} (this machine has {cores} cores and "
                       f"{memory / 2**30:.0f} GiB of memory; a worker takes a core and about 1 GiB)")


@contextmanager
def terminate_as_interrupt():
    """SIGTERM (a scheduler's stop, `kill`) handled like Ctrl-C while the sweep runs: the trial is
    marked interrupted and the study stays resumable. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[float] = []  # when the interrupt last went out

    def interrupt(signum, frame):
        # once: a second SIGTERM (the parent's or the orphan watch's resend) landing while the
        # trial is being marked interrupted would cut that short and leave a plain failure; it
        # counts again only if the first evidently did not stop the process (RESEND_S later)
        now = time.monotonic()
        if raised and now - raised[-1] < RESEND_S:
            return
        raised.append(now)
        raise KeyboardInterrupt

    hook = sys.unraisablehook

    def landed_in_callback(unraisable):
        # Python may run the handler inside a weakref callback or __del__, where it prints the
        # exception as "Exception ignored" and goes on: the signal is sent again instead, a moment
        # later from a timer thread (sent from here, the handler would run here), to land in the
        # sweep's own code
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            raised.clear()  # it did not go out: the next one must
            again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
            again.daemon = True
            again.start()
        else:
            hook(unraisable)

    previous = signal.signal(signal.SIGTERM, interrupt)
    sys.unraisablehook = landed_in_callback
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook


def _base_record(checked: Checked) -> dict:
    """What every trial trains, before the swept values: the resolved spec without its sweep section."""
    record = checked.spec.to_dict()
    record.pop("sweep", None)
    return json.loads(json.dumps(record, default=str))


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}{i}.").items()} or {prefix[:-1]: []}
    return {prefix[:-1]: value}


def _check_same_base(study: optuna.Study, base: Checked, folder: Path) -> None:
    """A study ranks trials of one base spec; a rerun after editing the spec or --set is refused
    with what changed (its old leaderboard would otherwise pass for the new spec's)."""
    old = study.user_attrs.get("base")
    new = _base_record(base)
    if old is None or old == new:
        return
    before, after = _flat(old), _flat(new)
    changes = [f"{k}: {before.get(k, '(absent)')} -> {after.get(k, '(absent)')}"
               for k in sorted(set(before) | set(after)) if before.get(k, "(absent)") != after.get(k, "(absent)")]
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    raise RunError(f"{folder} holds a sweep of another spec ({shown}); its trials trained something else, and its "
                   f"leaderboard would pass for this spec's. Start a new sweep with --out, or undo the change")


def _derive(job: "_Job", whole: bool = False):
    """The spec (with --set applied), the search space and the checked base spec of a sweep:
    what the command and every worker process derive from the same job."""
    doc = load_file(job.spec_path)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), "a spec is a mapping of keys")])
    if job.overrides:  # --set: the base spec of every trial (e.g. fewer epochs for a quick sweep)
        apply_overrides(doc, list(job.overrides))
    base_dir = Path(job.spec_path).parent
    if whole:  # the sweep section itself, once, in the command
        check_document(_with(doc, {}, keep_sweep=True), imposed=job.imposed, base_dir=base_dir, draft=job.draft)
    space = make_space(doc, list(job.grid), list(job.ranges), job.sampler, job.trials, job.prune)
    return doc, space, check_space(doc, space, job.imposed, base_dir, job.draft)


@dataclass(frozen=True)
class _Job:
    """What a worker process needs to open the same study and run trials (plain, picklable)."""

    spec_path: str
    grid: tuple
    ranges: tuple
    sampler: str | None
    trials: int | None
    prune: bool | None
    storage: str | None
    folder: str | None  # set once the sweep folder exists
    imposed: tuple
    data_dir: str | None
    limit: int | None
    overrides: tuple
    reporter: Reporter | None  # pickled by reference: the worker writes the same run folders as the caller
    on_trial: Callable | None  # likewise: a picklable callable (a top-level class), told of each finished trial
    draft: bool = False  # --draft: trials may override the rules' fixed settings (not gradable)


def _optimize(study, doc, space, job: _Job, reporter, observer, on_trial, seed: int) -> None:
    folder, imposed, base_dir = Path(job.folder), job.imposed, Path(job.spec_path).parent
    data_dir, limit = job.data_dir, job.limit
    budget = _budget(space)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", [socket.gethostname(), os.getpid()])
        ahead = _ahead(trial.study, trial.number)
        if ahead >= budget:  # other workers started the last trials of the budget meanwhile
            trial.set_user_attr("over_budget", ahead)
            trial.study.stop()
            raise optuna.TrialPruned(f"the budget of {budget} trials is taken by earlier trials")
        if space.sampler != "grid":  # the grid sampler hands out distinct points itself
            trial.study.sampler = _sampler(space, trial_seed(seed, trial.number))
        values = {}
        for key, options in space.grid.items():
            values[key] = decode_value(trial.suggest_categorical(key, [encode_value(o) for o in options]))
        for key, r in space.ranges.items():
            low, high = r.bounds()
            values[key] = (trial.suggest_int(key, low, high, log=r.log) if r.integer
                           else trial.suggest_float(key, low, high, log=r.log))
        if space.sampler == "grid":
            # Optuna's GridSampler hands out a grid point that is still running once every point has
            # been started (its docs: all points must finish before it stops). Another worker already
            # trains this one: record the duplicate without training, and let this worker stop.
            twin = _twin(trial.study, trial)
            if twin is not None:
                trial.set_user_attr("duplicate_of", twin)
                trial.study.stop()
                raise optuna.TrialPruned(f"trial {twin} already trains these settings")
        try:
            checked = check_document(_with(doc, values), imposed=imposed, base_dir=base_dir, draft=job.draft)
        except SpecError as e:  # a combination the rules or shapes refuse: a failed trial with its reason, never retried
            trial.set_user_attr("error", "; ".join(p.message for p in e.problems))
            raise RunError(trial.user_attrs.get("error", str(e))) from None
        trial_dir = folder / f"trial-{trial.number:03d}"
        if trial_dir.exists():
            shutil.rmtree(trial_dir)
        trial.set_user_attr("run_dir", str(trial_dir))
        trial.set_user_attr("params_count", checked.analysis.params)
        inner = observer(trial, values) if observer else None
        try:
            result = run(checked, out=trial_dir, data_dir=data_dir, observer=_Pruning(trial, inner, space.prune),
                         limit=limit, reporter=reporter)
        except RunError as e:
            trial.set_user_attr("error", str(e))
            raise
        except (KeyboardInterrupt, Interrupted):
            trial.set_user_attr("interrupted", True)  # to run again when the sweep continues
            raise
        m = result.metrics
        trial.set_user_attr("test_accuracy", m["test_accuracy"])
        trial.set_user_attr("seconds", m["train_seconds"])
        trial.set_user_attr("train_size", m["train_size"])
        return m["final_val_accuracy"]  # the saved model's, the one its test accuracy belongs to

    def at_budget(study: optuna.Study, _trial) -> None:  # the budget of the study, shared by every worker
        if _spent(study) >= budget:
            study.stop()

    callbacks = [at_budget] + ([lambda s, t: on_trial(s, t)] if on_trial else [])
    if _spent(study) < budget:
        study.optimize(objective, callbacks=callbacks, catch=(RunError,))


def _twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """An earlier trial with the same settings that is running, finished or failed for a reason."""
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or t.params != trial.params or not counted(t):
            continue
        if t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED) or (
                t.state == TrialState.FAIL and "error" in t.user_attrs):
            return t.number
    return None


def counted(t) -> bool:
    """A trial that trained (or tried to): not a grid duplicate nor one started over the budget."""
    return "duplicate_of" not in t.user_attrs and "over_budget" not in t.user_attrs


def _uses_budget(t) -> bool:
    """Finished, pruned, or failed for a reason (an interrupted or killed trial runs again instead)."""
    return counted(t) and (t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                           or (t.state == TrialState.FAIL and "error" in t.user_attrs))


def _spent(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if _uses_budget(t))


def _ahead(study: optuna.Study, number: int) -> int:
    """Trials before `number` that hold a share of the budget: spent, or running. Ordered by trial
    number, so of two workers that start at once exactly one trial is over the budget, not both."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and (
        _uses_budget(t) or (counted(t) and t.state == TrialState.RUNNING)))


def _worker(job: _Job, threads: int, parent: int) -> None:
    """One worker process: its share of the cores, then trials until the study's budget is spent.
    The parent decides when to stop: Ctrl-C in the terminal is ignored here (the parent gets it
    too and sends SIGTERM), and a worker whose parent is gone (killed) stops by itself; either
    way its trial is marked interrupted, and the worker exits without a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with terminate_as_interrupt():
            threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
            import torch

            torch.set_num_threads(threads)
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            doc, space, base = _derive(job)
            study, _ = open_study(Path(job.folder), base.spec.name, job.storage, space, base.spec.train.seed)
            _optimize(study, doc, space, job, job.reporter, None, job.on_trial, base.spec.train.seed)
    except (KeyboardInterrupt, Interrupted):
        sys.exit(INTERRUPTED_EXIT)
    except (NetspecError, OSError) as e:  # a worker's only channel is its stderr: one line, no traceback
        print(f"error: {os_error_text(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        sys.exit(1)


INTERRUPTED_EXIT = 130


def _orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    while True:  # again every RESEND_S, in case Python swallowed the interrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(RESEND_S)


RESEND_S, KILL_S = 10, 60  # a stopped worker is told again after 10 s, and killed after a minute


def _picklable(value) -> bool:
    import pickle

    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001 - closures and lambdas are not
        return False


def run_processes(target: Callable, job, workers: int, folder: Path, what: str = "sweep") -> None:
    """`workers` processes running `target(job, threads, parent pid)`, each with its share of the
    cores, until all end. Ctrl-C or SIGTERM here is passed on to them as SIGTERM (again after
    RESEND_S, a kill after KILL_S); Interrupted if they were stopped, RunError if one failed."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=target, args=(job, threads, os.getpid()), name=f"netspec-{what}-worker-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    stopped: list[float] = []

    def stop(signum, frame):  # Ctrl-C or SIGTERM: noted, never raised (it could land in a weakref callback)
        stopped.append(time.monotonic())

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    told = None
    try:
        while alive := [p for p in procs if p.is_alive()]:  # one list: a worker may end between two looks
            alive[0].join(0.2)
            if stopped and (told is None or time.monotonic() - told > RESEND_S):
                told = time.monotonic()
                for p in procs:  # SIGTERM: the worker marks its trial interrupted and exits
                    if p.is_alive():
                        (p.kill if told - stopped[0] > KILL_S else p.terminate)()
    finally:
        for s, previous in handlers.items():
            signal.signal(s, previous)
    if stopped or any(p.exitcode == INTERRUPTED_EXIT for p in procs):  # stopped here, or from outside
        raise Interrupted(f"{what} interrupted", folder)
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise RunError(f"{len(failed)} of {workers} {what} workers stopped with an error (exit codes "
                       f"{', '.join(str(p.exitcode) for p in procs if p.exitcode)}); run the {what} again to continue")
