"""One run, from a checked spec to a complete run folder.

The folder is written as the run goes: the resolved spec and summary before
training, a checkpoint, history and loss plot after every epoch, and the
metrics, weights, attention maps and report at the end (or at an interrupt,
or at a non-finite loss: whatever was finished is kept).
"""
from __future__ import annotations

import csv
import io
import platform
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torchvision

import netspec
from netspec.builder.model import build_model
from netspec.builder.vit import record_attention
from netspec.data.datasets import Data, load_raw, prepare
from netspec.errors import CheckpointError, Interrupted, RunError
from netspec.report import plots
from netspec.report.markdown import report_markdown
from netspec.report.tables import summary_text
from netspec.runner.rundir import CHECKPOINT, SPEC_FILE, WEIGHTS, RunDir, load_checkpoint
from netspec.runner.train import EpochStats, NonFinite, Observer, Trainer, evaluate, logits_model, resolve_device
from netspec.spec.rules import resolve_rules
from netspec.spec.validate import Checked, check_file

ATTENTION_PNG = "attention.png"


@dataclass
class RunResult:
    run_dir: RunDir
    metrics: dict
    history: list[EpochStats]


def versions() -> dict:
    return {"netspec": netspec.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def resolved_spec(checked: Checked) -> dict:
    """The spec with defaults written out and a rules path made absolute."""
    data = checked.spec.to_dict()
    ref = data.get("rules")
    if ref:
        where = resolve_rules(ref, Path(checked.doc.file).parent)
        if where is not None and not where.is_relative_to(Path(netspec.__file__).parent):
            data["rules"] = str(where.resolve())
    return data


def _require_dataset(spec) -> None:
    if spec.data.dataset == "none":
        raise RunError(f"{spec.name}: data.dataset is 'none' (a shapes-only spec); there is nothing to train on")


def load_data(checked: Checked, device, data_dir=None, limit: int | None = None) -> Data:
    spec = checked.spec
    _require_dataset(spec)
    raw = load_raw(spec.data.dataset, data_dir)
    return prepare(raw, name=spec.data.dataset, input_shape=spec.data.input_shape,
                   validation=spec.data.validation, seed=spec.train.seed, device=device, limit=limit)


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


def write_attention(run_dir: RunDir, model, data: Data, *, index: int = 0, layer: int = -1) -> Path:
    """Heatmaps of every head of one encoder layer for validation example `index`."""
    split = data.val if len(data.val) else data.test
    if not 0 <= index < len(split):
        raise RunError(f"--index {index} is out of range: the validation set has {len(split)} examples")
    depth = len(model.layers)
    if not -depth <= layer < depth:
        raise RunError(f"--layer {layer} is out of range: the model has {depth} encoder layers")
    model.eval()
    with torch.no_grad(), record_attention(model, layer) as maps:
        model(split.x[index: index + 1])
    attn = maps[0][0].float().cpu()  # (heads, T, T)
    image = (split.x[index].cpu() * data.std + data.mean).reshape(data.input_shape)[0]
    label = int(split.y[index])
    shown = layer % depth
    p = model.to_patch_embedding.patchify.p
    grid = (data.input_shape[1] // p, data.input_shape[2] // p)
    fig = plots.attention_figure(image.numpy(), attn.numpy(),
                                 f"layer {shown} attention, validation example {index} (label {label})", grid=grid)
    path = run_dir.save_figure(ATTENTION_PNG if (index, layer) == (0, -1) else f"attention-{index}-layer{shown}.png", fig)
    plots.close(fig)
    return path


def _write_progress(run_dir: RunDir, checked: Checked, history: list[EpochStats]) -> None:
    run_dir.write_text("history.csv", history_csv(history))
    if history:
        fig = plots.loss_figure(history, f"{checked.spec.name}: loss per epoch")
        run_dir.save_figure("loss.png", fig)
        plots.close(fig)


def run(checked: Checked, *, out=None, data_dir=None, observer: Observer | None = None,
        resume: bool = False, detect_anomaly: bool = False, limit: int | None = None,
        runs_root: str | Path = "runs") -> RunResult:
    """Train `checked.spec` and write its run folder. With `resume`, `out` is an existing run folder."""
    spec = checked.spec
    _require_dataset(spec)  # before any folder is made
    device = resolve_device(spec.train.device)
    run_dir = RunDir.open(out) if resume else RunDir.create(out, spec.name, runs_root)
    if not resume:
        run_dir.write_yaml(SPEC_FILE, resolved_spec(checked))
        run_dir.write_text("summary.txt", summary_text(checked))
    data = load_data(checked, device, data_dir, limit)
    torch.manual_seed(spec.train.seed)
    model = build_model(spec, device)
    trainer = Trainer(spec, model, data, device, softmax_head=checked.analysis.softmax_head,
                      observer=observer, detect_anomaly=detect_anomaly)
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise CheckpointError(f"{run_dir.path} has no {CHECKPOINT}: nothing to resume")
        trainer.load_state(run_dir.load(CHECKPOINT))

    def end_of_epoch(tr: Trainer) -> None:
        run_dir.save(CHECKPOINT, tr.state())
        _write_progress(run_dir, checked, tr.history)

    started = time.perf_counter()
    status, error = "finished", None
    try:
        trainer.fit(on_epoch_end=end_of_epoch)
    except KeyboardInterrupt:
        status = "interrupted"
    except NonFinite as e:
        status, error = "failed", e
        if (run_dir / CHECKPOINT).is_file():  # back to the last good weights
            model.load_state_dict(run_dir.load(CHECKPOINT)["model"])
        elif not trainer.history:
            torch.manual_seed(spec.train.seed)
            model.load_state_dict(build_model(spec, device).state_dict())
    train_seconds = sum(h.seconds for h in trainer.history)
    metrics = _finish(run_dir, checked, model, data, trainer, status, str(error or ""), device,
                      time.perf_counter() - started, train_seconds)
    if status == "interrupted":
        raise Interrupted(
            f"interrupted after {len(trainer.history)} finished epoch(s); saved in {run_dir.path}. "
            f"Continue with: netspec run --resume {run_dir.path}", run_dir.path)
    if error is not None:
        raise RunError(f"{error}. The last good weights are in {run_dir / WEIGHTS}") from None
    return RunResult(run_dir, metrics, trainer.history)


def _finish(run_dir: RunDir, checked: Checked, model, data: Data, trainer: Trainer, status: str, error: str,
            device, wall: float, train_seconds: float) -> dict:
    spec, history = checked.spec, trainer.history
    net = logits_model(model, checked.analysis.softmax_head)
    test_loss, test_acc = evaluate(net, data.test, spec.train.eval_batch_size)
    best = max(history, key=lambda h: h.val_acc) if history else None
    target = checked.target_accuracy
    metrics = {
        "name": spec.name,
        "status": status + (f": {error}" if error else ""),
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "target_accuracy": target,
        "passed": None if target is None else test_acc >= target,
        "best_val_accuracy": best.val_acc if best else None,
        "best_epoch": best.epoch if best else None,
        "final_val_accuracy": history[-1].val_acc if history else None,
        "epochs_completed": len(history),
        "epochs_planned": spec.train.epochs,
        "params": checked.analysis.params,
        "hidden_units": checked.analysis.hidden_units,
        "train_size": len(data.train), "val_size": len(data.val), "test_size": len(data.test),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "seed": spec.train.seed,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / len(history) if history else None,
        "wall_seconds": wall,
        "versions": versions(),
        "command": " ".join(sys.argv),
    }
    run_dir.save(WEIGHTS, {"spec": resolved_spec(checked), "state_dict": model.state_dict(),
                           "netspec": netspec.__version__})
    if not history:  # every finished epoch already wrote its history and plot
        _write_progress(run_dir, checked, history)
    attention = None
    if spec.is_vit:
        write_attention(run_dir, model, data)
        attention = ATTENTION_PNG
    run_dir.write_json("metrics.json", metrics)
    run_dir.write_text("report.md", report_markdown(checked, metrics, history, attention_png=attention))
    return metrics


def load_run(path: str | Path, device: str = "cpu"):
    """(checked spec, model with the saved weights) of a run folder."""
    run_dir = RunDir.open(path)
    checked = check_file(run_dir / SPEC_FILE)
    saved = load_checkpoint(run_dir / WEIGHTS)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise CheckpointError(f"{run_dir / WEIGHTS} does not hold netspec weights")
    model = build_model(checked.spec, device)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir / WEIGHTS} does not match {run_dir / SPEC_FILE}: {str(e).splitlines()[0]}") from None
    return run_dir, checked, model


def evaluate_run(path: str | Path, data_dir=None) -> dict:
    run_dir, checked, model = load_run(path)
    data = load_data(checked, torch.device("cpu"), data_dir)
    loss, acc = evaluate(logits_model(model, checked.analysis.softmax_head), data.test, checked.spec.train.eval_batch_size)
    recorded = run_dir.read_json("metrics.json").get("test_accuracy") if (run_dir / "metrics.json").is_file() else None
    return {"run": str(run_dir.path), "test_accuracy": acc, "test_loss": loss, "recorded_test_accuracy": recorded,
            "target_accuracy": checked.target_accuracy}
