"""Experiment tracking (issue 33): runs and sweeps recorded in TensorBoard and MLflow, read back
with their own readers (TensorBoard's EventAccumulator, MLflow's MlflowClient)."""
from __future__ import annotations

import csv
import json
import os
import sys
import time

import pytest
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.errors import Interrupted, RunError
from netspec.runner.observer import Observer

from conftest import SPECS, TINY_SWEEP
from conftest import ctrl_c

QUICK = {"train.epochs": 2, "data.validation": 200}


def _train(fake_data, out, log, **kw):
    spec = netspec.load(SPECS / "mlp.yaml", overrides=QUICK)
    return netspec.train(spec, data_dir=fake_data, out=out, limit=600, progress=kw.pop("progress", False), log=log, **kw)


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow store (SQLite) under tmp_path, its artifacts beside it; the client reading it."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlartifacts
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(uri)


# --- the registry -------------------------------------------------------------------

def test_an_unknown_tracker_is_one_line_naming_the_known_ones(fake_data, tmp_path):
    with pytest.raises(RunError, match=r"^--log wandb: no such tracker; the known ones are mlflow, tensorboard$"):
        _train(fake_data, tmp_path / "r", ["wandb"])
    assert not (tmp_path / "r").exists()


def test_mlflow_missing_is_one_line_naming_the_extra_before_training(fake_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as where it is not installed
    monkeypatch.delitem(sys.modules, "netspec.trackers.mlflow", raising=False)
    result = CliRunner().invoke(app, ["run", str(SPECS / "mlp.yaml"), "--set", "train.epochs=1", "--data-dir",
                                      str(fake_data), "--out", str(tmp_path / "r"), "--log", "mlflow"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --log mlflow needs MLflow: pip install 'netspec[mlflow]'"
    assert not (tmp_path / "r").exists()  # nothing trained, no folder made


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "postgresql+psycopg2://me:secret@127.0.0.1:9/db"])
def test_an_unreachable_mlflow_server_is_one_line_before_training(uri, fake_data, tmp_path, monkeypatch):
    """A server (port 9, the discard port: nothing listens) or a database store; MLflow alone would
    retry either for minutes."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", str(SPECS / "mlp.yaml"), "--set", "train.epochs=1", "--data-dir",
                                      str(fake_data), "--out", str(tmp_path / "r"), "--log", "mlflow"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    shown = uri.replace(":secret@", ":***@")  # a password is never printed
    assert len(lines) == 1 and lines[0].startswith(f"error: --log mlflow: the MLflow tracking store {shown} cannot be "
                                                   f"used (nothing answers"), result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
    assert time.monotonic() - started < 30  # no minutes of retries
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # set only while the tracker asked


# --- TensorBoard --------------------------------------------------------------------

def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def _hparams(events) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    return {k: v.number_value if v.HasField("number_value") else v.string_value if v.HasField("string_value")
            else v.bool_value for k, v in values.items()}


def test_tensorboard_holds_the_runs_history_test_accuracy_settings_and_figures(fake_data, tmp_path):
    run = _train(fake_data, tmp_path / "r", ["tensorboard"])
    events = _events(tmp_path / "r" / "tensorboard")
    history = _history(tmp_path / "r")
    for field in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        scalars = events.Scalars(f"epoch/{field}")
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([h[field] for h in history], abs=2e-6)  # csv: 6 decimals
    assert [s.value for s in events.Scalars("test/accuracy")] == pytest.approx([run.metrics.test_accuracy])
    steps = [s.step for s in events.Scalars("step/train_loss")]
    assert steps == sorted(steps) and steps[-1] == 2 * 10  # 600 images in batches of 64: 10 steps an epoch
    assert _hparams(events)["train.batch_size"] == 64 and _hparams(events)["train.optimizer.name"] == "adam"
    assert "figures/confusion" in events.Tags()["images"]
    image = events.Images("figures/confusion")[0]
    assert image.encoded_image_string[:4] == b"\x89PNG" and image.width > 100


@pytest.mark.slow
def test_a_sweeps_trials_line_up_in_tensorboards_hparams(write_spec, fake_data, tmp_path):
    result = netspec.sweep(write_spec(TINY_SWEEP), out=tmp_path / "s", data_dir=fake_data, limit=300,
                           progress=False, log=["tensorboard"])
    folders = sorted((tmp_path / "s").glob("trial-*/tensorboard"))
    assert len(folders) == 2 and len(result.rows) == 2
    sizes = sorted(_hparams(_events(f))["train.batch_size"] for f in folders)
    assert sizes == [32, 64]


# --- MLflow -------------------------------------------------------------------------

def test_mlflow_holds_the_runs_params_metrics_tags_and_artifacts(fake_data, tmp_path, mlflow_store):
    run = _train(fake_data, tmp_path / "r", ["mlflow"])
    run_id = json.loads((tmp_path / "r" / "mlflow.json").read_text())["run_id"]
    got = mlflow_store.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "r"
    assert mlflow_store.get_experiment(got.info.experiment_id).name == "mlp"  # the spec's name
    params = got.data.params
    assert params["train.epochs"] == "2" and params["train.optimizer.lr"] == "0.002" and params["data.validation"] == "200"
    assert params["model.layers"].startswith("[{")  # the layers, as text
    assert got.data.tags["netspec.rules"] == "mnist-mlp" and got.data.tags["netspec.draft"] == "False"
    assert got.data.tags["netspec.device"] == "cpu" and got.data.tags["netspec.precision"] == "fp32"
    history = _history(tmp_path / "r")
    for field in ("train_loss", "val_acc", "lr"):
        metric = mlflow_store.get_metric_history(run_id, f"epoch/{field}")
        assert [m.step for m in metric] == [1, 2]
        assert [m.value for m in metric] == pytest.approx([h[field] for h in history], abs=2e-6)
    assert [m.value for m in mlflow_store.get_metric_history(run_id, "test/accuracy")] == [run.metrics.test_accuracy]
    steps = [m.step for m in mlflow_store.get_metric_history(run_id, "step/train_loss")]
    assert sorted(steps) == steps and steps[-1] == 20
    artifacts = {a.path for a in mlflow_store.list_artifacts(run_id)}
    assert {"spec.yaml", "report.md", "model.safetensors", "confusion.png", "loss.png"} <= artifacts


class InterruptAt(Observer):
    def step(self, *, epoch, step, loss):
        if epoch == 2:
            ctrl_c()


def test_a_resumed_run_continues_its_mlflow_run(fake_data, tmp_path, mlflow_store):
    with pytest.raises(Interrupted):
        _train(fake_data, tmp_path / "r", ["mlflow"], progress=InterruptAt())
    run_id = json.loads((tmp_path / "r" / "mlflow.json").read_text())["run_id"]
    assert mlflow_store.get_run(run_id).info.status == "KILLED"
    netspec.resume(tmp_path / "r", data_dir=fake_data, progress=False)  # logged where it started: no log= needed
    assert json.loads((tmp_path / "r" / "mlflow.json").read_text())["run_id"] == run_id
    experiment = mlflow_store.get_run(run_id).info.experiment_id
    assert len(mlflow_store.search_runs([experiment])) == 1  # one MLflow run, not two
    assert mlflow_store.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in mlflow_store.get_metric_history(run_id, "epoch/val_acc")] == [1, 2]
    steps = [m.step for m in mlflow_store.get_metric_history(run_id, "step/train_loss")]
    assert len(steps) == len(set(steps))  # the interrupted epoch's steps are recorded once, as trained again


@pytest.mark.slow
def test_a_sweep_is_a_parent_mlflow_run_with_a_nested_run_per_trial(write_spec, fake_data, tmp_path, mlflow_store):
    spec = write_spec(TINY_SWEEP)
    netspec.sweep(spec, out=tmp_path / "s", data_dir=fake_data, limit=300, progress=False, log=["mlflow"])
    parent = json.loads((tmp_path / "s" / "mlflow.json").read_text())["run_id"]
    experiment = mlflow_store.get_run(parent).info.experiment_id
    children = mlflow_store.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.params["train.batch_size"] for r in children) == ["32", "64"]
    assert {r.info.run_name for r in children} == {"trial-000", "trial-001"}
    assert mlflow_store.get_run(parent).info.status == "FINISHED"
    # run again (nothing left to do): the same parent, no second one
    netspec.sweep(spec, out=tmp_path / "s", data_dir=fake_data, limit=300, progress=False, log=["mlflow"])
    assert json.loads((tmp_path / "s" / "mlflow.json").read_text())["run_id"] == parent
    assert len(mlflow_store.search_runs([experiment])) == 3


@pytest.mark.slow
def test_a_sweep_in_worker_processes_nests_its_trials_too(write_spec, fake_data, tmp_path, mlflow_store):
    netspec.sweep(write_spec(TINY_SWEEP), out=tmp_path / "s", data_dir=fake_data, limit=300, progress=False,
                  workers=2, log=["mlflow"])
    parent = json.loads((tmp_path / "s" / "mlflow.json").read_text())["run_id"]
    experiment = mlflow_store.get_run(parent).info.experiment_id
    children = mlflow_store.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}


from test_postgres import postgres_url  # noqa: E402,F401 - the fixture: a PostgreSQL server of this module's own


@pytest.mark.slow
def test_mlflow_in_a_postgresql_backend_store(postgres_url, fake_data, tmp_path, monkeypatch):  # noqa: F811
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_url)
    _train(fake_data, tmp_path / "r", ["mlflow"])
    record = json.loads((tmp_path / "r" / "mlflow.json").read_text())
    assert record["tracking_uri"] == postgres_url
    client = MlflowClient(postgres_url)
    got = client.get_run(record["run_id"])
    assert got.info.status == "FINISHED" and got.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(record["run_id"], "epoch/val_acc")] == [1, 2]


def test_observers_tell_each_in_order_and_drop_a_failing_tracker_with_a_note():
    from netspec.runner.observer import Observers
    from netspec.trackers.base import Tracker

    heard = []

    class Say(Observer):
        def __init__(self, name):
            self.name = name

        def epoch(self, stats):
            heard.append((self.name, stats))

        def note(self, text):
            heard.append((self.name, text))

    class Broken(Tracker):
        title = "Broken"

        def epoch(self, stats):
            raise ConnectionError("server went away")

    class Stop(Observer):
        def epoch(self, stats):
            raise KeyboardInterrupt

    both = Observers([Say("a"), None, Broken(), Say("b")])
    both.epoch(1)
    both.epoch(2)
    assert heard == [("a", 1), ("a", "Broken stopped recording this run (ConnectionError: server went away); "
                                       "training goes on without it"),
                     ("b", "Broken stopped recording this run (ConnectionError: server went away); "
                           "training goes on without it"), ("b", 1), ("a", 2), ("b", 2)]
    with pytest.raises(KeyboardInterrupt):  # an observer that is not optional (pruning, a stop) is never dropped
        Observers([Stop(), Say("c")]).epoch(3)
    assert ("c", 3) not in heard
