"""A finished run folder reopened: its spec checked again, its model rebuilt, its test accuracy measured again."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from netspec.check.checker import Checked, check_document
from netspec.errors import CheckpointError, first_line, SpecError
from netspec.builder.model import build_model
from netspec.runner.records import RulesRecord, RunRecord
from netspec.runner.run import load_data
from netspec.runner.rundir import SPEC_FILE, RunDir
from netspec.runner.speed import arrange, resolve as resolve_speed
from netspec.runner.trainer import evaluate, logits_model
from netspec.spec.loader import load_file


def check_run_spec(run_dir: RunDir) -> tuple[Checked, list[str]]:
    """The run's spec checked against the rule sets in its rules.json; notes where today's rules judge it otherwise."""
    recorded = list(run_dir.read_record(RulesRecord).rule_sets)
    checked = check_document(load_file(run_dir / SPEC_FILE), rule_sets=recorded, base_dir=run_dir.path, read_data=False)
    notes = []
    if checked.draft:  # its fixed settings were waived on purpose: that is no news from today's rules
        notes.append("a draft run (`--draft`: not gradable); it waived " + "; ".join(checked.waived))
    if ref := checked.spec.rules:
        try:
            check_document(load_file(run_dir / SPEC_FILE), base_dir=run_dir.path, read_data=False, draft=checked.draft)
        except SpecError as e:
            notes.append(f"today's rules '{ref}' would refuse this run (it was checked against the rules recorded "
                         f"in {RulesRecord.FILE} when it ran): " + "; ".join(p.message for p in e.problems))
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


@dataclass(frozen=True)
class Evaluation:
    """A run's saved model tested again (`netspec evaluate`), beside what the run recorded."""

    run: str  # the run folder
    test_accuracy: float
    test_loss: float
    test_size: int
    precision: str  # the run's own: fp32, bf16, ...
    speed: str
    recorded_test_accuracy: float | None
    recorded_test_size: int | None
    model_epoch: int | None
    target_accuracy: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_run(path: str | Path, data_dir=None) -> Evaluation:
    """A run's saved model tested again on the whole test set, in the run's own precision and data."""
    run_dir, checked, model, notes = load_run(path)
    recorded = run_dir.metrics()
    device = torch.device("cpu")
    data_dir = run_dir.read_record(RunRecord).existing_data_dir if data_dir is None else data_dir  # not a download
    data = load_data(checked, device, data_dir)  # the whole test set, as every run is tested
    speed = resolve_speed(checked.spec, device)  # the run's own precision and layout (spec.yaml holds them)
    net = logits_model(arrange(model, speed), checked.analysis.softmax_head)
    loss, acc = evaluate(net, data.test, checked.spec.train.eval_batch_size, speed)
    if (ran_on := recorded.device) and not ran_on.startswith("cpu") and speed.precision != "fp32":
        notes.append(f"the run trained and tested on {ran_on}; {speed.precision} arithmetic on this CPU may round "
                     f"differently, so the accuracy can differ in the last digits")
    return Evaluation(str(run_dir.path), acc, loss, len(data.test), speed.precision, speed.describe(),
                      recorded.test_accuracy, recorded.test_size, recorded.model_epoch, checked.target_accuracy, notes)
