"""Sweeps and comparisons on tiny data."""
import csv
import json

import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from netspec.cli import app
from netspec.errors import Interrupted, SpecError
from netspec.report.sweep_report import write_sweep_outputs
from conftest import run
from netspec.sweeps.space import make_space, parse_range
from netspec.sweeps.sweep import sweep
from netspec.runner.observer import Observer
from netspec.spec.loader import load_file
from conftest import check_file

from conftest import SPECS, TINY_SWEEP as TINY
from conftest import ctrl_c



def test_grid_expansion_spec_section_and_command_line(write_spec):
    doc = load_file(write_spec(TINY))
    space = make_space(doc, ["train.optimizer.lr=0.001,0.003,0.01"], [], None, None, None)
    assert space.grid == {"train.batch_size": [32, 64], "train.optimizer.lr": [0.001, 0.003, 0.01]}
    combos = space.combinations()
    assert len(combos) == 6 and {"train.batch_size": 64, "train.optimizer.lr": 0.01} in combos
    space = make_space(doc, [], ["train.optimizer.lr=1e-4:1e-2:log"], None, 8, None)
    assert space.sampler == "tpe" and space.trials == 8 and space.ranges["train.optimizer.lr"].log


def test_range_parsing_errors():
    with pytest.raises(SpecError, match="low:high"):
        parse_range("train.optimizer.lr=0.1:0.01")
    with pytest.raises(SpecError, match="low:high"):
        parse_range("train.optimizer.lr=0:1:log")


def test_sweeping_a_fixed_setting_is_refused_up_front(tmp_path):
    with pytest.raises(SpecError) as e:
        sweep(SPECS / "cnn.yaml", grid=["train.epochs=5,10", "train.batch_size=32,64"], out=tmp_path / "s")
    msgs = " ".join(p.message for p in e.value.problems)
    assert "rules 'mnist-cnn' fix train.epochs at 10; the sweep tries [5, 10]" in msgs
    assert "train.batch_size at 32" in msgs
    assert not (tmp_path / "s").exists()


def test_over_budget_values_are_refused_up_front(tmp_path):
    with pytest.raises(SpecError) as e:
        sweep(SPECS / "cnn.yaml", grid=["model.layers.0.Conv2d.out_channels=8,64"], out=tmp_path / "s")
    # the spec's own sweep section adds two ranges: each corner with 64 channels breaks the budget
    probs = e.value.problems
    assert len(probs) == 4
    assert all("model.layers.0.Conv2d.out_channels=64" in p.message and "< 50,000" in p.message for p in probs)


class StopInTrial(Observer):
    def step(self, *, epoch, step, loss):
        ctrl_c()


