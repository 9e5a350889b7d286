"""model.safetensors (issue 33): every run writes its weights in the safetensors format too, read by
the real `safetensors` library; predict, eval, export and netspec.open_run prefer it (no pickle),
and a grader accepts it in place of model.pt, judging the size its header declares first."""
from __future__ import annotations

import csv
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.errors import CheckpointError

MLP = """name: {name}
data: {{validation: 100}}
model:
  layers:
    - Flatten
    - Linear: {{out_features: 32}}
    - ReLU
    - Linear: {{out_features: 10}}
train: {{epochs: 1, batch_size: 32, precision: fp32, optimizer: {{name: adam}}}}
"""
RUBRIC = """name: hw
mode: evaluate
points:
  valid: 10
  accuracy:
    - {at_least: 0.9, points: 20}
    - {at_least: 0.5, points: 10}
limits: {seconds: 60}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fake_data) -> Path:
    """A real short run of a small MLP (a few seconds): its folder."""
    out = tmp_path_factory.mktemp("st-run") / "run"
    netspec.train(netspec.load(MLP.format(name="alice")), out=out, data_dir=fake_data, progress=False)
    return out


def _images(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)


def _no_torch_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called: model.safetensors should have been read")

    monkeypatch.setattr(torch, "load", refuse)


def test_the_real_reader_opens_model_safetensors_and_it_equals_model_pt(trained):
    tensors = load_file(trained / "model.safetensors")
    saved = torch.load(trained / "model.pt", weights_only=True)
    state = saved["state_dict"]
    assert list(tensors) and sorted(tensors) == sorted(state)
    for k in state:
        assert tensors[k].dtype == state[k].dtype and tensors[k].shape == state[k].shape
        assert torch.equal(tensors[k], state[k]), k
    from safetensors import safe_open

    with safe_open(str(trained / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["data"]) == saved["data"] == json.loads((trained / "data.json").read_text())
    assert int(meta["epoch"]) == saved["epoch"] == 1 and meta["netspec"] == netspec.__version__
    assert meta["format"] == "pt"


def test_a_run_without_model_pt_predicts_exactly_as_before(trained, tmp_path, fake_data, monkeypatch):
    images = _images()
    before = netspec.open_run(trained).predict(images)
    recorded = json.loads((trained / "metrics.json").read_text())["test_accuracy"]
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / "model.pt").unlink()
    (copy / "checkpoint.pt").unlink()
    _no_torch_load(monkeypatch)  # nothing of the run is unpickled
    after = netspec.open_run(copy).predict(images)
    assert after.labels == before.labels and torch.equal(after.probabilities, before.probabilities)
    r = CliRunner().invoke(app, ["eval", str(copy), "--data-dir", str(fake_data), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["test_accuracy"] == recorded


def test_a_run_with_both_files_reads_the_safetensors_one(trained, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    _no_torch_load(monkeypatch)
    run = netspec.open_run(copy)
    expected = load_file(trained / "model.safetensors")
    assert all(torch.equal(v, expected[k]) for k, v in run.model.state_dict().items())


def test_a_run_without_safetensors_still_reads_model_pt(trained, tmp_path):
    """Folders from before model.safetensors: model.pt, as always."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / "model.safetensors").unlink()
    images = _images()
    assert torch.equal(netspec.open_run(copy).predict(images).probabilities,
                       netspec.open_run(trained).predict(images).probabilities)


