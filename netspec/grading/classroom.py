"""Grading a class: every submission judged by the rubric, measured in a child process under the
rubric's time and memory limits, and written to a gradebook.

The class is an Optuna study, stored as the sweeps store theirs (a journal file in the output
folder, or a database URL shared by graders on several machines): each submission is one
enqueued trial, so any number of `netspec grade` processes take submissions from one queue,
Optuna's heartbeats (database) or the worker's process id (journal) find a grader that died, and
its submission is queued again. A rerun grades only what is not graded yet, or what changed
since; nobody is graded twice.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import optuna
from optuna.trial import TrialState

from netspec.errors import first_line, Interrupted, Problem, RunError
from netspec.grading.contain import STALL_EXTRA_S, STALL_FACTOR, Clock, enter_own_group, group_memory_mb, kill_group
from netspec.grading.roster import Student, load_roster
from netspec.grading.row import GradeRow
from netspec.grading.rubric import Rubric, load_rubric
from netspec.grading.seal import seal
from netspec.grading.verdict import Entry, Item, text_digest, columns, find_entries, folder_entry, safe_name, shown
from netspec.report.gradebook import write_gradebook
from netspec.runner.rundir import process_alive
from netspec.runner import stop
from netspec.runner.stop import check_workers, run_processes, worker_process
from netspec.sweeps.study import rdb_storage, repair_journal

JOURNAL = "grade.journal"
POLL_S = 0.1


@dataclass(frozen=True)
class ClassJob:
    """What a grader process needs (plain, picklable)."""

    submissions: str
    rubric: str
    out: str
    storage: str | None = None
    data_dir: str | None = None
    on_graded: Callable | None = None  # told each finished row (a top-level function, for worker processes)
    test_digest: str = ""  # of the test data's bytes: a new test set means grading everyone again
    only: tuple[str, ...] = ()  # --only: grade these students again, and nobody else


@dataclass
class Gradebook:
    folder: Path
    rubric: Rubric
    rows: list[GradeRow]
    unlisted: list[str] = field(default_factory=list)  # submissions of nobody on the roster


@dataclass(frozen=True)
class GradeOptions:
    """How `netspec grade` was asked to grade a class (its options)."""

    out: str | Path | None = None  # the grade folder (default grades-<rubric name>)
    workers: int = 1
    storage: str | None = None  # a shared Optuna storage: several graders on one class
    data_dir: str | Path | None = None
    on_graded: Callable[[GradeRow], None] | None = None  # told of each row as it is graded
    only: Sequence[str] = ()  # grade these students again (their entry names), and nobody else
    roster: str | Path | None = None  # a CSV naming each entry's student (netspec.grading.roster)


def grade(submissions: str | Path, rubric: str | Path, options: GradeOptions | None = None, **settings) -> Gradebook:
    """Grade every submission in a folder (or continue grading it) and write the gradebook;
    `options` (or `settings`, its fields as keywords) are the command's. With `only` the gradebook
    still lists the whole class; with a `roster`, each student's name, ID and email join the
    gradebook, and gradebook-canvas.csv has a row for each of them."""
    o = options or GradeOptions(**settings)
    out, workers, storage, data_dir, on_graded, only, roster = (o.out, o.workers, o.storage, o.data_dir, o.on_graded,
                                                                o.only, o.roster)
    check_workers(workers)
    loaded = load_rubric(rubric)
    students = load_roster(roster) if roster is not None else None
    if not Path(submissions).is_dir():
        raise RunError(f"{submissions} is not a folder of submissions (one spec file or folder per student)")
    folder = Path(out) if out else Path(f"grades-{safe_name(loaded.name)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot write the grade folder {folder}: {e.strerror or e}") from None
    salt = _preflight(loaded, data_dir)
    _claim(folder, loaded)
    entries = [e for e in find_entries(submissions, salt=salt) if not _is_folder(e.path, folder)]
    only = _named(only, entries, submissions)
    job = ClassJob(str(submissions), str(rubric), str(folder), storage, None if data_dir is None else str(data_dir),
                   on_graded, salt, only)
    study = open_class(job, loaded)
    if not only:  # a regrade queues its students afresh; nobody else's failure is retried now
        _recover(study)
    _enqueue(study, entries, only)
    with stop.listening(hold=True):
        try:
            if workers > 1:
                run_processes(_worker, job, workers, folder, what="grading")
            else:
                _work(study, job, loaded, entries)
        except Interrupted:
            raise Interrupted(f"grading interrupted; {folder} keeps every finished grade. Run the same command "
                              f"again to grade the rest", folder) from None
        finally:  # the study reads what every grader wrote: the rows are the class's, once
            rows = _rows(study, loaded, entries)
            if students is not None:
                rows = _on_roster(rows, students, loaded, Path(submissions))
            unlisted = [row.student for row in rows if row.roster is None] if students is not None else []
            write_gradebook(folder, loaded.name, columns(loaded), rows, _about(loaded), roster=students is not None)
    return Gradebook(folder, loaded, rows, unlisted)


def _named(only: Sequence[str], entries: list[Entry], submissions) -> tuple[str, ...]:
    """--only's students, each an entry of the submissions folder (its file or folder name)."""
    only = (only,) if isinstance(only, str) else only
    names = {e.student for e in entries}
    unknown = [n for n in only if n not in names]
    if unknown:
        shown = ", ".join(sorted(names)[:10]) + (" ..." if len(names) > 10 else "")
        raise RunError(f"--only {', '.join(unknown)}: no such submission in {submissions} (a student is named by "
                       f"their entry there, the file name without .yaml or the folder name: {shown or 'none'})")
    return tuple(dict.fromkeys(only))


