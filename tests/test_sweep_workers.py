"""Sweeps shared by many processes (issue 10): real worker processes on one study, a killed
worker's trial run again exactly once, a changed search space refused, failures recorded."""
from __future__ import annotations

import collections
import os
import signal
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from netspec.errors import RunError, SpecError
from netspec.sweeps.space import parse_range
from netspec.sweeps.study import counted
from netspec.sweeps.sweep import sweep

from conftest import TINY_SWEEP, netspec_process

pytestmark = pytest.mark.slow  # real processes or servers (README: the quick suite)

SPEC = TINY_SWEEP.replace("epochs: 1,", "epochs: EPOCHS,") + "    train.optimizer.lr: [0.001, 0.003]\n"  # a 2 x 2 grid


def spec(tmp_path, epochs=1):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC.replace("EPOCHS", str(epochs)))
    return path


def trials_of(folder):
    backend = optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))
    return optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(backend)).get_trials()


def assert_each_grid_point_completed_once(folder):
    # a worker that finds every grid point taken records one untrained duplicate and stops
    trials = [t for t in trials_of(folder) if counted(t)]
    done = collections.Counter(tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE)
    assert len(done) == 4 and set(done.values()) == {1}, done
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return trials




def test_two_sweep_commands_on_one_folder_share_the_trials(fake_data, tmp_path):
    args = ["sweep", str(spec(tmp_path, epochs=2)), "--out", str(tmp_path / "s"), "--data-dir", str(fake_data),
            "--limit", "400"]
    a = netspec_process(*args)
    time.sleep(1.5)  # the second joins while the first is training
    b = netspec_process(*args)
    out_a, out_b = a.communicate(timeout=300)[0], b.communicate(timeout=300)[0]
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    assert "Traceback" not in out_a + out_b and "Cannot tell" not in out_a + out_b
    trials = assert_each_grid_point_completed_once(tmp_path / "s")
    assert not [t for t in trials if t.state == TrialState.FAIL]  # nobody failed a live worker's trial
    rows = (tmp_path / "s" / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 5


def test_workers_divide_the_trials(fake_data, tmp_path):
    from netspec.report.run_report import RunReporter

    # trials long enough that the second worker has started before the first could finish them all
    result = sweep(spec(tmp_path, epochs=4), out=tmp_path / "s", data_dir=fake_data, limit=800, workers=2,
                   reporter=RunReporter())
    trials = assert_each_grid_point_completed_once(tmp_path / "s")
    workers = {tuple(t.user_attrs["worker"]) for t in trials}
    assert len(workers) == 2 and os.getpid() not in {pid for _, pid in workers}
    assert len([t for t in result.study.trials if counted(t)]) == 4  # neither a duplicate nor over the budget
    for t in trials:  # every trial is an ordinary run folder with its report
        assert (tmp_path / "s" / f"trial-{t.number:03d}" / "report.md").is_file()


def test_a_killed_worker_has_its_trial_run_again_exactly_once(fake_data, tmp_path):
    args = ["sweep", str(spec(tmp_path, epochs=6)), "--out", str(tmp_path / "s"), "--data-dir", str(fake_data),
            "--limit", "600"]
    proc = netspec_process(*args)
    checkpoint = tmp_path / "s" / "trial-000" / "checkpoint.pt"
    start = time.time()
    while not checkpoint.exists():
        assert proc.poll() is None and time.time() - start < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    [killed] = [t for t in trials_of(tmp_path / "s") if t.state == TrialState.RUNNING]
    again = netspec_process(*args)
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    trials = assert_each_grid_point_completed_once(tmp_path / "s")
    [failed] = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == killed.number
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params


def test_an_edited_search_space_is_refused_not_mixed(fake_data, tmp_path):
    path = spec(tmp_path)
    sweep(path, out=tmp_path / "s", data_dir=fake_data, limit=400, grid=["train.batch_size=32"],
          overrides=("sweep.grid={train.batch_size: [32]}",))
    with pytest.raises(RunError, match=r"another search space \(train.batch_size: \[32\] -> \[128, 256\]\).*--out"):
        sweep(path, out=tmp_path / "s", data_dir=fake_data, limit=400, grid=["train.batch_size=128,256"],
              overrides=("sweep.grid={train.batch_size: [32]}",))


VIT = """name: tiny
data: {validation: 100}
model:
  vit: {patch_size: 7, dim: 8, depth: 1, heads: 1, dim_head: 4, mlp_dim: 8}
train: {epochs: 1, batch_size: 64}
"""


def test_a_combination_the_checks_refuse_is_a_failed_trial_with_its_reason(fake_data, tmp_path):
    path = tmp_path / "vit.yaml"
    path.write_text(VIT)
    # 4 and 7 tile 28 (the ends are checked up front); 5 and 6 inside the range do not
    result = sweep(path, ranges=["model.vit.patch_size=4:7:int"], sampler="random", trials=9, out=tmp_path / "s",
                   data_dir=fake_data, limit=200)
    by_size = {t.params["model.vit.patch_size"]: t for t in result.study.trials}
    bad = [t for size, t in by_size.items() if 28 % size]
    assert bad, "the seeded sampler tried only tiling sizes"
    for t in bad:
        assert t.state == TrialState.FAIL and "does not tile a 28x28 image" in t.user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in result.study.trials) >= 1
    # rerun: the failed combinations are not retried forever, nothing crashes
    again = sweep(path, ranges=["model.vit.patch_size=4:7:int"], sampler="random", trials=9, out=tmp_path / "s",
                  data_dir=fake_data, limit=200)
    assert len(again.study.trials) == len(result.study.trials)


