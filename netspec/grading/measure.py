"""Test accuracy of one submission: trained from scratch under the rubric's locked settings
(`retrain`) or its submitted weights (`evaluate`), always tested in fp32 on the rubric's test data
with the normalisation of the student's own training set.

This runs in a child process of the grader (grading.classroom), which watches its time and
memory and kills it when a limit is passed: whatever a submission does here cannot stop the class.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from netspec.check.checker import check_document
from netspec.builder.model import build_model
from netspec.data.datasets import ArrayImages, load_named_test, load_test_set
from netspec.data.splits import normalise
from netspec.errors import CheckpointError, DataError, first_line, RunError
from netspec.grading.rubric import Rubric
from netspec.grading.verdict import MAX_WEIGHTS, locked_document
from netspec.runner import safeweights
from netspec.runner.rundir import RunDir, is_state_dict, load_checkpoint
from netspec.runner.safeweights import SAFE_WEIGHTS
from netspec.runner.records import DataRecord, preprocessing
from netspec.runner.run import run
from netspec.runner.trainer import logits_model


EVAL_BATCH = 250


class GraderError(RunError):
    """The grader's own side failed (its test data): not the student's fault, and no grade."""


def test_set(rubric: Rubric, data_dir=None) -> ArrayImages:
    """The rubric's test data: a named set's test split, or the hidden set."""
    if rubric.hidden_test:
        return load_test_set(rubric.test_path, rubric.test_image_shape)
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
    mismatch = _mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"the weights do not match the spec's architecture: {mismatch}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"the weights do not match the spec's architecture: {first_line(e)}") from None
    acc = accuracy(logits_model(model, checked.analysis.softmax_head), checked.spec, record, test)
    return {"test_accuracy": acc, "test_size": len(test), "params": checked.analysis.params,
            "run_dir": str(run_dir) if rubric.mode == "retrain" else None}


def _submitted_record(record, spec, where: str) -> DataRecord:
    """A submitted model's data record, checked like any input: its schema, then against the spec
    it is graded with (a hand-edited std of 0 would give NaN probabilities, a huge image_shape a
    huge allocation)."""
    checked = DataRecord.from_dict(record, where, fix="submit the files a netspec run wrote")
    problem = checked.mismatch(spec)
    if problem:
        raise CheckpointError(f"{where} {problem}")
    return checked


def _submitted(weights: str | None, spec) -> tuple[dict, DataRecord]:
    if weights is None:
        raise CheckpointError("no model.safetensors or model.pt in the submission (mode evaluate grades the "
                              "submitted weights)")
    name = Path(weights).name
    if os.path.getsize(weights) > MAX_WEIGHTS:
        raise CheckpointError(f"{name} is {os.path.getsize(weights) >> 20} MiB; at most {MAX_WEIGHTS >> 20} MiB")
    if name == SAFE_WEIGHTS:
        return _submitted_safetensors(weights, spec)
    unpacked = _unpacked_size(weights)
    if unpacked > MAX_WEIGHTS:  # a few MB of deflated zeros can hold gigabytes: judged before loading
        raise CheckpointError(f"model.pt unpacks to {unpacked >> 20} MiB; at most {MAX_WEIGHTS >> 20} MiB")
    saved = load_checkpoint(Path(weights))  # weights_only: a pickle that would run code is refused, never run
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    record = saved.get("data") if isinstance(saved, dict) else None
    if not is_state_dict(state) or not isinstance(record, dict):
        raise CheckpointError("model.pt is not a netspec run's model.pt (weights and the data record)")
    return state, _submitted_record(record, spec, "model.pt's data record")


def _submitted_safetensors(weights: str, spec) -> tuple[dict, DataRecord]:
    """A submitted model.safetensors: its header judged first (the size it declares), then its
    tensors read; no torch.load, no pickle. The data record is its metadata's "data"."""
    state, meta = safeweights.load(weights, limit=MAX_WEIGHTS, label=SAFE_WEIGHTS)
    record = meta.get("data")
    if not isinstance(record, dict):
        raise CheckpointError(f"{SAFE_WEIGHTS} is not a netspec run's (no data record in its metadata)")
    return state, _submitted_record(record, spec, f"{SAFE_WEIGHTS}'s data record")


def _unpacked_size(weights: str) -> int:
    """The bytes a model.pt (torch's zip format) holds once unpacked; its size on disk otherwise."""
    try:
        with zipfile.ZipFile(weights) as z:
            return sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return os.path.getsize(weights)


def _mismatch(expected: dict, state: dict) -> str:
    """Which keys and shapes of submitted weights differ from the model's, named (torch's own
    message starts with 'Error(s) in loading state_dict for Sequential:' and names none)."""
    def some(keys):
        keys = sorted(keys)
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    parts = []
    extra, missing = set(state) - set(expected), set(expected) - set(state)
    if missing:
        parts.append(f"missing {some(missing)}")
    if extra:
        parts.append(f"unexpected {some(extra)}")
    shapes = [f"{k} is {list(getattr(state[k], 'shape', []))}, the model's {list(expected[k].shape)}"
              for k in sorted(set(state) & set(expected))
              if tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    parts += shapes[:3]
    return "; ".join(parts)


@torch.no_grad()
def accuracy(net: torch.nn.Module, spec, record: DataRecord, test: ArrayImages) -> float:
    """Share of `test` classified right, in fp32, normalised with the run's own statistics, in the
    spec's evaluation batches (their memory was checked with the spec), at most EVAL_BATCH: the
    size of a batch does not change a prediction, and a grader's memory is small (Gradescope's 768 MB)."""
    batch_size = min(spec.train.eval_batch_size, EVAL_BATCH)
    c, h, w = record.image_shape
    if tuple(test.image_shape) != (c, h, w):
        raise RunError(f"the test images are {'x'.join(map(str, test.image_shape))}; the model was trained on "
                       f"{c}x{h}x{w}")
    mean = torch.tensor(record.mean, dtype=torch.float32).view(c, 1, 1)
    std = torch.tensor(record.std, dtype=torch.float32).view(c, 1, 1)
    net = net.float().eval()
    right = 0
    for i in range(0, len(test), batch_size):
        x = normalise(test.images[i: i + batch_size], mean, std).reshape(-1, *spec.data.input_shape)
        right += int((net(x).argmax(1) == test.labels[i: i + batch_size]).sum())
    return right / len(test) if len(test) else 0.0


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
