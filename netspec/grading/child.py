"""The grading child's work: judge one sealed submission by the rubric, then (if it may train)
measure its test accuracy. It runs contained (contain.py) and tells the grader's clock when the
submission's work starts and when the grader's own start-up (importing torch) pauses it.

Its result file is written after judging and again at the end, so a submission stopped by a limit
while training keeps the points it had before training.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from netspec.errors import first_line, NetspecError
from netspec.grading.verdict import judge


def run_child(task: dict, result_file: str, conn, parent: int) -> None:
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    os.environ["NETSPEC_NO_DOWNLOAD"] = "1"  # a grader never downloads what a submission names (nor writes to --data-dir)
    conn.send("start")
    out: dict = {}
    try:
        verdict = judge(task["entry"], task["rubric"])
        out["verdict"] = {"items": [vars(i) for i in verdict.items], "status": verdict.status,
                          "problems": [p.to_dict() for p in verdict.problems], "params": verdict.params,
                          "fingerprint": verdict.fingerprint}
        _write(result_file, out)
        if verdict.trainable:
            conn.send("pause")
            from netspec.grading.measure import GraderError, measure, set_threads  # torch: the grader's start-up

            set_threads(task["threads"])
            conn.send("start")
            try:
                out.update(measure(task["entry"].spec, task["entry"].weights, task["rubric"], Path(task["run_dir"]),
                                   task["data_dir"]))
            except GraderError as e:
                out.update(error=str(e), grader=True)
    except NetspecError as e:
        out["error"] = str(e)
    except OSError as e:
        out["error"] = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
    except RecursionError:
        out["error"] = "nested too deeply to be read"
    except Exception as e:  # noqa: BLE001 - a submission may break torch in ways we do not foresee: its reason, not our crash
        out["error"] = f"{type(e).__name__}: {first_line(e)}"
    out["done"] = True
    _write(result_file, out)


def _write(result_file: str, out: dict) -> None:
    tmp = f"{result_file}.tmp"
    Path(tmp).write_text(json.dumps(out))
    os.replace(tmp, result_file)


def _orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
