"""Issue 34: commands that gave up too early or said it backwards (predict, compare), plots that
drew what is not there, and grading a part of a class or for Canvas. Each test fails on 5ae2471."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import netspec
from conftest import run
from conftest import check_file
from netspec.cli import app

cli = CliRunner()


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory, fake_data):
    folder = tmp_path_factory.mktemp("digit-run")
    spec = folder / "s.yaml"
    spec.write_text("name: s\ndata: {validation: 100}\nmodel:\n  layers: [Flatten, {Linear: {out_features: 10}}]\n"
                    "train: {epochs: 1, batch_size: 64}\n")
    run(check_file(spec), out=folder / "r", data_dir=fake_data, limit=200)
    return folder / "r"


# --- predict: every readable file, each unreadable one in its row, exit 1 at the end --------------

def test_predict_reads_every_good_file_and_reports_each_bad_one_in_its_row(tmp_path, digit_run):
    images = tmp_path / "imgs"
    images.mkdir()
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit, "L").save(images / "a.png")
    (images / "b.png").write_bytes(b"not a png at all")
    Image.fromarray(digit, "L").save(images / "c.png")
    result = cli.invoke(app, ["predict", str(digit_run), str(images), "--format", "json"])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.png", "c.png"]
    assert rows[0]["class"] == rows[2]["class"] and rows[0]["probability"] == pytest.approx(rows[2]["probability"])
    assert rows[0]["error"] is None and rows[1]["class"] is None
    assert rows[1]["error"].startswith("not an image netspec can read: cannot identify image file")
    assert "1 of 3 file(s) could not be read" in result.stderr
    shown = cli.invoke(app, ["predict", str(digit_run), str(images)], terminal_width=250)
    assert shown.exit_code == 1
    table = {line.split("│")[1].strip().rsplit("/", 1)[-1]: line for line in shown.stdout.splitlines() if ".png" in line}
    assert "not an image netspec can read" in table["b.png"] and "not an image" not in table["a.png"]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, fake_data):
    folder = tmp_path_factory.mktemp("mlp-run")
    spec = folder / "mlp.yaml"
    spec.write_text("name: mlp\ndata: {validation: 100}\nmodel:\n  layers: [Flatten, {Linear: {out_features: 16}}, "
                    "ReLU, {Linear: {out_features: 10}}]\ntrain: {epochs: 1, batch_size: 64}\n")
    run(check_file(spec), out=folder / "mlp", data_dir=fake_data, limit=200)
    return folder / "mlp"


# --- compare: first vs second, as typed ---------------------------------------------------------

def test_compare_says_the_architecture_in_the_commands_order(digit_run, mlp_run):
    result = cli.invoke(app, ["compare", str(mlp_run), str(digit_run)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert ("architecture mlp vs s (r): \n  changed: layer 1: Linear(out_features=16) -> Linear(out_features=10)\n"
            "  removed: layer 2: ReLU\n  removed: layer 3: Linear(out_features=10)\n") in result.stdout
    markdown = cli.invoke(app, ["compare", str(digit_run), str(mlp_run), "--format", "markdown"])
    assert "Architecture, s (r) vs mlp: \n- changed: layer 1: Linear(out_features=10) -> Linear(out_features=16)\n" \
           "- added: layer 2: ReLU\n- added: layer 3: Linear(out_features=10)\n" in markdown.stdout


# --- plots: the axes show what there is ---------------------------------------------------------

def _epoch(n: int, loss: float = 1.0):
    from netspec.runner.trainer import EpochStats

    return EpochStats(epoch=n, train_loss=loss, train_acc=0.5, val_loss=loss + 0.1, val_acc=0.5, seconds=1.0, lr=0.001)


def test_a_one_epoch_loss_figure_ends_at_epoch_one():
    from netspec.report.plots import loss_figure

    steps = [(k / 10, 2.0 - k / 10) for k in range(1, 11)]  # the within-epoch curve, epoch positions 0.1 .. 1.0
    ax = loss_figure([_epoch(1)], "one epoch", steps=steps).axes[0]
    assert list(ax.get_xticks()) == [0, 1]
    low, high = ax.get_xlim()
    assert 1 < high <= 1.1 and -0.1 <= low < 0  # no empty axis out to epoch 2
    alone = loss_figure([_epoch(1)], "one epoch, no steps").axes[0]
    assert list(alone.get_xticks()) == [1] and alone.get_xlim() == (0.5, 1.5)
    three = loss_figure([_epoch(n) for n in (1, 2, 3, 4)]).axes[0]
    assert list(three.get_xticks()) == [1, 2, 3, 4] and 4 < three.get_xlim()[1] < 4.2


def test_the_overlay_title_says_markers_for_one_epoch_runs():
    from netspec.report.plots import overlay_figure

    ones = overlay_figure({"a": [_epoch(1)], "b": [_epoch(1, 0.5)]}).axes[0]
    assert ones.get_title() == "training (circles) and validation (squares) loss: one epoch, one marker per run"
    assert ones.get_xlim() == (0.5, 1.5)
    mixed = overlay_figure({"a": [_epoch(1)], "b": [_epoch(1), _epoch(2)]}).axes[0]
    assert mixed.get_title() == ("training (solid, circles) and validation (dashed, squares) loss; one-epoch runs "
                                 "are markers alone")
    lines = overlay_figure({"b": [_epoch(1), _epoch(2)]}).axes[0]
    assert lines.get_title() == "training (solid) and validation (dashed) loss"


def test_the_class_histogram_counts_whole_submissions():
    from netspec.report.plots import accuracy_histogram

    ax = accuracy_histogram([0.95, 0.97, 0.99], "three students").axes[0]
    ax.figure.canvas.draw()  # the locator places the ticks when drawn
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


# --- grading: --only, a roster, Canvas's import -----------------------------------------------

RULES = "name: course\nallowed_layers: [Linear, ReLU, Flatten]\nfixed:\n  train.optimizer.name: adam\n"
RUBRIC = """name: hw1
rules: [course.yaml]
mode: evaluate
points:
  valid: 10
  rules: 5
  accuracy: {from: 0.5, to: 0.9, points: 20}