def _preflight(rubric: Rubric, data_dir) -> str:
    """The test data read once before anyone is graded (a grader without it would give every
    student a zero); returns the digest of its images and labels as read, a named set's or a
    hidden one's: a new test set, or another --data-dir's, grades everyone again."""
    import hashlib

    from netspec.errors import DataError
    from netspec.grading.measure import test_set

    try:
        test = test_set(rubric, data_dir)
    except DataError as e:
        raise RunError(f"the rubric's test data cannot be read, so nobody can be graded: {e}") from None
    h = hashlib.sha256(str(tuple(test.images.shape)).encode())
    h.update(test.images.contiguous().numpy().tobytes())
    h.update(test.labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _is_folder(path: str, folder: Path) -> bool:
    """The grade folder itself, made inside the submissions folder, is not a student."""
    try:
        return Path(path).resolve() == folder.resolve()
    except OSError:
        return False


CLAIM = "rubric.json"


def _claim(folder: Path, rubric: Rubric) -> None:
    """A grade folder belongs to one rubric: grading with another into it would overwrite its runs
    and feedback while its gradebook mixed both."""
    claim, mine = folder / CLAIM, {"name": rubric.name, "record": _rubric_record(rubric)}
    if claim.is_file():
        try:
            theirs = json.loads(claim.read_text())
        except (OSError, ValueError):
            theirs = None
        if isinstance(theirs, dict) and theirs.get("name") != rubric.name:
            raise RunError(f"{folder} holds grades of the rubric '{theirs.get('name')}', not '{rubric.name}'; "
                           f"grade into a new --out folder")
        if theirs is not None:
            return
    claim.write_text(json.dumps(mine, indent=2))


def open_class(job: ClassJob, rubric: Rubric) -> optuna.Study:
    """The class's study; refused when it was graded with another rubric (its grades would mix)."""
    folder = Path(job.out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if job.storage is None:
                repair_journal(folder / JOURNAL)
                store = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL)))
            else:
                store = rdb_storage(job.storage)
            verbosity = optuna.logging.get_verbosity()
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            try:
                study = optuna.create_study(study_name=f"grade-{safe_name(rubric.name)}", storage=store, load_if_exists=True, direction="maximize",
                                            sampler=optuna.samplers.RandomSampler(seed=0))
            finally:
                optuna.logging.set_verbosity(verbosity)
    except Exception as e:  # noqa: BLE001 - bad URL, unreadable file: one line for the user
        raise RunError(f"cannot open the grade storage {job.storage or folder / JOURNAL}: {first_line(e)}") from None
    record = _rubric_record(rubric)
    old = study.user_attrs.get("rubric")
    if old is None:
        study.set_user_attr("rubric", record)
    elif old != record:
        raise RunError(f"{folder} holds grades of another rubric (it changed since: {_changed(old, record)}); "
                       f"its grades would mix with these. Grade into a new --out folder")
    return study


