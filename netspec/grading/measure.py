"""Test accuracy of one submission: trained from scratch under the rubric's locked settings
(`retrain`) or its submitted weights (`evaluate`), always tested in fp32 on the rubric's test data
with the normalisation of the student's own training set.

This runs in a child process of the grader (grading.classroom), which watches its time and
memory and kills it when a limit is passed: whatever a submission does here cannot stop the class.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import torch

from netspec.builder.check import check_document
from netspec.builder.model import build_model
from netspec.data.datasets import ArrayImages, load_named_test, load_test_set
from netspec.data.splits import normalise
from netspec.errors import CheckpointError, DataError, first_line, NetspecError, RunError
from netspec.grading.rubric import Rubric
from netspec.grading.verdict import MAX_WEIGHTS, locked_document
from netspec.runner.rundir import RunDir, is_state_dict, load_checkpoint
from netspec.runner.run import _record_problem, preprocessing, run
from netspec.runner.train import logits_model


EVAL_BATCH = 250


class GraderError(RunError):
    """The grader's own side failed (its test data): not the student's fault, and no grade."""


def test_set(rubric: Rubric, data_dir=None) -> ArrayImages:
    """The rubric's test data: a named set's test split, or the hidden set."""
    if rubric.hidden_test:
        return load_test_set(rubric.test_path)
    return load_named_test(rubric.test_dataset, data_dir)


def measure(spec: str, weights: str | None, rubric: Rubric, run_dir: Path, data_dir=None) -> dict:
    """{"test_accuracy", "test_size", "params", "run_dir"} of one submission; NetspecError says
    why there is no accuracy (the weights do not match, training failed, ...)."""
    checked = check_document(locked_document(spec, rubric), rule_sets=[], base_dir=Path(spec).parent)
    try:
        test = test_set(rubric, data_dir)  # first: a grader without its test data stops before training anyone
    except DataError as e:
        raise GraderError(str(e)) from None
    torch.manual_seed(checked.spec.train.seed)
    if rubric.mode == "retrain":
        from netspec.report.run_report import RunReporter  # figures for the feedback; evaluate mode needs none

        result = run(checked, out=run_dir, data_dir=data_dir, limit=rubric.limit, force=True, reporter=RunReporter())
        state = RunDir(result.run_dir.path).load_weights()
        record = preprocessing(result.run_dir, checked.spec)
    else:
        state, record = _submitted(weights, checked.spec)
    with torch.random.fork_rng(devices=[]):
        model = build_model(checked.spec, "cpu")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"the weights do not match the spec's architecture: {first_line(e)}") from None
    acc = accuracy(logits_model(model, checked.analysis.softmax_head), checked.spec, record, test)
    return {"test_accuracy": acc, "test_size": len(test), "params": checked.analysis.params,
            "run_dir": str(run_dir) if rubric.mode == "retrain" else None}


def _submitted(weights: str | None, spec) -> tuple[dict, dict]:
    if weights is None:
        raise CheckpointError("no model.pt in the submission (mode evaluate grades the submitted weights)")
    if os.path.getsize(weights) > MAX_WEIGHTS:
        raise CheckpointError(f"model.pt is {os.path.getsize(weights) >> 20} MiB; at most {MAX_WEIGHTS >> 20} MiB")
    saved = load_checkpoint(Path(weights))  # weights_only: a pickle that would run code is refused, never run
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    record = saved.get("data") if isinstance(saved, dict) else None
    if not is_state_dict(state) or not isinstance(record, dict):
        raise CheckpointError("model.pt is not a netspec run's model.pt (weights and the data record)")
    problem = _record_problem(record, spec)
    if problem:
        raise CheckpointError(f"model.pt's data record {problem}")
    return state, record


@torch.no_grad()
def accuracy(net: torch.nn.Module, spec, record: dict, test: ArrayImages) -> float:
    """Share of `test` classified right, in fp32, normalised with the run's own statistics, in the
    spec's evaluation batches (their memory was checked with the spec), at most EVAL_BATCH: the
    size of a batch does not change a prediction, and a grader's memory is small (Gradescope's 768 MB)."""
    batch_size = min(spec.train.eval_batch_size, EVAL_BATCH)
    c, h, w = record["image_shape"]
    if tuple(test.image_shape) != (c, h, w):
        raise RunError(f"the test images are {'x'.join(map(str, test.image_shape))}; the model was trained on "
                       f"{c}x{h}x{w}")
    mean = torch.tensor(record["mean"], dtype=torch.float32).view(c, 1, 1)
    std = torch.tensor(record["std"], dtype=torch.float32).view(c, 1, 1)
    net = net.float().eval()
    right = 0
    for i in range(0, len(test), batch_size):
        x = normalise(test.images[i: i + batch_size], mean, std).reshape(-1, *spec.data.input_shape)
        right += int((net(x).argmax(1) == test.labels[i: i + batch_size]).sum())
    return right / len(test) if len(test) else 0.0


def child(task: dict, result_file: str, parent: int) -> None:
    """A child process's work: measure one submission and write the result (or the reason there is
    none) to `result_file`. Exits by itself if the grader that started it is gone."""
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    torch.set_num_threads(task["threads"])
    started = time.perf_counter()
    try:
        rubric = task["rubric"]
        out = measure(task["spec"], task["weights"], rubric, Path(task["run_dir"]), task["data_dir"])
    except GraderError as e:
        out = {"error": str(e), "grader": True}
    except NetspecError as e:
        out = {"error": str(e)}
    except OSError as e:
        out = {"error": f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")}
    except Exception as e:  # noqa: BLE001 - a submission may break torch in ways we do not foresee: its reason, not our crash
        out = {"error": f"{type(e).__name__}: {first_line(e)}"}
    out["seconds"] = time.perf_counter() - started
    Path(result_file).write_text(json.dumps(out))


def _orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