limits: {seconds: 20}
"""


@pytest.fixture
def a_class(tmp_path):
    (tmp_path / "course.yaml").write_text(RULES)
    (tmp_path / "rubric.yaml").write_text(RUBRIC)
    subs = tmp_path / "subs"
    subs.mkdir()
    for student in ("alice", "bob", "carol"):
        (subs / f"{student}.yaml").write_text(f"name: {student}\n")  # invalid (no model): judged, never trained
    return tmp_path


def _study(folder: Path):
    import optuna

    from netspec.grading.classroom import JOURNAL

    store = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL)))
    return optuna.load_study(study_name="grade-hw1", storage=store)


def _trials(folder: Path, state: str = "COMPLETE") -> list[dict]:
    return [t.user_attrs for t in _study(folder).get_trials() if t.state.name == state]


def _gradebook(folder: Path, name: str = "gradebook.csv") -> list[list[str]]:
    return list(csv.reader((folder / name).open()))


def test_grade_only_regrades_the_named_students_and_keeps_the_class(a_class, fake_data):
    out = a_class / "grades"
    common = [str(a_class / "subs"), "--rubric", str(a_class / "rubric.yaml"), "--out", str(out),
              "--data-dir", str(fake_data)]
    first = cli.invoke(app, ["grade", *common])
    assert first.exit_code == 0, first.output
    assert sorted(t["student"] for t in _trials(out)) == ["alice", "bob", "carol"]
    (a_class / "subs" / "carol.yaml").write_text("name: carol2\n")  # changed since: a plain rerun would grade her
    _study(out).enqueue_trial({}, user_attrs={"student": "carol", "source": "left by an interrupted run"})
    again = cli.invoke(app, ["grade", *common, "--only", "bob", "--only", "alice"])
    assert again.exit_code == 0, again.output
    assert [t["student"] for t in _trials(out, "WAITING")] == ["carol"]  # still queued for the next plain run
    assert [line.split(":")[0] for line in again.stdout.splitlines()[:2]] == ["alice", "bob"]  # only they were graded
    assert "carol" not in again.stdout.split("graded;")[0]
    assert sorted(t["student"] for t in _trials(out)) == ["alice", "alice", "bob", "bob", "carol"]
    book = {row[0]: row for row in _gradebook(out)[1:]}
    assert sorted(book) == ["alice", "bob", "carol"]  # the whole class, as before
    assert book["alice"][1] == book["bob"][1] == "invalid" and book["carol"][1] == "not graded"
    unknown = cli.invoke(app, ["grade", *common, "--only", "dave"])
    assert unknown.exit_code == 1
    assert "--only dave: no such submission in" in unknown.output and "alice, bob, carol" in unknown.output
    rest = cli.invoke(app, ["grade", *common])  # and a plain rerun grades what --only left
    assert rest.exit_code == 0 and rest.stdout.startswith("carol:"), rest.output


def test_a_roster_names_the_students_and_the_gradebook_is_written_for_canvas(a_class, fake_data):
    roster = a_class / "roster.csv"
    roster.write_text("folder,name,id,email,section\n"
                      "alice,\"Smith, Alice\",S001,alice@uni.edu,L01\n"
                      "bob,Bob Jones,S002,bob@uni.edu,L02\n"
                      "dave,Dave Null,S004,dave@uni.edu,L01\n")  # dave submitted nothing; carol is not listed
    out = a_class / "grades"
    result = cli.invoke(app, ["grade", str(a_class / "subs"), "--rubric", str(a_class / "rubric.yaml"), "--out",
                              str(out), "--data-dir", str(fake_data), "--roster", str(roster)])
    assert result.exit_code == 0, result.output
    assert "not on the roster (no name or ID, not in gradebook-canvas.csv): carol" in result.stderr
    book = _gradebook(out)
    assert book[0][:6] == ["student", "name", "id", "email", "status", "total"]
    assert [row[:5] for row in book[1:]] == [["alice", "Smith, Alice", "S001", "alice@uni.edu", "invalid"],
                                             ["bob", "Bob Jones", "S002", "bob@uni.edu", "invalid"],
                                             ["carol", "", "", "", "invalid"],
                                             ["dave", "Dave Null", "S004", "dave@uni.edu", "missing"]]
    assert _gradebook(out, "gradebook-canvas.csv") == [
        ["Student", "ID", "SIS User ID", "Section", "hw1"],
        ["    Points Possible", "", "", "", "40"],
        ["Smith, Alice", "", "S001", "L01", "0"],
        ["Bob Jones", "", "S002", "L02", "0"],
        ["Dave Null", "", "S004", "L01", "0"]]
    bad = a_class / "bad.csv"
    bad.write_text("name,id,email\nAlice,S001,a@uni.edu\n")
    refused = cli.invoke(app, ["grade", str(a_class / "subs"), "--rubric", str(a_class / "rubric.yaml"), "--out",
                               str(out), "--data-dir", str(fake_data), "--roster", str(bad)])
    assert refused.exit_code == 1 and f"{bad}:1: the roster has no folder column" in refused.output


# --- the docs a newcomer and an instructor read ---------------------------------------------------

ROOT = Path(netspec.__file__).parent.parent  # the checkout whose netspec is imported, its docs beside it


def test_the_grading_docs_name_every_status_and_every_column():
    from netspec.grading.rubric import load_rubric
    from netspec.grading.verdict import columns
    from netspec.report.gradebook import STATUS_TEXT

    text = (ROOT / "docs" / "grading.md").read_text()
    table = text.split("**Statuses**")[1].split("###")[0]
    for status, words in STATUS_TEXT.items():
        assert f"| `{status}` | {words} |" in table, status
    header = next(line for line in text.splitlines() if line.startswith("student,status,total,max,"))
    assert "..." not in header
    assert [c.strip('"') for c in next(csv.reader([header]))[4:-6]] == \
        [f"{name} ({most:g})" for name, most in columns(load_rubric(ROOT / "rubrics" / "hw2-cnn.yaml"))]
    words = " ".join(text.split())  # as read, whatever the line breaks
    for key in ("`blocks`", "`hidden-units`", "round(40 * (accuracy - 0.95) / 0.04, 2)", "0.9712 gets 21.2",
                "false: it is trained and tested too, and its status is graded", "`limit` only limits retraining",
                "found relative to the rubric's folder", "`spec.yaml` is the one graded"):
        assert key in words, key
    rules = " ".join((ROOT / "docs" / "rules.md").read_text().split())
    assert "the grader gives it the `params` item when it is under the budget" in rules
    assert "`netspec.load(source, rules=(), overrides=None, draft=False)`" in (ROOT / "docs" / "api.md").read_text()


def test_the_readme_is_for_a_newcomer_and_says_one_cnn_figure():
    readme = (ROOT / "README.md").read_text()
    for internal in ("PostgreSQL", "yaml-language-server drives", "464", "416 tests", "CI=true"):
        assert internal not in readme, internal
    assert 'pip install -e ".[dev]"\n' in readme and "\npytest\n" in readme  # .ci/run runs these lines
    assert "[developing netspec](docs/developing.md)" in readme
    developing = (ROOT / "docs" / "developing.md").read_text()
    assert developing.startswith("# Developing netspec") and "PostgreSQL" in developing and "CI=true" in developing
    first = readme.split("```")[1]
    cnn = next(line for line in first.splitlines() if line.startswith("netspec run specs/cnn.yaml "))
    measured = readme.split("## Measured")[1].split("##")[0]
    assert "0.9953 test accuracy" in cnn and "- CNN 0.9953 (" in measured
    assert "0.9958" not in readme