def _rubric_record(rubric: Rubric) -> dict:
    fields = {k: v for k, v in vars(rubric).items() if k not in ("file", "description", "rules")}
    fields["rules"] = [r.to_dict() for r in rubric.rules]
    return json.loads(json.dumps(fields, default=str))


def _changed(old: dict, new: dict) -> str:
    return ", ".join(k for k in sorted(set(old) | set(new)) if k not in old or k not in new or old[k] != new[k])


def _counted(t) -> bool:
    return ("student" in t.user_attrs and not t.user_attrs.get("duplicate") and not t.user_attrs.get("superseded")
            and not t.user_attrs.get("deferred"))


def _recover(study: optuna.Study) -> None:
    """A submission whose grader died (its process on this machine gone), was interrupted or
    failed itself is queued again, once per failure. Databases leave dead graders to Optuna's
    heartbeats."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if not _counted(t) or t.number in retried:
            continue
        worker = t.user_attrs.get("worker")
        if t.state == TrialState.RUNNING and worker and not process_alive(*worker):
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue
        elif t.state != TrialState.FAIL:  # a grade is a COMPLETE trial, whatever the submission did:
            continue  # a FAIL is always the grader's (interrupted, killed, its test data gone)
        study.enqueue_trial({}, user_attrs={"student": t.user_attrs["student"], "source": t.user_attrs.get("source"),
                                            "retry_of": t.number})


def _enqueue(study: optuna.Study, entries: list[Entry], only: tuple[str, ...] = ()) -> None:
    """One waiting trial for each submission not graded, queued or being graded in its present form;
    with `only`, one for each of those students (unless one waits already), graded or not: a trial
    `after` the grades there are, which are no duplicate of it."""
    trials = study.get_trials(deepcopy=False)
    kept = (TrialState.WAITING,) if only else (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    have = {(t.user_attrs["student"], t.user_attrs.get("source")) for t in trials if _counted(t) and t.state in kept}
    for entry in entries:
        if (entry.student, entry.source) not in have and (not only or entry.student in only):
            again = {"after": len(trials)} if only else {}
            study.enqueue_trial({}, user_attrs={"student": entry.student, "source": entry.source, **again})


def _work(study: optuna.Study, job: ClassJob, rubric: Rubric, entries: list[Entry], threads: int | None = None) -> None:
    """Take waiting submissions from the class's queue until there are none."""
    by_name = {e.student: e for e in entries}
    threads = threads or max(1, os.cpu_count() or 1)

    def objective(trial: optuna.Trial) -> float:
        student = trial.user_attrs.get("student")
        if student is None:  # the queue emptied between looking and taking: nothing to grade
            trial.set_user_attr("empty", True)
            raise optuna.TrialPruned()
        trial.set_user_attr("worker", [socket.gethostname(), os.getpid()])
        if job.only and student not in job.only:  # waiting from an earlier run: left in the queue for the next
            trial.study.enqueue_trial({}, user_attrs={k: v for k, v in trial.user_attrs.items() if k != "worker"})
            trial.set_user_attr("deferred", True)
            raise optuna.TrialPruned()
        if _taken(trial.study, trial.number, student, trial.user_attrs.get("source"), trial.user_attrs.get("after", 0)):
            trial.set_user_attr("duplicate", True)  # two graders queued it at once: the earlier trial grades it
            raise optuna.TrialPruned()
        entry = by_name.get(student)
        if entry is None or entry.source != trial.user_attrs.get("source"):
            trial.set_user_attr("superseded", True)  # removed or changed since it was queued
            raise optuna.TrialPruned()
        try:
            row = grade_entry(entry, rubric, Path(job.out), job.data_dir, threads)
        except ChangedWhileGraded:
            trial.set_user_attr("superseded", True)  # graded again on the next run, as it is then
            raise optuna.TrialPruned() from None
        except BaseException:  # a stop, or the grader's own failure: to grade again when the class continues
            trial.set_user_attr("interrupted", True)
            raise
        trial.set_user_attr("row", row.to_dict())
        if job.on_graded is not None:
            job.on_graded(row)
        return row.total

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        while any(not job.only or t.user_attrs.get("student") in job.only
                  for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
            if stop.requested():
                raise Interrupted("stopped between submissions", Path(job.out))
            study.optimize(objective, n_trials=1)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _taken(study: optuna.Study, number: int, student: str, source: str | None, after: int = 0) -> bool:
    return any(after <= t.number < number and _counted(t) and t.user_attrs["student"] == student
               and t.user_attrs.get("source") == source and t.state in (TrialState.RUNNING, TrialState.COMPLETE)
               for t in study.get_trials(deepcopy=False))


def _worker(job: ClassJob, threads: int, parent: int) -> None:
    """A grader process of `--workers N` (`worker_process`: stopped through the parent, and by
    itself when the parent is gone)."""
    with worker_process(parent):
        rubric = load_rubric(job.rubric)
        entries = [e for e in find_entries(job.submissions, salt=job.test_digest) if not _is_folder(e.path, Path(job.out))]
        _work(open_class(job, rubric), job, rubric, entries, threads)


# --- one submission ----------------------------------------------------------------------

DEFAULT_MEMORY_MB = 4096  # when the rubric sets none: a submission never takes the grader's machine
MAX_REASON = 2000  # characters of a row's reason (a spec of 900 long unknown keys gave a 0.9 MB cell)


class ChangedWhileGraded(RunError):
    """The submission's files changed between the look that queued it and its sealed copy."""
STARTUP_S = 600.0  # the child's start-up (Python, netspec, torch): the grader's, not the student's


def grade_entry(entry: Entry, rubric: Rubric, folder: Path, data_dir: str | None, threads: int = 1) -> GradeRow:
    """The gradebook row of one submission: sealed into a private copy, then judged by the rubric
    and (if it may train) measured, both in a contained child under the rubric's limits."""
    if entry.problem:
        return _unjudged_row(entry, rubric, "missing", entry.problem)
    with tempfile.TemporaryDirectory(prefix="netspec-sealed-") as tmp:
        copy = Path(tmp) / "submission"
        sealed = seal(entry.path, copy)
        if sealed.problem:
            return _unjudged_row(entry, rubric, "missing", sealed.problem)
        if entry.files and sealed.digest != entry.files:
            raise ChangedWhileGraded(f"{entry.student}'s files changed while the class was graded")
        name = Path(entry.path).name
        inner = (Entry(entry.student, str(copy / name), spec=str(copy / name), alone=True) if entry.alone
                 else folder_entry(copy, entry.student))
        if inner.problem:
            return _unjudged_row(entry, rubric, "missing", inner.problem)
        run_dir = folder / "runs" / safe_name(entry.student)
        out = _measure_in_child({"entry": inner, "rubric": rubric, "run_dir": str(run_dir), "data_dir": data_dir,
                                 "threads": 1}, rubric)
        out = json.loads(json.dumps(out).replace(json.dumps(str(copy))[1:-1], json.dumps(entry.path)[1:-1]))
    if out.get("grader"):
        raise RunError(f"the grader cannot test {entry.student}'s submission, nor anyone's: {out['error']}")
    verdict = out.get("verdict")
    if verdict is None:  # stopped while judging
        return _unjudged_row(entry, rubric, out["status"], out["error"], out)
    items = [Item(**i) for i in verdict["items"]]
    status, reason = verdict["status"], "; ".join(p["message"] for p in verdict["problems"]
                                                  if not p["code"].startswith("lint/"))
    if status == "valid":
        status, reason = out.get("status", "graded"), out.get("error", "")
        acc = out.get("test_accuracy")
        last = items[-1]
        items[-1] = (Item(last.name, rubric.accuracy_points(acc), last.max_points, True, f"{acc:.4f}") if acc is not None
                     else Item(last.name, 0, last.max_points, False, reason))
    if entry.left_out:
        reason = "; ".join(filter(None, [reason, f"not read: {', '.join(entry.left_out)}"]))
    spec_file = Path(inner.spec).relative_to(copy).as_posix()
    files = sealed.digest_without(lambda rel: rel == spec_file)
    problems = [{**p, "file": _original(p["file"], copy, entry)} for p in verdict["problems"]]
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON] + f"... ({len(reason) - MAX_REASON:,} characters more)"
    return _row(entry, items, status, reason, {**out, "params": verdict["params"]}, rubric, problems=problems[:50],
                fingerprint=text_digest(f"{verdict['fingerprint']}|{files}"))


