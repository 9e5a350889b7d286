"""The run folder's records, typed and owned by RunDir: each written and read back through its
dataclass, each read checked against its JSON Schema (one CheckpointError naming the file and
the place), a missing record refused, how a run ended an enum with its reason; the API's outputs
typed objects."""
from __future__ import annotations

import json
import types
from dataclasses import fields

import pytest
import torch

import netspec
from conftest import SPECS, quick_mlp, run
from netspec.errors import CheckpointError
from netspec.runner.metrics import Metrics, Status
from netspec.runner.records import DataRecord, RulesRecord, RunRecord
from netspec.runner.rundir import RunDir, claim_owner

MNIST_RECORD = DataRecord(classes=tuple("0123456789"), image_shape=(1, 28, 28), mean=(0.1306,), std=(0.3081,),
                          dataset="mnist", input_shape=(784,), stats_from="training split", loading="memory",
                          loading_reason="", workers=0,
                          images={"train": 1100, "validation": 100, "test": 300, "train_available": 1100})


def _edited(folder, name: str, **changes) -> RunDir:
    path = folder / name
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return RunDir(folder)


def test_each_record_is_written_and_read_back_as_its_dataclass(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.write_record(MNIST_RECORD)
    run_dir.write_record(RunRecord(limit=600, command="netspec run x.yaml", data_dir=str(tmp_path)))
    run_dir.write_record(RulesRecord(tuple(quick_mlp().rules)))
    ended = Metrics(name="mlp", status=Status.FAILED, reason="non-finite loss at epoch 2, step 3", epochs_completed=1)
    run_dir.write_record(ended)
    assert run_dir.read_record(DataRecord) == MNIST_RECORD
    assert run_dir.read_record(RunRecord) == RunRecord(600, "netspec run x.yaml", str(tmp_path), 1, None)
    assert run_dir.read_record(RunRecord).existing_data_dir == str(tmp_path)
    assert [r.to_dict() for r in run_dir.read_record(RulesRecord).rule_sets] == [r.to_dict() for r in quick_mlp().rules]
    assert run_dir.metrics() == ended and run_dir.metrics().status is Status.FAILED
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (written["status"], written["reason"]) == ("failed", "non-finite loss at epoch 2, step 3")
    assert ended.status_text == "failed: non-finite loss at epoch 2, step 3" and not run_dir.finished()


@pytest.mark.parametrize("name, change, says", [
    ("data.json", {"std": [-1]}, "data.json was edited or damaged: std[0]: -1 is less than the minimum of 1e-06"),
    ("data.json", {"std": [1e-320]}, "data.json was edited or damaged: std[0]: 1e-320 is less than the minimum of 1e-06"),
    ("metrics.json", {"test_accuracy": 5}, "metrics.json was edited or damaged: test_accuracy: 5 is greater than the "
                                           "maximum of 1"),
    ("metrics.json", {"epochs_completed": -1}, "metrics.json was edited or damaged: epochs_completed: -1 is less than "
                                               "the minimum of 0"),
    ("data.json", {"classes": ["0", 1]}, "data.json was edited or damaged: classes[1]: 1 is not of type 'string'"),
    ("data.json", {"mean": [0.1, 0.2]}, "data.json was edited or damaged: mean [0.1, 0.2]: one finite number per channel (1)"),
    ("run.json", {"limit": "600"}, "run.json was edited or damaged: limit: '600' is not of type 'integer', 'null'"),
    ("metrics.json", {"test_accuracy": "0.99"},
     "metrics.json was edited or damaged: test_accuracy: '0.99' is not of type 'number', 'null'"),
    ("metrics.json", {"status": "failed: non-finite loss"},
     "metrics.json was edited or damaged: status: 'failed: non-finite loss' is not one of "
     "['finished', 'interrupted', 'failed', 'stopped']"),
    ("metrics.json", {"epochs_completed": True}, "metrics.json was edited or damaged: epochs_completed: True is not of type 'integer'"),
])
def test_a_hand_edited_record_is_one_error_naming_the_file_and_the_place(tmp_path, name, change, says):
    run_dir = RunDir(tmp_path)
    run_dir.write_record(MNIST_RECORD)
    run_dir.write_record(RunRecord(limit=None, command="netspec run x.yaml", data_dir=None))
    run_dir.write_record(Metrics(name="mlp", status=Status.FINISHED))
    _edited(tmp_path, name, **change)
    kind = {"data.json": DataRecord, "run.json": RunRecord, "metrics.json": Metrics}[name]
    with pytest.raises(CheckpointError) as e:
        run_dir.read_record(kind)
    assert str(e.value) == f"{tmp_path / name}{says[len(name):]}; rerun the spec to write it again"


def test_a_record_missing_a_key_or_not_an_object_is_refused(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.write_record(Metrics(name="mlp", status=Status.FINISHED))
    record = json.loads((tmp_path / "metrics.json").read_text())
    del record["speed"]
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"metrics.json was edited or damaged: the record: 'speed' is a required "):
        run_dir.metrics()
    (tmp_path / "rules.json").write_text(json.dumps([{"name": 3}]))
    with pytest.raises(CheckpointError, match=r"rules.json was edited or damaged: \[0\].name: 3 is not of type 'string'"):
        run_dir.read_record(RulesRecord)
    newer = Metrics.from_dict(Metrics(name="mlp", status=Status.STOPPED).to_dict() | {"a_key_from_later": 1})
    assert newer == Metrics(name="mlp", status=Status.STOPPED)  # a key this version does not know is ignored


@pytest.mark.parametrize("name", ["data.json", "run.json", "rules.json", "metrics.json"])
def test_a_folder_lacking_a_record_is_one_clear_error(tmp_path, name):
    run_dir = RunDir(tmp_path)
    kind = {"data.json": DataRecord, "run.json": RunRecord, "rules.json": RulesRecord, "metrics.json": Metrics}[name]
    with pytest.raises(CheckpointError, match=f"^{tmp_path} has no {name}: its run stopped before writing it"):
        run_dir.read_record(kind)


def test_a_run_folder_without_rules_or_data_records_is_refused_not_guessed(fake_data, tmp_path):
    """No fixed MNIST statistics for a folder without data.json, no today's-rules check for one
    without rules.json: such a folder was never written by a released netspec."""
    from netspec.runner.reopen import check_run_spec

    trained = run(quick_mlp(), out=tmp_path / "r", data_dir=fake_data)
    (trained.run_dir / "data.json").unlink()
    with pytest.raises(CheckpointError, match="has no data.json"):
        netspec.open_run(tmp_path / "r").preprocessing
    (trained.run_dir / "rules.json").unlink()
    with pytest.raises(CheckpointError, match="has no rules.json"):
        check_run_spec(RunDir.open(tmp_path / "r"))


def test_an_empty_spec_yaml_is_not_a_claim_of_a_run(tmp_path):
    (tmp_path / "spec.yaml").write_text("")
    assert claim_owner(tmp_path / "spec.yaml") is None


def test_the_metrics_schema_is_made_from_the_dataclass():
    from netspec.runner.record_schema import schema_of

    schema = schema_of(Metrics)
    assert schema["required"] == [f.name for f in fields(Metrics)]
    assert schema["properties"]["status"] == {"enum": ["finished", "interrupted", "failed", "stopped"]}
    assert schema["properties"]["test_accuracy"] == {"type": ["number", "null"], "minimum": 0, "maximum": 1}
    assert schema_of(DataRecord)["required"] == ["classes", "image_shape", "mean", "std"]


def test_a_sweep_folder_with_a_study_db_and_no_storage_uses_its_journal(tmp_path):
    from netspec.sweeps.study import open_study

    (tmp_path / "study.db").write_bytes(b"")
    space = types.SimpleNamespace(sampler="random", prune=False, grid={})
    study, heartbeats = open_study(tmp_path, "s", None, space, 0)
    assert not heartbeats and (tmp_path / "study.journal").exists()


def test_the_api_returns_typed_objects_and_train_does_not_reopen_its_folder(fake_data, tmp_path, monkeypatch):
    from netspec import api
    from netspec.report.compare import ComparedRun, Comparison
    from netspec.runner.export import FilePrediction
    from netspec.runner.reopen import Evaluation

    spec = netspec.load(SPECS / "mlp.yaml", overrides={"train.epochs": 1, "data.validation": 100})
    monkeypatch.setattr(api, "open_run", lambda path: pytest.fail("train reopened its folder"))
    trained = netspec.train(spec, data_dir=fake_data, out=tmp_path / "a", limit=300, progress=False)
    monkeypatch.undo()
    assert trained.metrics.status is Status.FINISHED and trained.metrics.reason is None
    assert not trained.model.training and next(trained.model.parameters()).device == torch.device("cpu")
    reopened = netspec.open_run(tmp_path / "a")
    assert all(torch.equal(a, b) for a, b in zip(trained.model.state_dict().values(), reopened.model.state_dict().values()))
    assert isinstance(trained.preprocessing, DataRecord) and trained.preprocessing.image_shape == (1, 28, 28)
    ev = reopened.evaluate(fake_data)
    assert isinstance(ev, Evaluation) and ev.test_accuracy == trained.metrics.test_accuracy and ev.test_size == 300
    netspec.train(spec, data_dir=fake_data, out=tmp_path / "b", limit=300, progress=False)
    compared = netspec.compare(tmp_path / "a", tmp_path / "b")
    assert isinstance(compared, Comparison) and all(isinstance(r, ComparedRun) for r in compared.runs)
    assert [r.status for r in compared.runs] == [Status.FINISHED] * 2 and compared.to_dict()["runs"][0]["status"] == "finished"
    (tmp_path / "not-an-image.png").write_text("no")
    rows = reopened.predict_files([tmp_path / "not-an-image.png"])
    assert rows == [FilePrediction(str(tmp_path / "not-an-image.png"), error=rows[0].error)] and rows[0].error


@pytest.mark.parametrize("text, says", [
    ('{"test_accuracy": NaN}', "NaN is not a number a run writes"),
    ('{"test_accuracy": 1e999}', "1e999 is not a finite number"),
    ("[" * 100_000 + "]" * 100_000, "it is nested too deeply"),
])
def test_numbers_no_run_writes_and_nesting_too_deep_are_one_line(tmp_path, text, says):
    """Found by attacking the records: NaN and 1e999 read as numbers and were shown (eval printed
    "recorded by the run: nan"); 100,000 nested brackets were a RecursionError traceback."""
    (tmp_path / "metrics.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"cannot read .*metrics.json: {says}"):
        RunDir(tmp_path).metrics()


def test_a_history_with_other_columns_names_them(tmp_path):
    from netspec.runner.records import read_history

    (tmp_path / "history.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CheckpointError, match=r"history.csv: its columns are \['a', 'b'\], a history's \['epoch'"):
        read_history(RunDir(tmp_path))
