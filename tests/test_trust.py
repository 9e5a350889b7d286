"""Results you can trust at the edges: run folders, --limit, interrupts, and settings that
would mislead at training time (issue 9). Each test names what it guards."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from netspec.cli import app
from netspec.data.augment import Augment
from netspec.errors import Interrupted, RunError, SpecError
from netspec.runner import rundir as rundir_mod
from netspec.runner.rundir import RunDir, atomic_write, load_checkpoint
from netspec.runner.reopen import evaluate_run, load_run
from conftest import QUICK, run, quick_mlp
from netspec.runner.observer import Observer
from netspec.runner.trainer import Trainer
from netspec.spec.config import AugmentSpec
from conftest import check_file

from conftest import SPECS
from conftest import ctrl_c

cli = CliRunner()


def no_sweep(tmp_path):
    """specs/mlp.yaml without its sweep section (whose grid would set the epochs)."""
    path = tmp_path / "mlp.yaml"
    path.write_text((SPECS / "mlp.yaml").read_text().split("\nsweep:")[0] + "\n")
    return path


def strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path.name} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


class InterruptAt(Observer):
    def __init__(self, epoch, step=3):
        self.at = (epoch, step)

    def step(self, *, epoch, step, loss):
        if epoch == self.at[0] and step >= self.at[1]:  # the first look after that step (every sync_every steps)
            ctrl_c()


# --- run folders never mix two runs -------------------------------------------

def test_out_of_an_earlier_run_is_refused_and_force_empties_it(fake_data, tmp_path):
    out = tmp_path / "r"
    args = ["run", str(SPECS / "mlp.yaml"), "--out", str(out), "--data-dir", str(fake_data), "--limit", "300",
            *[a for kv in QUICK for a in ("--set", kv)], "--set", "train.epochs=1"]
    assert cli.invoke(app, args).exit_code == 0
    (out / "attention.png").write_bytes(b"left over from another run")
    again = cli.invoke(app, args)
    assert again.exit_code == 1 and "already holds an earlier run" in again.output and "--force" in again.output
    assert "Traceback" not in again.output
    forced = cli.invoke(app, args + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "attention.png").exists()
    assert strict_json(out / "metrics.json")["epochs_completed"] == 1


def test_force_never_empties_a_folder_that_is_not_a_run(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    with pytest.raises(RunError, match="pick a new or empty folder"):
        RunDir.create(out, "x")
    with pytest.raises(RunError, match="--force empties only run folders"):
        RunDir.create(out, "x", force=True)
    assert (out / "chapter1.tex").read_text() == "precious"


def test_two_runs_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    a = RunDir.create(None, "mlp", tmp_path)
    b = RunDir.create(None, "mlp", tmp_path)
    assert a.path != b.path and b.path.name == "mlp-20260101-000000-2"
    # and two runs racing for one --out: the second is refused, never shares the folder
    out = tmp_path / "shared"
    RunDir.create(out, "mlp")
    with pytest.raises(RunError, match="already holds an earlier run"):
        RunDir.create(out, "mlp")


def test_planted_symlinks_are_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".write-test").symlink_to(victim)  # today's probe file name
    with pytest.raises(RunError):
        RunDir.create(out, "x")
    assert victim.read_text() == "keep me"
    # a link planted where a run file is written is replaced, not written through
    d = RunDir.create(tmp_path / "run", "x")
    (d / "metrics.json").symlink_to(victim)
    d.write_json("metrics.json", {"a": 1})
    assert victim.read_text() == "keep me" and not (d / "metrics.json").is_symlink()


def test_atomic_write_syncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(rundir_mod.os, "fsync", spy)
    atomic_write(tmp_path / "f.txt", lambda f: f.write(b"x"))
    assert synced == [False, True]  # the file, then its folder


def test_run_files_get_the_callers_umask_and_importing_changes_no_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "f.txt", lambda f: f.write(b"x"))
        assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
        assert os.umask(0o027) == 0o027  # nothing changed it behind our back
    finally:
        os.umask(old)


def test_a_run_folder_is_portable_and_old_runs_survive_new_rules(fake_data, tmp_path, monkeypatch):
    course = tmp_path / "course" / "rules.yaml"
    course.parent.mkdir()
    course.write_text("name: course\nmax_params: 200000\n")
    spec = tmp_path / "course" / "s.yaml"
    spec.write_text((SPECS / "mlp.yaml").read_text().replace("rules: mnist-mlp", "rules: rules.yaml"))
    checked = check_file(spec, overrides=QUICK, imposed=("mnist-mlp",))
    result = run(checked, out=tmp_path / "r", data_dir=fake_data, limit=300)
    recorded = strict_json(tmp_path / "r" / "rules.json")
    assert [r["name"] for r in recorded] == ["course", "mnist-mlp"] and recorded[0]["max_params"] == 200000
    assert "rules: spec-rules.yaml" in (tmp_path / "r" / "spec.yaml").read_text()
    # move the run folder away and delete the course's rules file: eval still works
    moved = tmp_path / "elsewhere" / "r"
    shutil.move(str(tmp_path / "r"), moved)
    shutil.rmtree(tmp_path / "course")
    assert evaluate_run(moved, fake_data).test_accuracy == result.metrics.test_accuracy
    # a shipped rule set tightened later: the old run is a note, not an error
    strict = tmp_path / "strict-mlp.yaml"
    strict.write_text("name: mnist-mlp\nmax_params: 1000\n")
    from netspec.spec.rules import resolve_rules as real
    monkeypatch.setattr("netspec.check.checker.resolve_rules", lambda ref, base: strict if ref == "mnist-mlp" else real(ref, base))
    (moved / "spec.yaml").write_text((moved / "spec.yaml").read_text().replace("rules: spec-rules.yaml", "rules: mnist-mlp"))
    _, _, _, notes = load_run(moved)
    assert len(notes) == 1 and "today's rules 'mnist-mlp' would refuse this run" in notes[0] and "1,000" in notes[0]
    r = cli.invoke(app, ["eval", str(moved), "--data-dir", str(fake_data)])
    assert r.exit_code == 0 and "note:" in r.output


# --- --limit and resume say what happened ------------------------------------

def test_limit_cuts_training_only_and_is_recorded_everywhere(fake_data, tmp_path):
    r = run(quick_mlp(), out=tmp_path / "r", data_dir=fake_data, limit=300)
    m = strict_json(tmp_path / "r" / "metrics.json")
    # fake data: 1,200 training images, 200 held out for validation, 300 test images
    assert (m["limit"], m["train_size"], m["train_available"], m["val_size"], m["test_size"]) == (300, 300, 1000, 200, 300)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "300 of 1,000 training images (--limit 300); 200 validation; tested on 300 test images" in report
    ev = evaluate_run(tmp_path / "r", fake_data)
    assert ev.test_accuracy == r.metrics.test_accuracy and ev.test_size == 300
    shutil.copytree(tmp_path / "r", tmp_path / "r2")
    shown = cli.invoke(app, ["compare", str(tmp_path / "r"), str(tmp_path / "r2"), "--format", "json"])
    assert [(r["train_size"], r["limit"]) for r in json.loads(shown.output)["runs"]] == [(300, 300)] * 2
    assert not list(tmp_path.glob("*.png"))  # no figure unless --figure asks for one
    same = cli.invoke(app, ["compare", str(tmp_path / "r"), str(tmp_path / "r")])
    assert same.exit_code == 1 and "the same run folder is given twice" in same.output


def test_resume_uses_the_limit_the_run_used(fake_data, tmp_path):
    with pytest.raises(Interrupted):
        run(quick_mlp(), out=tmp_path / "cut", data_dir=fake_data, limit=300, observer=InterruptAt(2, 1))
    resumed = run(quick_mlp(), out=tmp_path / "cut", data_dir=fake_data, resume=True)
    assert resumed.metrics.train_size == 300 and resumed.metrics.limit == 300
    full = run(quick_mlp(), out=tmp_path / "full", data_dir=fake_data, limit=300)
    assert resumed.metrics.test_accuracy == full.metrics.test_accuracy
    with pytest.raises(RunError, match="was trained with --limit 300"):
        run(quick_mlp(), out=tmp_path / "cut", data_dir=fake_data, resume=True, limit=50)


@pytest.mark.parametrize("args, message", [
    (["run", str(SPECS / "mlp.yaml"), "--limit", "0"], "--limit 0: give a number of training images of at least 1"),
    (["run", str(SPECS / "mlp.yaml"), "--limit", "-5"], "--limit -5: give a number of training images of at least 1"),
    (["data", "--validation", "70000"], "--validation 70,000: hold out at least 0 and fewer than the 1,200"),
    (["sweep", str(SPECS / "mlp.yaml"), "--trials", "0"], "the trial budget must be at least 1"),
])
def test_nonsense_sizes_are_errors_not_silent_full_runs(fake_data, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = cli.invoke(app, args + ["--data-dir", str(fake_data)])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("model.pt"))


def test_sweep_rerun_with_another_limit_is_refused(fake_data, tmp_path):
    args = ["sweep", str(no_sweep(tmp_path)), "--grid", "train.batch_size=64", "--out", str(tmp_path / "sw"),
            "--data-dir", str(fake_data), "--set", "train.epochs=1", "--set", "data.validation=200"]
    first = cli.invoke(app, args + ["--limit", "300"])
    assert first.exit_code == 0, first.output
    again = cli.invoke(app, args + ["--limit", "400"])
    assert again.exit_code == 1 and "trained on --limit 300" in again.output
    import csv
    [row] = list(csv.DictReader(open(tmp_path / "sw" / "leaderboard.csv")))
    assert row["train_size"] == "300"


def test_interrupt_before_the_first_epoch_advises_no_resume(fake_data, tmp_path):
    with pytest.raises(Interrupted) as e:
        run(quick_mlp(), out=tmp_path / "r", data_dir=fake_data, limit=300, observer=InterruptAt(1))
    assert "--resume" not in str(e.value) and "before the first epoch finished" in str(e.value)
    assert not (tmp_path / "r" / "model.pt").exists() and not (tmp_path / "r" / "loss.png").exists()
    report = (tmp_path / "r" / "report.md").read_text()
    assert "loss.png" not in report and "No model was saved" in report
    m = strict_json(tmp_path / "r" / "metrics.json")
    assert m["test_accuracy"] is None and m["model_epoch"] is None


def test_interrupt_mid_epoch_keeps_the_last_finished_epochs_model(fake_data, tmp_path):
    with pytest.raises(Interrupted) as e:
        run(quick_mlp("train.epochs=3"), out=tmp_path / "r", data_dir=fake_data, limit=300, observer=InterruptAt(2))
    assert "are those of epoch 1" in str(e.value)
    saved = load_checkpoint(tmp_path / "r" / "model.pt")
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert saved["epoch"] == ckpt["epoch"] == 1
    assert all(torch.equal(saved["state_dict"][k], ckpt["model"][k]) for k in ckpt["model"])
    m = strict_json(tmp_path / "r" / "metrics.json")
    assert m["model_epoch"] == 1
    assert evaluate_run(tmp_path / "r", fake_data).test_accuracy == m["test_accuracy"]


@pytest.mark.parametrize("content", [{"state_dict": [1, 2]}, {"state_dict": {"other.weight": torch.zeros(2)}}, [1, 2]])
def test_foreign_model_file_is_one_clear_error(fake_data, tmp_path, content):
    run(quick_mlp("train.epochs=1"), out=tmp_path / "r", data_dir=fake_data, limit=300)
    (tmp_path / "r" / "model.safetensors").unlink()  # read in preference; a folder from before it has model.pt alone
    torch.save(content, tmp_path / "r" / "model.pt")
    r = cli.invoke(app, ["eval", str(tmp_path / "r"), "--data-dir", str(fake_data)])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
    assert "model.pt" in r.output


@pytest.mark.parametrize("content", [{"model": [1]}, {"model": {}, "optimizer": {}, "history": []},
                                     {"model": {"x": torch.zeros(1)}, "optimizer": {"state": {}}, "history": [{"a": 1}]}])
def test_foreign_checkpoint_is_one_clear_error(fake_data, tmp_path, content):
    with pytest.raises(Interrupted):
        run(quick_mlp(), out=tmp_path / "r", data_dir=fake_data, limit=300, observer=InterruptAt(2))
    torch.save(content, tmp_path / "r" / "checkpoint.pt")
    r = cli.invoke(app, ["run", "--resume", str(tmp_path / "r"), "--data-dir", str(fake_data)])
    assert r.exit_code == 1 and "is not a checkpoint of this run" in r.output and "Traceback" not in r.output


# --- training does what the spec says -----------------------------------------

def test_momentum_cycling_is_explicit_and_reported(fake_data, tmp_path):
    checked = quick_mlp("train.optimizer.betas=[0.5, 0.999]", "train.epochs=1")
    assert checked.spec.train.schedule.name == "onecycle" and checked.spec.train.schedule.cycle_momentum
    r = run(checked, out=tmp_path / "cycled", data_dir=fake_data, limit=300)
    report = (tmp_path / "cycled" / "report.md").read_text()
    assert "beta1 was cycled by the one-cycle schedule between 0.95 and 0.85" in report
    assert "the spec's beta1 0.5 was not used" in report
    assert "cycle_momentum: true" in (tmp_path / "cycled" / "spec.yaml").read_text()
    # off: the optimizer keeps the spec's beta1
    checked = quick_mlp("train.optimizer.betas=[0.5, 0.999]", "train.schedule.cycle_momentum=false")
    model = torch.nn.Sequential(torch.nn.Linear(784, 10))
    from conftest import mnist_data
    data = mnist_data(fake_data, validation=200, limit=300)
    trainer = Trainer(checked.spec, model, data, torch.device("cpu"), softmax_head=False)
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["betas"][0] == 0.5
    assert r.metrics.status == "finished"


@pytest.mark.parametrize("overrides, path, message", [
    (("train.optimizer={name: sgd, lr: 0.1, momentum: 0, nesterov: true}", "train.schedule.name=none"),
     "train.optimizer.nesterov", "Nesterov momentum needs momentum > 0"),
    (("train.optimizer={name: sgd, lr: 0.1, momentum: 0}",), "train.schedule.cycle_momentum",
     "would cycle SGD's momentum between 0.95 and 0.85, but the optimizer says momentum 0"),
    (("train.batch_size=1", "model.layers=[Flatten, {Linear: {out_features: 16}}, BatchNorm1d, ReLU, {Linear: {out_features: 10}}]"),
     "train.batch_size", "batch size 1 with BatchNorm1d (model.layers[2])"),
    (("model.layers=[Flatten, {Linear: {out_features: 16}}, Softmax, {Linear: {out_features: 10}}]",),
     "model.layers[2]", "Softmax between layers turns the features into probabilities that sum to 1 before the Linear"),
    (("model.layers=[Flatten, {Linear: {out_features: 10}}, Softmax, Softmax]",),
     "model.layers[2]", "Softmax is allowed only as the last layer: cross-entropy would otherwise be computed"),
    (("train.eval_batch_size=65536", "model.layers=[Flatten, {Linear: {out_features: 40000}}, ReLU, {Linear: {out_features: 10}}]"),
     "train.eval_batch_size", "one evaluation batch needs about"),
])
def test_settings_that_would_mislead_are_validation_errors(tmp_path, overrides, path, message):
    spec = tmp_path / "free.yaml"  # the MLP without its rule set, so any layer may be used
    spec.write_text((SPECS / "mlp.yaml").read_text().replace("rules: mnist-mlp\n", ""))
    with pytest.raises(SpecError) as e:
        check_file(spec, overrides=overrides)
    found = [p for p in e.value.problems if p.path == path]
    assert found and message in found[0].message, [p.format() for p in e.value.problems]
    assert found[0].file.startswith("--set") or found[0].line > 0


def test_vit_too_big_to_analyse_is_refused_quickly(write_spec):
    path = write_spec("name: v\nmodel:\n  vit: {patch_size: 7, dim: 8, depth: 256, heads: 256, dim_head: 1, "
                      "mlp_dim: 4, attention: per_head}\ntrain: {batch_size: 1, eval_batch_size: 1}\n")
    start = time.perf_counter()
    with pytest.raises(SpecError) as e:
        check_file(path)
    assert time.perf_counter() - start < 5
    assert "would build about 329,728 modules; netspec builds at most 5,000" in e.value.problems[0].message


def test_augmentation_warps_the_image_whatever_the_input_shape():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x = torch.randn(5, 1, 28, 28)
    spec = AugmentSpec(shift=2, rotate=10)
    image = Augment(spec, (1, 28, 28))(x, g())
    for shape in ((784,), (4, 196), (28, 28)):
        out = Augment(spec, (1, 28, 28))(x.reshape(5, *shape), g())
        assert out.shape == (5, *shape) and torch.equal(out.reshape(5, 1, 28, 28), image)


@pytest.mark.parametrize("spec,image_shape", [(AugmentSpec(shift=1.5, rotate=8), (1, 28, 28)),
                                              (AugmentSpec(shift=2, rotate=10, scale=0.1), (3, 32, 32)),
                                              (AugmentSpec(shift=1, rotate=10, scale=0.1), (1, 8, 8))])
def test_augmentation_is_affine_grid_and_grid_sample(spec, image_shape):
    """The run's Augment (its grid made once, in one matrix product) gives what F.affine_grid +
    grid_sample give with four uniform draws per batch, to fp32 rounding (the grid's products are
    summed by another kernel: bit for bit at 28x28 on the Xeon it was measured on, within 2e-6 at 8x8),
    and its generator stays in step with theirs."""
    import math

    import torch.nn.functional as F

    from netspec.data.augment import Augment

    def reference(x, g):
        c, h, w = image_shape
        b = len(x)

        def uniform(limit):
            return (torch.rand(b, generator=g) * 2 - 1) * limit

        angle, zoom = uniform(math.radians(spec.rotate)), 1 + uniform(spec.scale)
        tx, ty = uniform(2 * spec.shift / w), uniform(2 * spec.shift / h)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
        return F.grid_sample(x.reshape(b, c, h, w), grid, mode="bilinear", padding_mode="border",
                             align_corners=False).reshape(x.shape)

    x = torch.randn(64, math.prod(image_shape))
    fast, g1, g2 = Augment(spec, image_shape), torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):  # the generators stay in step batch after batch
        torch.testing.assert_close(fast(x, g1), reference(x, g2), rtol=0, atol=1e-5)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_no_validation_set_writes_no_nan_and_says_what_it_shows(fake_data, tmp_path):
    spec = tmp_path / "v.yaml"
    spec.write_text((SPECS / "vit.yaml").read_text().replace("rules: mnist-vit\n", ""))
    checked = check_file(spec, overrides=("data.validation=0", "train.epochs=1", "model.vit.depth=1", "model.vit.heads=2",
                                          "train.schedule.name=none"))
    run(checked, out=tmp_path / "r", data_dir=fake_data, limit=64)
    m = strict_json(tmp_path / "r" / "metrics.json")
    assert m["best_val_accuracy"] is None and m["final_val_accuracy"] is None and m["val_size"] == 0
    assert "first test (no validation set was held out) example" in (tmp_path / "r" / "report.md").read_text()


def test_sweep_ranks_each_trial_by_the_model_it_saves(fake_data, tmp_path):
    from netspec.sweeps.sweep import sweep
    res = sweep(no_sweep(tmp_path), grid=["train.batch_size=32,64"], out=tmp_path / "sw", data_dir=fake_data,
                limit=200, overrides=("train.epochs=3", "data.validation=200"))
    for t in res.study.trials:
        m = strict_json(tmp_path / "sw" / f"trial-{t.number:03d}" / "metrics.json")
        assert t.value == m["final_val_accuracy"] and m["model_epoch"] == 3


# --- hostile input ------------------------------------------------------------

@pytest.mark.parametrize("text", ["name: &a [*a]\n", "a: &x {b: *x}\n", "a: &x [1, [2, {c: *x}]]\n"])
def test_self_referencing_yaml_is_an_error_not_recursion(write_spec, text):
    r = cli.invoke(app, ["validate", str(write_spec(text))])
    assert r.exit_code == 1 and "contains itself (a recursive alias)" in r.output and "Traceback" not in r.output


def test_self_referencing_set_and_rules_file(write_spec, tmp_path):
    r = cli.invoke(app, ["validate", str(SPECS / "mlp.yaml"), "--set", "description=&a [*a]"])
    assert r.exit_code == 1 and "contains itself" in r.output
    rules = tmp_path / "loop.yaml"
    rules.write_text("name: loop\nfixed: &f {x: *f}\n")
    r = cli.invoke(app, ["validate", str(SPECS / "mlp.yaml"), "--rules", str(rules)])
    assert r.exit_code == 1 and "contains itself" in r.output


def test_draft_mode_overrides_fixed_settings_and_marks_the_run_not_gradable(fake_data, tmp_path):
    from typer.testing import CliRunner

    from netspec.cli import app

    cli = CliRunner()
    args = ["--set", "train.epochs=1", "--set", "data.validation=100"]
    refused = cli.invoke(app, ["validate", str(SPECS / "cnn.yaml"), *args])
    assert refused.exit_code == 1 and "fixed at 10 by rules 'mnist-cnn'" in refused.output
    ok = cli.invoke(app, ["validate", str(SPECS / "cnn.yaml"), *args, "--draft"])
    assert ok.exit_code == 0, ok.output
    # every other rule still applies under --draft
    over = cli.invoke(app, ["validate", str(SPECS / "cnn.yaml"), *args, "--draft",
                            "--set", "model.layers.0.Conv2d.out_channels=64"])
    assert over.exit_code == 1 and "< 50,000" in over.output and "train.epochs" not in over.output
    r = cli.invoke(app, ["run", str(SPECS / "cnn-small.yaml"), *args, "--draft", "--limit", "200",
                         "--out", str(tmp_path / "d"), "--data-dir", str(fake_data)])
    assert r.exit_code == 0, r.output
    assert "draft:" in r.output and "train.epochs (1; fixed at 10 by 'mnist-cnn')" in r.output
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["draft"] is True
    report = (tmp_path / "d" / "report.md").read_text()
    assert "**Draft: not gradable.**" in report and "✗ waived (draft)" in report
    assert "`netspec run d/spec.yaml --out d-again --limit 200 --draft`" in report  # the command that repeats it
    assert "waived" in (tmp_path / "d" / "rules.json").read_text()
    shutil.copytree(tmp_path / "d", tmp_path / "d2")
    shown = cli.invoke(app, ["compare", str(tmp_path / "d"), str(tmp_path / "d2"), "--format", "json"])  # reopened: still a draft
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["runs"][0]["draft"] is True
    assert "[draft]" in json.loads(shown.stdout)["runs"][0]["label"]


def test_a_rule_set_imposed_again_counts_once(tmp_path):
    from netspec.errors import SpecError

    with pytest.raises(SpecError) as once:
        check_file(SPECS / "cnn.yaml", overrides=("train.epochs=5",))
    with pytest.raises(SpecError) as twice:
        check_file(SPECS / "cnn.yaml", overrides=("train.epochs=5",), imposed=("mnist-cnn",))
    assert len(twice.value.problems) == len(once.value.problems) == 1
    copy = tmp_path / "copy.yaml"
    copy.write_text((Path(__file__).parents[1] / "netspec/spec/rulesets/mnist-cnn.yaml").read_text().replace(
        "name: mnist-cnn", "name: my-copy"))
    checked = check_file(SPECS / "cnn.yaml", imposed=(str(copy),))
    assert len({r.rules for r in checked.results}) == 1 and len(checked.rules) == 1