@pytest.mark.parametrize("damage", ["keys", "bytes"])
def test_a_foreign_model_safetensors_is_one_clear_error(trained, tmp_path, fake_data, damage):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    if damage == "keys":
        save_file({"other.weight": torch.zeros(2)}, copy / "model.safetensors")
    else:
        (copy / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{nope")
    r = CliRunner().invoke(app, ["eval", str(copy), "--data-dir", str(fake_data)])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
    assert "model.safetensors" in r.output


# --- grading -------------------------------------------------------------------

def _huge_header(path: Path, declared: int) -> None:
    """A few bytes whose header declares one tensor of `declared` bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [declared], "data_offsets": [0, declared]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def test_a_safetensors_declaring_more_than_the_limit_is_refused_before_loading(tmp_path, monkeypatch):
    import safetensors.torch

    from netspec.grading.measure import _submitted
    from netspec.grading.verdict import MAX_WEIGHTS

    def never(*args, **kwargs):
        raise AssertionError("the tensors were loaded")

    monkeypatch.setattr(safetensors.torch, "load_file", never)
    spec = netspec.load(MLP.format(name="s")).config
    _huge_header(tmp_path / "model.safetensors", 300 << 20)
    with pytest.raises(CheckpointError) as e:
        _submitted(str(tmp_path / "model.safetensors"), spec)
    assert str(e.value) == "model.safetensors declares 300 MiB of weights; at most 256 MiB"
    # a header length alone past the limit is refused before the header is read
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", MAX_WEIGHTS) + b"{}")
    with pytest.raises(CheckpointError, match=r"^model.safetensors declares a 256 MiB header; at most 256 MiB in all$"):
        _submitted(str(tmp_path / "model.safetensors"), spec)


def test_a_submitted_safetensors_needs_the_data_record_in_its_metadata(tmp_path):
    from netspec.grading.measure import _submitted

    spec = netspec.load(MLP.format(name="s"))
    state = spec.build().state_dict()
    path = tmp_path / "model.safetensors"
    save_file(state, path)  # another tool's file: no netspec metadata
    with pytest.raises(CheckpointError, match=r"^model.safetensors is not a netspec run's \(no data record"):
        _submitted(str(path), spec.config)
    record = {"classes": [str(i) for i in range(10)], "image_shape": [1, 28, 28], "mean": [0.2], "std": [0.0]}
    save_file(state, path, metadata={"data": json.dumps(record)})
    with pytest.raises(CheckpointError, match=r"^model.safetensors's data record was edited or damaged: std\[0\]: 0.0 is "
                                              r"less than the minimum of 1e-06"):
        _submitted(str(path), spec.config)
    record["std"] = [0.3]
    save_file(state, path, metadata={"data": json.dumps(record)})
    loaded, got = _submitted(str(path), spec.config)
    assert [list(got.classes), list(got.image_shape), list(got.mean), list(got.std)] == [
        record["classes"], record["image_shape"], record["mean"], record["std"]]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_submission_with_both_files_is_graded_by_its_safetensors(tmp_path):
    from netspec.grading.verdict import folder_entry

    sub = tmp_path / "ana"
    (sub / "run").mkdir(parents=True)
    (sub / "spec.yaml").write_text(MLP.format(name="ana"))
    (sub / "run" / "model.pt").write_bytes(b"x")
    (sub / "run" / "model.safetensors").write_bytes(b"x")
    assert folder_entry(sub).weights == str(sub / "run" / "model.safetensors")
    (sub / "model.pt").write_bytes(b"x")
    assert "several weights files (model.pt, run/model.safetensors)" in folder_entry(sub).problem


def _gradebook(folder: Path) -> dict[str, dict]:
    with open(folder / "gradebook.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


class Pwn:
    """A pickle that runs a command when loaded: with a model.safetensors beside it, never loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_safetensors_submission_grades_exactly_as_the_same_pt_submission(tmp_path, trained, fake_data):
    from netspec.grading.classroom import grade

    subs = tmp_path / "subs"
    for name, files in (("pt", ["model.pt"]), ("st", ["model.safetensors"]), ("both", [])):
        (subs / name).mkdir(parents=True)
        (subs / name / "spec.yaml").write_text(MLP.format(name=name))
        for f in files:
            shutil.copy(trained / f, subs / name / f)
    shutil.copytree(trained, subs / "both" / "run")  # a whole run folder, its model.pt a code-running pickle
    torch.save({"state_dict": Pwn(tmp_path / "pwned")}, subs / "both" / "run" / "model.pt")
    (subs / "huge").mkdir()
    (subs / "huge" / "spec.yaml").write_text(MLP.format(name="huge"))
    _huge_header(subs / "huge" / "model.safetensors", 300 << 20)
    (tmp_path / "rubric.yaml").write_text(RUBRIC)

    book = grade(subs, tmp_path / "rubric.yaml", out=tmp_path / "grades", data_dir=fake_data)
    rows = {r.student: r for r in book.rows}
    recorded = json.loads((trained / "metrics.json").read_text())["test_accuracy"]
    assert rows["pt"].status == "graded" and rows["pt"].test_accuracy == pytest.approx(recorded, abs=5e-5)
    same = ("status", "reason", "total", "items", "test_accuracy", "test_size", "params")
    for student in ("st", "both"):
        assert {k: rows[student].to_dict()[k] for k in same} == {k: rows["pt"].to_dict()[k] for k in same}, student
    on_disk = _gradebook(tmp_path / "grades")
    points = [c for c in on_disk["pt"] if c.endswith(")")]  # the rubric's columns: "valid spec (10)", ...
    assert points and all(on_disk["st"][c] == on_disk["both"][c] == on_disk["pt"][c] for c in points)
    assert not (tmp_path / "pwned").exists()
    assert rows["huge"].status != "graded"
    assert rows["huge"].reason == "model.safetensors declares 300 MiB of weights; at most 256 MiB"


def test_a_safetensors_header_or_metadata_nested_too_deeply_is_one_clear_error(tmp_path):
    """Found by attacking the reader: JSON nested 100,000 deep raised RecursionError through `netspec eval`."""
    from netspec.runner.safeweights import metadata, read_header

    deep = ("[" * 100_000 + "]" * 100_000).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a safetensors file \(its header is nested "
                                              r"too deeply\)$"):
        read_header(path)
    # metadata that will not parse is left as text, for the caller to refuse
    assert metadata({"__metadata__": {"data": deep.decode(), "epoch": "3"}}) == {"data": deep.decode(), "epoch": 3}