def _original(file: str, copy: Path, entry: Entry) -> str:
    """A problem's file in the sealed copy, named as the student submitted it."""
    try:
        rel = Path(file).relative_to(copy)
    except ValueError:
        return file
    base = Path(entry.path).parent if entry.alone else Path(entry.path)
    return str(base / rel)


def _unjudged_row(entry: Entry, rubric: Rubric, status: str, reason: str, measured: dict | None = None) -> GradeRow:
    items = [Item(n, 0, m, None, reason) for n, m in columns(rubric)]
    problems = [Problem(entry.path, 0, 0, "", reason, code="submission").to_dict()]
    return _row(entry, items, status, reason, measured or {}, rubric, problems=problems,
                fingerprint=entry.source if status == "missing" else None)


def _row(entry: Entry, items: list[Item], status: str, reason: str, measured: dict, rubric: Rubric, *,
         problems: list[dict], fingerprint: str | None) -> GradeRow:
    """A gradebook row; `measured` is what the child measured, the spec's `params` among it."""
    return GradeRow(
        student=entry.student,
        file_name=safe_name(entry.student),
        status=status,
        total=round(sum(i.points for i in items), 2),
        max=round(sum(i.max_points for i in items), 2),
        items=tuple(items),
        test_accuracy=measured.get("test_accuracy"),
        test_size=measured.get("test_size"),
        params=measured.get("params"),
        seconds=round(measured.get("seconds", 0.0), 2),
        peak_mb=measured.get("peak_mb"),
        reason=shown(reason),
        problems=tuple(Problem(**{**p, "file": shown(p["file"]), "message": shown(p["message"])}) for p in problems),
        fingerprint=fingerprint,
        run_dir=measured.get("run_dir"),
        spec=shown(entry.path),
        mode=rubric.mode,
    )


