"""A sweep's study: where Optuna keeps it (a journal file, or a database with heartbeats), what it
must hold to be continued (the same space and base spec), and the bookkeeping of its trials:
which count, which are spent against the budget, which run again after a stop."""
from __future__ import annotations

import json
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from netspec.check.checker import Checked
from netspec.errors import first_line, RunError
from netspec.runner.rundir import process_alive
from netspec.sweeps.space import Space, encode_value


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number` of a sweep whose spec says `seed`: every trial its own
    stream, the same on every rerun and in whichever worker draws it (workers seeded alike would
    propose the same values, and a rerun with more --trials would repeat the earlier ones)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def make_sampler(space: Space, seed: int):
    if space.sampler == "grid":
        return optuna.samplers.GridSampler({k: [encode_value(o) for o in v] for k, v in space.grid.items()}, seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(folder: Path, name: str, storage: str | None, space: Space, seed: int) -> tuple[optuna.Study, bool]:
    """The study, in the storage Optuna recommends for the case (its FAQ and docs):

    - no --storage: a JournalStorage file (`study.journal` in the sweep folder), which several
      processes on one machine share safely (SQLite is not for parallel optimization);
    - --storage URL (PostgreSQL, MySQL, SQLite...): an RDBStorage with Optuna's heartbeats, so a
      worker that dies has its trial failed after the grace period and retried once
      (RetryHeartbeatStaleTrialCallback), on any machine sharing the database.

    Returns (study, heartbeats): whether Optuna itself watches for dead workers.
    """
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if space.prune else optuna.pruners.NopPruner()
    try:
        if storage is None:
            repair_journal(folder / "study.journal")
            backend = optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))
            store, heartbeats = optuna.storages.JournalStorage(backend), False
        else:
            store, heartbeats = rdb_storage(storage), True
        try:
            study = optuna.create_study(study_name=name, storage=store, load_if_exists=True, direction="maximize",
                                        sampler=make_sampler(space, seed), pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it at the same moment
            study = optuna.load_study(study_name=name, storage=store, sampler=make_sampler(space, seed), pruner=pruner)
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


def space_record(space: Space) -> dict:
    return json.loads(json.dumps({"grid": space.grid, "ranges": {k: vars(r) for k, r in space.ranges.items()},
                                  "sampler": space.sampler}))


def check_same_space(study: optuna.Study, space: Space, folder: Path) -> None:
    """A study holds the trials of one search space; an edited space is a new study."""
    old, new = study.user_attrs.get("space"), space_record(space)
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


def recover(study: optuna.Study, heartbeats: bool) -> None:
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


def base_record(checked: Checked) -> dict:
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


def check_same_base(study: optuna.Study, base: Checked, folder: Path) -> None:
    """A study ranks trials of one base spec; a rerun after editing the spec or --set is refused
    with what changed (its old leaderboard would otherwise pass for the new spec's)."""
    old = study.user_attrs.get("base")
    new = base_record(base)
    if old is None or old == new:
        return
    before, after = _flat(old), _flat(new)
    changes = [f"{k}: {before.get(k, '(absent)')} -> {after.get(k, '(absent)')}"
               for k in sorted(set(before) | set(after)) if before.get(k, "(absent)") != after.get(k, "(absent)")]
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    raise RunError(f"{folder} holds a sweep of another spec ({shown}); its trials trained something else, and its "
                   f"leaderboard would pass for this spec's. Start a new sweep with --out, or undo the change")


def twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
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


def uses_budget(t) -> bool:
    """Finished, pruned, or failed for a reason (an interrupted or killed trial runs again instead)."""
    return counted(t) and (t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                           or (t.state == TrialState.FAIL and "error" in t.user_attrs))


def spent(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if uses_budget(t))


def ahead(study: optuna.Study, number: int) -> int:
    """Trials before `number` that hold a share of the budget: spent, or running. Ordered by trial
    number, so of two workers that start at once exactly one trial is over the budget, not both."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and (
        uses_budget(t) or (counted(t) and t.state == TrialState.RUNNING)))