def test_interrupted_sweep_resumes(write_spec, fake_data, tmp_path):
    spec = write_spec(TINY)
    folder = tmp_path / "sweep"
    with pytest.raises(Interrupted) as e:
        sweep(spec, out=folder, data_dir=fake_data,
              observer=lambda trial, values: StopInTrial() if trial.number == 1 else Observer())
    # one line: what is kept and how to continue; no advice to resume a trial folder by hand
    assert "Run the same netspec sweep command again to continue" in str(e.value) and "--resume" not in str(e.value)
    result = sweep(spec, out=folder, data_dir=fake_data)
    states = [t.state for t in result.study.trials]
    assert states.count(TrialState.COMPLETE) == 2 and len(states) == 3  # trial 0 was not run again
    assert sorted(t.params["train.batch_size"] for t in result.study.trials if t.state == TrialState.COMPLETE) == [32, 64]
    # running it once more does nothing new
    again = sweep(spec, out=folder, data_dir=fake_data)
    assert len(again.study.trials) == 3

    rows = write_sweep_outputs(folder, "tiny", result.study, result.space)
    assert [r["state"] for r in rows][:2] == ["complete", "complete"]
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    table = list(csv.DictReader(open(folder / "leaderboard.csv")))
    assert table[0]["train.batch_size"] in ("32", "64") and float(table[0]["test_accuracy"]) > 0
    md = (folder / "sweep.md").read_text()
    assert "## Best trial" in md and "never used to choose" in md
    assert "Each trial trained 1 epoch on the full training set, batch size swept." in md
    assert "a larger batch also means fewer optimizer steps" in md
    assert "`train.batch_size`: too few finished trials to say" in md  # one trial per value proves nothing
    assert len(rows) == 2  # the interrupted trial is shown by its retry
    for png in ("trials.png", "settings.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"


def test_a_stop_before_a_trial_trains_marks_it_to_run_again(write_spec, fake_data, tmp_path, monkeypatch):
    """Ctrl-C before a trial trains (its data being read, say) is recorded, never raised inside the
    reading: the trial stops at its first step, the sweep stops, and the trial runs again when it
    continues (not marked failed for good, the Ctrl-C lost)."""
    import netspec.sweeps.sweep as sweep_mod

    spec, folder = write_spec(TINY), tmp_path / "sweep"
    real = sweep_mod.run

    def stopped_in_trial_1(checked, **kw):
        if kw["out"].name == "trial-001":
            ctrl_c()  # while its data is being read
        return real(checked, **kw)

    monkeypatch.setattr(sweep_mod, "run", stopped_in_trial_1)
    with pytest.raises(Interrupted, match="Run the same netspec sweep command again"):
        sweep(spec, out=folder, data_dir=fake_data)
    monkeypatch.undo()
    result = sweep(spec, out=folder, data_dir=fake_data)
    stopped = result.study.trials[1]
    assert stopped.user_attrs.get("interrupted") and "error" not in stopped.user_attrs
    assert [t.state for t in result.study.trials].count(TrialState.COMPLETE) == 2


def test_cli_sweep_and_compare(write_spec, fake_data, tmp_path):
    spec = write_spec(TINY)
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", str(spec), "--grid", "model.layers.0.Linear.out_features=16,32",
                            "--out", str(tmp_path / "s"), "--data-dir", str(fake_data)])
    assert r.exit_code == 0, r.output
    assert "sweep tiny: validation accuracy of the saved model first" in r.stdout  # the leaderboard's title
    trials = sorted((tmp_path / "s").glob("trial-*"))
    assert len(trials) == 4
    r = runner.invoke(app, ["compare", str(trials[0]), str(trials[3]), "--figure", str(tmp_path / "c.png"),
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["runs"][0]["params"] != data["runs"][1]["params"] or data["settings"]
    assert (tmp_path / "c.png").is_file()


def test_compare_reports_architecture_and_settings(fake_data, tmp_path, write_spec):
    a = run(check_file(write_spec(TINY.split("sweep:")[0], "a.yaml")), out=tmp_path / "a", data_dir=fake_data)
    b_text = TINY.split("sweep:")[0].replace("    - ReLU\n", "    - ReLU\n    - Dropout: {p: 0.2}\n").replace(
        "out_features: 32", "out_features: 48").replace("batch_size: 64", "batch_size: 32")
    b = run(check_file(write_spec(b_text, "b.yaml")), out=tmp_path / "b", data_dir=fake_data)
    from netspec.report.compare import compare, read_runs

    result = compare(read_runs([a.run_dir.path, b.run_dir.path]))
    [changes] = result.architecture.values()
    assert changes == ["changed: layer 0: Linear(out_features=32) -> Linear(out_features=48)",
                       "added: layer 2: Dropout(p=0.2)"]
    assert result.settings == {"train.batch_size": [64, 32]}
    from typer.testing import CliRunner

    from netspec.cli import app

    md = CliRunner().invoke(app, ["compare", str(a.run_dir.path), str(b.run_dir.path), "--format", "markdown"])
    assert md.exit_code == 0, md.output
    assert md.stdout.startswith("## Runs compared\n\n| run | status | params |")
    assert "- added: layer 2: Dropout(p=0.2)" in md.stdout and "| `train.batch_size` | 64 | 32 |" in md.stdout


def test_whole_layer_lists_can_be_swept(write_spec, fake_data, tmp_path):
    spec = write_spec(TINY.split("sweep:")[0] + """sweep:
  grid:
    model.layers:
      - [{Linear: {out_features: 16}}, ReLU, {Linear: {out_features: 10}}]
      - [{Linear: {out_features: 8}}, ReLU, {Linear: {out_features: 8}}, ReLU, {Linear: {out_features: 10}}]
""")
    result = sweep(spec, out=tmp_path / "s", data_dir=fake_data, limit=200)
    counts = sorted(t.user_attrs["params_count"] for t in result.study.trials)
    assert counts == [784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10, 784 * 16 + 16 + 16 * 10 + 10]
    rows = write_sweep_outputs(tmp_path / "s", "tiny", result.study, result.space)
    assert {r["settings"]["model.layers"] for r in rows} == {"Linear(16)-ReLU-Linear(10)",
                                                              "Linear(8)-ReLU-Linear(8)-ReLU-Linear(10)"}


@pytest.mark.parametrize("name", ["mlp.yaml", "cnn.yaml"])
def test_shipped_sweeps_pass_their_rules(name):
    from pathlib import Path

    from netspec.sweeps.space import check_space

    doc = load_file(SPECS / name)
    space = make_space(doc, [], [], None, None, None)
    check_space(doc, space, (), Path(SPECS))
    assert space.keys


def test_a_draft_sweep_may_tune_a_fixed_setting_and_says_so(fake_data, tmp_path):
    from typer.testing import CliRunner

    from netspec.cli import app

    spec = tmp_path / "cnn.yaml"
    spec.write_text((SPECS / "cnn-small.yaml").read_text().split("\nsweep:")[0])
    args = ["sweep", str(spec), "--grid", "train.epochs=1,2", "--set", "data.validation=100", "--limit", "200",
            "--out", str(tmp_path / "s"), "--data-dir", str(fake_data), "--set", "train.schedule.name=none"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "fix train.epochs at 10" in refused.output
    r = CliRunner().invoke(app, [*args, "--draft"])
    assert r.exit_code == 0, r.output
    assert "[draft: not gradable]" in r.stdout
    assert "**Draft sweep: not gradable.**" in (tmp_path / "s" / "sweep.md").read_text()
    trial = json.loads(next((tmp_path / "s").glob("trial-*/metrics.json")).read_text())
    assert trial["draft"] is True