def _measure_in_child(task: dict, rubric: Rubric) -> dict:
    """netspec.grading.child in a fresh process of its own session, killed with all its processes
    when it passes the rubric's time (the CPU seconds of the group, start-up not counted) or memory
    limit (the PSS of the whole group). The child computes on one thread, whatever the machine and
    --workers: its CPU time, and its arithmetic, are the same everywhere."""
    ctx = multiprocessing.get_context("spawn")
    memory_mb = rubric.memory_mb or DEFAULT_MEMORY_MB
    with tempfile.TemporaryDirectory(prefix="netspec-grade-") as tmp:
        result_file, log = Path(tmp) / "result.json", Path(tmp) / "child.log"
        theirs, ours = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(task, str(result_file), str(log), ours, os.getpid()),
                           name="netspec-grade-child")
        began = time.monotonic()
        proc.start()
        ours.close()
        try:
            peak, over, said, used = _watch(proc, theirs, rubric, began)
        finally:
            kill_group(proc.pid)  # the child and every process it started; nothing left behind
            proc.join()
            theirs.close()
        if over == "start-up":
            raise RunError(f"the grading process did not start in {STARTUP_S:g} s: the grader's machine is too busy")
        measured = json.loads(result_file.read_text()) if result_file.is_file() else {}
        partial = dict(measured)
        measured.update(peak_mb=peak or None, seconds=used)
        if over == "time limit":
            return {**measured, "status": over, "error": f"stopped after {rubric.seconds:g} s of work (the rubric's "
                                                         f"time limit)"}
        if over:
            whose = "the rubric's limit" if rubric.memory_mb else "the grader's limit when the rubric sets none"
            return {**measured, "status": over, "error": f"stopped at {peak} MB of memory ({whose} is {memory_mb} MB)"}
        if not said or "done" not in partial:
            return {**measured, "status": "error", "error": f"the grading process ended without a result (exit "
                                                             f"code {proc.exitcode})"}
    if "error" in measured:
        measured["status"] = "error"
        if task["run_dir"] and Path(task["run_dir"]).is_dir() and not any(Path(task["run_dir"]).iterdir()):
            shutil.rmtree(task["run_dir"], ignore_errors=True)
    return measured


