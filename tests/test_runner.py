"""The runner end to end on a small synthetic MNIST (torchvision's file layout)."""
import csv
import json
import time

import pytest
import torch
from typer.testing import CliRunner

from netspec.cli import app
from conftest import mnist_data, mnist_source, quick_mlp
from netspec.errors import DataError, Interrupted, RunError
from netspec.runner.rundir import RunDir, load_checkpoint
from dataclasses import fields

from netspec.runner.metrics import Metrics
from netspec.runner.reopen import evaluate_run
from conftest import run
from netspec.runner.observer import Observer
from netspec.runner.trainer import Trainer
from conftest import check_file

from conftest import SHARED_DATA, SPECS
from conftest import ctrl_c



def test_run_writes_every_output(fake_data, tmp_path):
    result = run(quick_mlp(), out=tmp_path / "r", data_dir=fake_data)
    d = result.run_dir.path
    for name in ("spec.yaml", "summary.txt", "history.csv", "metrics.json", "loss.png", "model.pt", "report.md",
                 "checkpoint.pt"):
        assert (d / name).is_file(), name
    m = json.loads((d / "metrics.json").read_text())
    assert m["status"] == "finished" and m["epochs_completed"] == 2 and m["params"] == 159_010
    assert m["test_accuracy"] > 0.5  # the synthetic classes are easy
    assert m["target_accuracy"] == 0.975 and m["seed"] == 0 and "torch" in m["versions"]
    rows = list(csv.DictReader(open(d / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and set(rows[0]) >= {"train_loss", "val_loss", "train_acc", "val_acc", "seconds"}
    report = (d / "report.md").read_text()
    assert "![training and validation loss](loss.png)" in report and "`train.optimizer.lr`" in report
    assert (d / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # the settings that apply (Adam: no SGD momentum; an MLP: no fused attention, no channels-last)
    assert "`train.optimizer.momentum`" not in report and "`train.fused_attention`" not in report
    assert "`train.channels_last`" not in report and "`train.optimizer.betas`" in report
    # the accuracy target judged after the run, with the accuracy
    acc = f"{m['test_accuracy']:.4f}"
    assert f"| mnist-mlp | test accuracy | {acc} | >= 0.975 | {'✓' if m['passed'] else '✗'} |" in report
    # the exact command, into a new folder beside this one (never runs/ inside it)
    assert "Reproduce, from the folder that holds this one: `netspec run r/spec.yaml --out r-again`" in report
    assert "Trained 2 epochs in" in report
    # the test set as a write-up shows it: confusion matrix, accuracy per class, the mistakes
    assert "![test confusion matrix](confusion.png)" in report and (d / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    per_class = [line for line in report.splitlines() if line.startswith("| 0 | ")]
    assert per_class and "| test images | correct | accuracy | most often taken for |" in report
    wrong = int(report.split(" of ")[0].rsplit("\n", 1)[-1].replace(",", "")) if " test images misclassified" in report else None
    assert wrong == round((1 - m["test_accuracy"]) * m["test_size"])  # the matrix agrees with the accuracy
    if wrong:
        assert "![misclassified test images](mistakes.png)" in report and (d / "mistakes.png").is_file()
    saved = torch.load(d / "model.pt", weights_only=True)
    assert set(saved) >= {"spec", "state_dict"} and "linear_0.weight" in saved["state_dict"]
    again = evaluate_run(d, fake_data)
    assert again.test_accuracy == pytest.approx(m["test_accuracy"], abs=1e-9)
    # metrics.json is the typed record, written and read in one place: every key a field, and back
    assert Metrics.from_dict(m) == result.metrics and sorted(m) == sorted(f.name for f in fields(Metrics))
    assert result.run_dir.metrics().test_accuracy == m["test_accuracy"]


def test_same_seed_same_result(fake_data, tmp_path):
    a = run(quick_mlp(), out=tmp_path / "a", data_dir=fake_data)
    b = run(quick_mlp(), out=tmp_path / "b", data_dir=fake_data)
    assert [h.val_loss for h in a.history] == [h.val_loss for h in b.history]


def test_softmax_head_is_folded_into_the_loss(fake_data):
    checked = quick_mlp()
    assert checked.analysis.softmax_head
    from netspec.builder.model import build_model
    data = mnist_data(fake_data)
    model = build_model(checked.spec)
    trainer = Trainer(checked.spec, model, data, torch.device("cpu"), softmax_head=True)
    assert not isinstance(trainer.net[-1], torch.nn.Softmax) and isinstance(model[-1], torch.nn.Softmax)


class InterruptAt(Observer):
    def __init__(self, epoch):
        self.at = epoch

    def step(self, *, epoch, step, loss):
        if epoch == self.at and step >= 3:  # the first look at the loss after step 3 (every sync_every steps)
            ctrl_c()


def test_interrupt_then_resume_equals_uninterrupted(fake_data, tmp_path):
    extra = ("train.epochs=3",)
    run(quick_mlp(*extra), out=tmp_path / "full", data_dir=fake_data)
    with pytest.raises(Interrupted) as e:
        run(quick_mlp(*extra), out=tmp_path / "cut", data_dir=fake_data, observer=InterruptAt(2))
    assert "--resume" in str(e.value)
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert state["epoch"] == 1
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    resumed = run(quick_mlp(*extra), out=tmp_path / "cut", data_dir=fake_data, resume=True)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_schedule_and_augmentation(fake_data, tmp_path):
    # the CNN's epochs are fixed at 10; test resume on a 2-epoch copy without the rules
    spec = tmp_path / "s.yaml"
    text = (SPECS / "cnn-small.yaml").read_text().replace("rules: mnist-cnn\n", "").replace("epochs: 10", "epochs: 2")
    spec.write_text(text)
    checked = check_file(spec, overrides=("data.validation=100",))
    full = run(checked, out=tmp_path / "full", data_dir=fake_data, limit=300)
    with pytest.raises(Interrupted):
        run(checked, out=tmp_path / "cut", data_dir=fake_data, observer=InterruptAt(2), limit=300)
    run(checked, out=tmp_path / "cut", data_dir=fake_data, resume=True, limit=300)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.history[-1].lr == pytest.approx(torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["history"][-1]["lr"])


def test_non_finite_loss_stops_with_epoch_and_step(fake_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = torch.nn.functional.cross_entropy

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(RunError, match="non-finite loss at epoch 1, step 3"):
        run(quick_mlp(), out=tmp_path / "r", data_dir=fake_data)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (m["status"], m["reason"]) == ("failed", "non-finite loss at epoch 1, step 3") and m["epochs_completed"] == 0
    weights = torch.load(tmp_path / "r" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_unwritable_output_fails_before_training(fake_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot write the run folder"):
        run(quick_mlp(), out=blocker / "run", data_dir=fake_data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_one_clear_error(fake_data, tmp_path):
    with pytest.raises(RunError, match="no CUDA GPU"):
        run(quick_mlp("train.device=cuda"), out=tmp_path / "r", data_dir=fake_data)


def test_missing_dataset_names_the_folder(tmp_path):
    with pytest.raises(DataError) as e:
        mnist_source(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value) and "--data-dir" in str(e.value)


def test_cli_run_and_eval(fake_data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["run", str(SPECS / "mlp.yaml"), "--data-dir", str(fake_data), "--out", str(out),
                            "--set", "train.epochs=1", "--set", "data.validation=100"])
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output
    r = runner.invoke(app, ["eval", str(out), "--data-dir", str(fake_data)])
    assert r.exit_code == 0 and "(same)" in r.output
    r = runner.invoke(app, ["run", str(SPECS / "mlp.yaml"), "--set", "train.device=tpu"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["run", str(SPECS / "fundamentals/conv1d.yaml"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "nothing to train" in r.output


@pytest.mark.slow
def test_vit_run_writes_attention_heatmaps(fake_data, tmp_path):
    spec = tmp_path / "vit.yaml"
    spec.write_text("name: tiny-vit\ndata: {validation: 100}\nmodel:\n  vit: {patch_size: 7, dim: 16, depth: 2, "
                    "heads: 8, dim_head: 4, mlp_dim: 32}\ntrain: {epochs: 1, batch_size: 64}\n")
    result = run(check_file(spec), out=tmp_path / "v", data_dir=fake_data)
    d = result.run_dir.path
    assert (d / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert "![attention heatmaps](attention.png)" in (d / "report.md").read_text()
    r = CliRunner().invoke(app, ["attention", str(d), "--index", "3", "--layer", "0", "--data-dir", str(fake_data)])
    assert r.exit_code == 0, r.output
    assert (d / "attention-3-layer0.png").is_file()
    r = CliRunner().invoke(app, ["attention", str(d), "--layer", "9", "--data-dir", str(fake_data)])
    assert r.exit_code == 1 and "out of range" in r.output


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="real MNIST not present")
def test_real_mnist_short_mlp_run(tmp_path):
    checked = check_file(SPECS / "mlp.yaml", overrides=("train.epochs=1", "train.augment.shift=0", "train.augment.rotate=0"))
    result = run(checked, out=tmp_path / "real", data_dir=SHARED_DATA)
    assert result.metrics.test_size == 10_000 and result.metrics.train_size == 55_000
    assert result.metrics.test_accuracy > 0.9


def test_cli_data_facts(fake_data, tmp_path):
    r = CliRunner().invoke(app, ["data", "--data-dir", str(fake_data), "--samples", str(tmp_path / "s.png"),
                                 "--validation", "200"])
    assert r.exit_code == 0, r.output
    raw = mnist_source(fake_data)
    assert "28 x 28" in r.output and "1,000 / 200" in r.output and f"{len(raw.test):,} images" in r.output
    counts = torch.bincount(raw.train.labels, minlength=10)
    assert f"{int(counts[0]):,}" in r.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    from conftest import synthetic_mnist

    root = synthetic_mnist(tmp_path, n_train=50, n_test=20, folder="FashionMNIST")
    raw = mnist_source(root, "fashion-mnist")
    assert raw.train.images.shape == (50, 1, 28, 28) and len(raw.test) == 20
    with pytest.raises(DataError, match="Fashion-MNIST is not in"):
        mnist_source(tmp_path / "elsewhere", "fashion-mnist")


def test_a_short_run_draws_its_loss_within_epochs(fake_data, tmp_path):
    from netspec.report import plots
    from netspec.runner.run import Reporter, run as runner_run

    class Keep(Reporter):
        def progress(self, run_dir, checked, history, steps=None):
            self.steps = list(steps or [])

    keep = Keep()
    checked = quick_mlp("train.epochs=1")
    runner_run(checked, out=tmp_path / "r", data_dir=fake_data, limit=640, reporter=keep)
    per_epoch = -(-640 // checked.spec.train.batch_size)
    assert len(keep.steps) == per_epoch and keep.steps[-1][0] == 1.0  # every step on the CPU, ending at epoch 1
    assert all(loss > 0 for _, loss in keep.steps)
    fig = plots.loss_figure(runner_history(tmp_path / "r"), "t", steps=keep.steps)
    lines = fig.axes[0].get_lines()
    assert lines[0].get_label() == "training loss within epochs" and len(lines[0].get_xdata()) == per_epoch
    long = [runner_history(tmp_path / "r")[0].__class__(epoch=e, train_loss=1, train_acc=1, val_loss=1, val_acc=1,
                                                        seconds=1, lr=1) for e in range(1, 6)]
    assert "training loss within epochs" not in [l.get_label() for l in plots.loss_figure(long, "t", steps=keep.steps).axes[0].get_lines()]


def runner_history(path):
    from netspec.runner.records import read_history

    return read_history(RunDir.open(path))


def test_compare_figure_draws_one_epoch_runs_on_whole_epochs():
    from netspec.report import plots
    from netspec.runner.trainer import EpochStats

    one = [EpochStats(epoch=1, train_loss=0.5, train_acc=0.9, val_loss=0.4, val_acc=0.9, seconds=1, lr=0.1)]
    fig = plots.overlay_figure({"a": one, "b": one})
    ax = fig.axes[0]
    assert all(line.get_marker() not in (None, "None", "") for line in ax.get_lines())  # a point, not an empty line
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("bad_gradient, bad_loss", [(None, None), (6, None), (None, 9), (13, 4), (2, 2)])
def test_the_tally_folds_the_same_counters_whatever_its_window(bad_gradient, bad_loss):
    """The one tally, folded at every step (the graph strategy, inside its CUDA graph) or at looks
    that split the steps unevenly (the eager strategy's window of 4): the loss sum bit for bit, the
    right answers, and the steps before the first non-finite gradient or loss."""
    from netspec.runner.steps import Tally

    g = torch.Generator().manual_seed(3)
    steps = [(torch.rand((), generator=g) * 3, torch.randn(7 if s == 14 else 8, 10, generator=g),
              torch.randint(0, 10, (7 if s == 14 else 8,), generator=g)) for s in range(15)]
    each, window = Tally(torch.device("cpu"), 1), Tally(torch.device("cpu"), 4)
    for s, (loss, logits, y) in enumerate(steps, start=1):
        loss = loss * float("nan") if s == bad_loss else loss
        for tally in (each, window):
            tally.flag().fill_(1.0 if s == bad_gradient else tally.flag().item())
            tally.step(loss, logits, y)
        each.fold()
        # nothing kept shares the model's output: a CUDA graph's next replay overwrites it
        assert all(kept.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr() for kept in window.kept[-1])
        if s % 4 == 0 or s == len(steps):
            window.fold()
            for name in ("loss_sum", "correct", "steps_ok", "loss_steps_ok", "found"):
                torch.testing.assert_close(getattr(window, name), getattr(each, name), rtol=0, atol=0, equal_nan=True,
                                           msg=f"step {s}: {name}")
    firsts = [s for s in (bad_gradient, bad_loss) if s]
    assert int(window.steps_ok) == (min(firsts) - 1 if firsts else 15)
    assert int(window.loss_steps_ok) == (bad_loss - 1 if bad_loss else 15) and window.seen == 15 * 8 - 1


def test_sigterm_stops_training_as_ctrl_c_but_not_a_run_being_written(fake_data, tmp_path):
    """The `netspec run` rule (stop.listening(hold=False)): SIGTERM while training stops it at the
    end of the step and the run is written as interrupted; once training is over, a SIGTERM while
    the run is being written lets it finish; before training, it raises at once."""
    import os
    import signal

    from netspec.runner import stop

    class TermIn(Observer):
        def __init__(self, hook):
            self.hook = hook

        def step(self, *, epoch, step, loss):
            if self.hook == "step":
                os.kill(os.getpid(), signal.SIGTERM)

        def end(self):  # training is over; the run folder is being written
            if self.hook == "end":
                os.kill(os.getpid(), signal.SIGTERM)

    with stop.listening(hold=False), pytest.raises(Interrupted, match="before the first epoch"):
        run(quick_mlp(), out=tmp_path / "stopped", data_dir=fake_data, observer=TermIn("step"))
    assert json.loads((tmp_path / "stopped" / "metrics.json").read_text())["status"] == "interrupted"
    with stop.listening(hold=False):
        written = run(quick_mlp(), out=tmp_path / "written", data_dir=fake_data, observer=TermIn("end"))
    assert written.metrics.finished and (tmp_path / "written" / "report.md").is_file()
    with pytest.raises(KeyboardInterrupt), stop.listening(hold=False):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert stop.requested() is None  # nothing left over for the next run


def _ctrl_c_made_into(error: type[Exception]) -> None:
    """Ctrl-C landing in code that makes it its own error, as a C extension's import does
    (pybind11: "ImportError: initialization failed", raised from the KeyboardInterrupt)."""
    import os
    import signal

    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # Python runs the handler here, between two bytecodes
            pass
    except KeyboardInterrupt as e:
        raise error("initialization failed") from e


def test_ctrl_c_in_training_is_taken_at_the_end_of_a_step_not_where_it_lands(fake_data, tmp_path):
    """Seen in CI: Ctrl-C (or SIGTERM) landing while the first loss plot imported matplotlib's Agg
    backend became an ImportError, and `netspec run` printed a traceback instead of writing the
    interrupted run. While training, the stop is noted and taken at the end of the step, where
    nothing can turn it into another error; the run is interrupted after its finished epoch and
    resumes."""

    class CtrlCInTheEpochsEnd(Observer):
        def epoch(self, stats):
            if stats.epoch == 1:
                _ctrl_c_made_into(ImportError)

    with pytest.raises(Interrupted, match=r"after 1 finished epoch"):
        run(quick_mlp(), out=tmp_path / "cut", data_dir=fake_data, observer=CtrlCInTheEpochsEnd())
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    resumed = run(quick_mlp(), out=tmp_path / "cut", data_dir=fake_data, resume=True)
    assert [h.epoch for h in resumed.history] == [1, 2]


def test_a_second_ctrl_c_before_the_step_ends_stops_at_once_and_none_is_lost():
    """In a held region (the Trainer's epochs) Ctrl-C is only recorded; a second one raises at once
    (a step that never ends). The handlers are restored after, and the request cleared."""
    import signal

    from netspec.runner import stop

    with pytest.raises(KeyboardInterrupt):
        with stop.held():
            signal.raise_signal(signal.SIGINT)
            assert stop.requested() == "Ctrl-C"  # recorded, not raised
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the second Ctrl-C did not stop at once")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and stop.requested() is None
    with stop.held():  # SIGINT then SIGTERM (torchrun passing the stop on): both recorded, none raised
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested() == "Ctrl-C"


def test_ctrl_c_before_training_is_the_interruption_at_the_command_line(capsys):
    """Before training (loading data, building) Ctrl-C is raised where it lands: exit 130 and one
    line; any other error is left to show its traceback."""
    import typer

    from netspec.cli.base import user_errors
    from netspec.runner import stop

    with pytest.raises(typer.Exit) as e, user_errors(), stop.listening(hold=False):
        ctrl_c()
    assert e.value.exit_code == 130 and "interrupted" in capsys.readouterr().err
    with pytest.raises(ImportError), user_errors():
        raise ImportError("initialization failed")


def test_resuming_a_finished_run_redoes_nothing_and_says_so(fake_data, tmp_path):
    """`--resume` of a run that finished: no training, no second test pass, no file rewritten (it
    once rewrote the record with that command's few milliseconds as the run's wall time); a note
    says so, and the recorded result is returned."""
    from netspec.runner.rundir import RunDir
    from netspec.runner.reopen import check_run_spec

    folder = tmp_path / "r"
    first = run(quick_mlp(), out=folder, data_dir=fake_data)
    kept = {name: (folder / name).read_bytes() for name in ("metrics.json", "report.md", "model.pt", "history.csv")}
    notes = []

    class Watch(Observer):
        def start(self, **kw):
            raise AssertionError("trained again")

        def note(self, text):
            notes.append(text)

    again = run(check_run_spec(RunDir.open(folder))[0], out=folder, data_dir=fake_data, resume=True, observer=Watch())
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert notes == [f"{folder} finished all 2 epochs: nothing to resume, and its folder is left as it was"]
    assert again.metrics == first.metrics and [h.epoch for h in again.history] == [1, 2]
    assert again.history[-1].val_acc == pytest.approx(first.history[-1].val_acc, abs=1e-6)
    # its last epoch done but its writing cut short (the record says interrupted, no report): resuming writes it
    record = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))
    (folder / "report.md").unlink()
    redone = run(check_run_spec(RunDir.open(folder))[0], out=folder, data_dir=fake_data, resume=True)
    assert redone.metrics.finished and (folder / "report.md").is_file() and redone.metrics.test_accuracy == first.metrics.test_accuracy