def test_integer_ranges_use_one_rounding_rule():
    key, r = parse_range("train.batch_size=0.9:64:log:int")
    assert key == "train.batch_size" and r.bounds() == (1, 64)
    study = optuna.create_study()
    trial = study.ask()
    assert 1 <= trial.suggest_int(key, *r.bounds(), log=True) <= 64
    with pytest.raises(SpecError, match="no whole number >= 1 lies between 0.2 and 0.9"):
        parse_range("train.batch_size=0.2:0.9:log:int")


def test_sweep_md_draws_no_conclusion_from_one_trial_per_value():
    from netspec.report.sweep_report import effects

    row = lambda n, epochs, acc: {"trial": n, "state": "complete", "val_accuracy": acc,  # noqa: E731
                                  "settings": {"train.epochs": epochs}}
    [line] = effects([row(0, 30, 0.99), row(1, 10, 0.96), row(2, 10, 0.97)], ["train.epochs"], {})
    assert "too few finished trials to say (at least 2 per value are needed; 3 in all)" in line
    [line] = effects([row(0, 30, 0.99), row(1, 10, 0.96), row(2, 10, 0.97), row(3, 30, 0.98)], ["train.epochs"], {})
    assert "best 30, worst 10 (mean val acc 0.9850 over 2 trials vs 0.9650 over 2" in line


def test_ctrl_c_in_a_sweep_is_one_line_with_the_command_that_continues_it(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import netspec.sweeps.sweep as sweep_mod
    from netspec.cli import app
    from netspec.errors import Interrupted

    def interrupted(*a, **kw):
        raise Interrupted("sweep interrupted; runs/tiny-sweep keeps every finished trial. Run the same netspec sweep "
                          "command again to continue (the interrupted trial runs again)", tmp_path)

    monkeypatch.setattr(sweep_mod, "sweep", interrupted)
    monkeypatch.setattr(sys, "argv", ["netspec", "sweep", "specs/mlp.yaml", "--limit", "5000"])
    r = CliRunner().invoke(app, ["sweep", "specs/mlp.yaml", "--limit", "5000"])
    assert r.exit_code == 130 and "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].endswith(":  netspec sweep specs/mlp.yaml --limit 5000")