def _watch(proc, theirs, rubric: Rubric, began: float) -> tuple[int, str, bool, float]:
    """Wait on the child, its clock started and paused by its messages, until it ends, passes a
    limit or the grader is asked to stop: (peak MB, the limit passed or "", whether it spoke, the
    CPU seconds it used)."""
    memory_mb = rubric.memory_mb or DEFAULT_MEMORY_MB
    clock, peak, over, said, used = Clock(proc.pid), 0, "", False, 0.0
    while proc.is_alive() and not over:
        proc.join(POLL_S)
        while theirs.poll():
            try:
                message = theirs.recv()
            except EOFError:
                break
            said = True
            clock.start() if message == "start" else clock.pause()
        if stop.requested():  # the grader was asked to stop: this submission is graded again later
            raise Interrupted("stopped while grading a submission", None)
        peak = max(peak, group_memory_mb(proc.pid))
        used = max(used, clock.cpu_s())  # read while the group lives: a reaped child's time is gone
        if used > rubric.seconds or clock.wall_s() > STALL_FACTOR * rubric.seconds + STALL_EXTRA_S:
            over = "time limit"
        elif peak > memory_mb:
            over = "memory limit"
        elif not clock.running and time.monotonic() - began > STARTUP_S + clock.wall_s():
            over = "start-up"
    return peak, over, said, used


def _child(task: dict, result_file: str, log: str, conn, parent: int) -> None:
    """The child's first steps, before anything heavy: its own session and limits, its output to
    a log (an orphan must not hold the grader's output open), then the work (measure.child)."""
    enter_own_group()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from netspec.grading.child import run_child  # torch is imported later, in the child only, clock paused

    run_child(task, result_file, conn, parent)


# --- the gradebook ---------------------------------------------------------------------------

def _rows(study: optuna.Study, rubric: Rubric, entries: list[Entry]) -> list[GradeRow]:
    """One row per present submission: its latest grade in its present form, else 'not graded'."""
    graded: dict[tuple, dict] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and _counted(t) and "row" in t.user_attrs:
            graded[(t.user_attrs["student"], t.user_attrs.get("source"))] = t.user_attrs["row"]
    rows = []
    for entry in entries:
        stored = graded.get((entry.student, entry.source))
        if stored is None:
            row = _unjudged_row(entry, rubric, "not graded", "not graded yet (interrupted, or being graded elsewhere)")
        else:
            row = GradeRow.from_dict(stored)
        rows.append(row)
    return _mark_duplicates(rows)


def _on_roster(rows: list[GradeRow], students: list[Student], rubric: Rubric, submissions: Path) -> list[GradeRow]:
    """The rows, each given its roster student (`roster`: name, id, email...; None for a submission
    of nobody on it), with a 'missing' row for each student with no submission, by student."""
    by_folder = {s.folder: s for s in students}
    present = {row.student for row in rows}
    rows = list(rows)
    for s in students:
        if s.folder not in present:
            entry = Entry(s.folder, str(submissions / s.folder),
                          problem=f"no submission named {s.folder} in {submissions}")
            rows.append(replace(_unjudged_row(entry, rubric, "missing", entry.problem), same_as=()))
    rows.sort(key=lambda row: row.student)
    return [replace(row, roster=by_folder[row.student].fields() if row.student in by_folder else None)
            for row in rows]


def _mark_duplicates(rows: list[GradeRow]) -> list[GradeRow]:
    """The rows, each with `same_as`: the other students whose submission has its fingerprint."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row.fingerprint and row.status not in ("missing",):
            groups.setdefault(row.fingerprint, []).append(row.student)
    return [replace(row, same_as=tuple(s for s in groups.get(row.fingerprint, []) if s != row.student))
            for row in rows]


def _about(rubric: Rubric) -> dict:
    return {"mode": rubric.mode, "test": f"hidden set {Path(rubric.test_path).name}" if rubric.hidden_test
            else f"{rubric.test_dataset} test split", "limit": rubric.limit, "locked": dict(rubric.locked),
            "rules": [r.name for r in rubric.rules], "seconds": rubric.seconds, "memory_mb": rubric.memory_mb}
