"""Reopening a finished run folder: its spec checked against the rules it ran under, its model
rebuilt with the saved weights, its test accuracy measured again."""
from __future__ import annotations

from pathlib import Path

import torch

from netspec.builder.check import Checked, check_document
from netspec.errors import CheckpointError, first_line, SpecError
from netspec.builder.model import build_model
from netspec.runner.records import RULES_RECORD, _read_run_record, read_metrics, recorded_data_dir
from netspec.runner.run import load_data
from netspec.runner.rundir import SPEC_FILE, RunDir
from netspec.runner.speed import arrange
from netspec.runner.speed import resolve as resolve_speed
from netspec.runner.train import evaluate, logits_model
from netspec.spec.loader import load_file
from netspec.spec.rules import rules_from_dict


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
