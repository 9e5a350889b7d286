"""netspec grade (issue 22): a class graded by a rubric, hostile submissions refused, a killed
grader's class completed by a rerun, Gradescope's results.json and autograder zip."""
from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest

from netspec.errors import SpecError
from netspec.grading.rubric import load_rubric
from netspec.grading.verdict import Entry, columns, judge, result_item_name, rule_items, safe_name
from conftest import NETSPEC

HERE = Path(__file__).parent

COURSE_RULES = """name: course
allowed_layers: [Linear, ReLU, Flatten, Conv2d]
max_params: 10000000
fixed:
  train.optimizer.name: adam
"""
RUBRIC = """name: hw
rules: [course.yaml]
mode: evaluate
points:
  valid: 10
  rules: 5
  accuracy:
    - {at_least: 0.9, points: 20}
    - {at_least: 0.5, points: 10}
limits: {seconds: 20}
"""
MLP = """name: {name}
data: {{validation: 100}}
model:
  layers:
    - Flatten
    - Linear: {{out_features: {hidden}}}
    - ReLU
    - Linear: {{out_features: 10}}
train: {{epochs: 1, batch_size: 32, precision: fp32, optimizer: {{name: {optimizer}}}}}
"""
SLOW = """name: ivan
data: {validation: 100}
model:
  layers:
    - Conv2d: {out_channels: 512, kernel_size: 3, padding: 1}
    - ReLU
    - Conv2d: {out_channels: 512, kernel_size: 3, padding: 1}
    - ReLU
    - Conv2d: {out_channels: 512, kernel_size: 3, padding: 1}
    - ReLU
    - Conv2d: {out_channels: 512, kernel_size: 3, padding: 1}
    - ReLU
    - Conv2d: {out_channels: 512, kernel_size: 3, padding: 1}
    - ReLU
    - Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
    - Flatten
    - Linear: {out_features: 10}
train: {optimizer: {name: adam}, precision: fp32, eval_batch_size: 100}
"""


def mlp(name="s", hidden=32, optimizer="adam", extra=""):
    return MLP.format(name=name, hidden=hidden, optimizer=optimizer) + extra


class Pwn:
    """A pickle that runs a command when loaded: the grader must refuse it, never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _save_weights(spec_text: str, folder: Path, fake_data: Path, seed: int = 0) -> None:
    """A model.pt as a netspec run writes it: the spec's model with initial weights and a data record."""
    import torch

    import netspec

    spec = netspec.load(spec_text)
    torch.manual_seed(seed)
    model = spec.build()
    record = {"classes": [str(i) for i in range(10)], "image_shape": [1, 28, 28], "mean": [0.2], "std": [0.3]}
    torch.save({"spec": spec.to_dict(), "data": record, "state_dict": model.state_dict()}, folder / "model.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fake_data):
    """A real run of the valid MLP: its model.pt and its recorded fp32 test accuracy."""
    import netspec

    out = tmp_path_factory.mktemp("alice-run") / "run"
    run = netspec.train(netspec.load(mlp("alice")), out=out, data_dir=fake_data, progress=False)
    return out, run.metrics.test_accuracy


def make_class(root: Path, trained, fake_data: Path) -> Path:
    run_dir, _ = trained
    subs = root / "subs"
    subs.mkdir()
    (root / "course.yaml").write_text(COURSE_RULES)
    (root / "rubric.yaml").write_text(RUBRIC)
    for name in ("alice", "bob"):  # bob hands in alice's work under his name
        (subs / name).mkdir()
        (subs / name / "spec.yaml").write_text(mlp(name))
        shutil.copytree(run_dir, subs / name / "run")
    (subs / "carol.yaml").write_text(mlp("carol", hidden=16000))  # 12.7M params: over the budget
    (subs / "dan.yaml").write_text(mlp("dan").replace("- ReLU", "- Tanh"))  # a layer the rules forbid
    (subs / "erin.yaml").write_text(mlp("erin", optimizer="sgd"))  # the wrong recipe
    (subs / "frank.yaml").write_text("name: frank\nmodel:\n  layers: [Linear\n")  # YAML that does not parse
    (subs / "grace.yaml").write_text("name: grace\nmodel: !!python/object/apply:os.system [touch pwned]\n")
    (subs / "heidi").mkdir()  # handed in nothing
    (subs / "heidi" / "notes.txt").write_text("forgot the spec")
    (subs / "ivan").mkdir()  # within every rule (9.5M params), and about a minute to evaluate here: over 20 s
    (subs / "ivan" / "spec.yaml").write_text(SLOW)
    _save_weights(SLOW, subs / "ivan", fake_data)
    (subs / "judy").mkdir()  # alice's weights under a spec of another architecture
    (subs / "judy" / "spec.yaml").write_text(mlp("judy", hidden=64))
    shutil.copy(run_dir / "model.pt", subs / "judy" / "model.pt")
    (subs / "mallory").mkdir()  # a model.pt that would run a command when unpickled
    (subs / "mallory" / "spec.yaml").write_text(mlp("mallory", hidden=48))
    with open(subs / "mallory" / "model.pt", "wb") as f:
        pickle.dump({"state_dict": Pwn(root / "pwned")}, f)
    os.symlink(subs / "alice", subs / "oscar")  # a link to another's folder
    return subs


# every rubric item, in columns' order: valid 10, layers 5, params 5, optimizer 5, accuracy 20 / 10
EXPECTED = {
    "alice": ("graded", [10, 5, 5, 5, 20]),
    "bob": ("graded", [10, 5, 5, 5, 20]),
    "carol": ("rules", [10, 5, 0, 5, 0]),
    "dan": ("rules", [10, 0, 5, 5, 0]),
    "erin": ("rules", [10, 5, 5, 0, 0]),
    "frank": ("invalid", [0, 0, 0, 0, 0]),
    "grace": ("invalid", [0, 0, 0, 0, 0]),
    "heidi": ("missing", [0, 0, 0, 0, 0]),
    "ivan": ("time limit", [10, 5, 5, 5, 0]),
    "judy": ("error", [10, 5, 5, 5, 0]),
    "mallory": ("error", [10, 5, 5, 5, 0]),
    "oscar": ("missing", [0, 0, 0, 0, 0]),
}


def _gradebook(folder: Path) -> dict[str, dict]:
    with open(folder / "gradebook.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_a_class_is_graded_exactly_and_hostile_submissions_are_zeros_with_reasons(tmp_path, trained, fake_data):
    subs = make_class(tmp_path, trained, fake_data)
    out = tmp_path / "grades"
    proc = subprocess.run(NETSPEC + ["grade", str(subs), "--rubric", str(tmp_path / "rubric.yaml"), "--out", str(out),
                                     "--workers", "2", "--data-dir", str(fake_data)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    book = _gradebook(out)
    cols = ["valid spec (10)", "course: layers (5)", "course: params <= 10,000,000 (5)",
            "course: train.optimizer.name (5)", "test accuracy (20)"]
    got = {s: (r["status"], [float(r[c]) for c in cols]) for s, r in book.items()}
    assert got == {s: (status, [float(p) for p in points]) for s, (status, points) in EXPECTED.items()}
    assert {s: float(r["total"]) for s, r in book.items()} == {s: float(sum(p)) for s, (_, p) in EXPECTED.items()}
    # the grader's fp32 accuracy of the submitted weights is the run's own recorded one
    _, recorded = trained
    assert recorded > 0.9 and float(book["alice"]["test_accuracy"]) == pytest.approx(recorded, abs=5e-5)
    assert book["alice"]["same_as"] == "bob" and book["bob"]["same_as"] == "alice"
    # every reason is the one that applies, in words
    assert "refused" in book["mallory"]["reason"] and "could run code" in book["mallory"]["reason"]
    assert not (tmp_path / "pwned").exists() and not (subs / "pwned").exists()  # neither pickle nor YAML tag ran
    assert "do not match" in book["judy"]["reason"]
    assert "time limit" in book["ivan"]["reason"]
    assert "not allowed" in book["grace"]["reason"] and "a link" in book["oscar"]["reason"]
    assert "no spec file" in book["heidi"]["reason"]
    # grades.md and one feedback page per student, with the place of the mistake
    grades = (out / "grades.md").read_text()
    assert "| [alice](feedback/alice.md) | 45 / 45 |" in grades and "- alice, bob" in grades
    feedback = (out / "feedback" / "erin.md").read_text()
    assert "✗ course: train.optimizer.name" in feedback and "erin.yaml:9:" in feedback
    assert len(list((out / "feedback").glob("*.md"))) == 12

    # a rerun grades nobody again, and the gradebook is the same
    before = (out / "gradebook.csv").read_text()
    again = subprocess.run(NETSPEC + ["grade", str(subs), "--rubric", str(tmp_path / "rubric.yaml"), "--out", str(out),
                                      "--data-dir", str(fake_data)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "graded" not in again.stdout.split("12 of 12")[0]
    assert (out / "gradebook.csv").read_text() == before


def _trials(folder: Path):
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "grade.journal")))
    (name,) = optuna.get_all_study_names(storage)  # one class: grade-<rubric name>
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_killing_one_of_two_graders_then_rerunning_grades_everyone_once(tmp_path, trained, fake_data):
    run_dir, _ = trained
    subs = tmp_path / "subs"
    subs.mkdir()
    (tmp_path / "course.yaml").write_text(COURSE_RULES)
    (tmp_path / "rubric.yaml").write_text(RUBRIC)
    names = [f"s{i}" for i in range(6)]
    for name in names:
        (subs / name).mkdir()
        (subs / name / "spec.yaml").write_text(mlp(name))
        shutil.copy(run_dir / "model.pt", subs / name / "model.pt")
    out = tmp_path / "grades"
    cmd = NETSPEC + ["grade", str(subs), "--rubric", str(tmp_path / "rubric.yaml"), "--out", str(out),
                     "--data-dir", str(fake_data)]
    proc = subprocess.Popen(cmd + ["--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.3)
        if (out / "grade.journal").is_file():
            running = [t for t in _trials(out) if t.state.name == "RUNNING" and "worker" in t.user_attrs]
            victim = running[0] if running else None
    assert victim is not None
    os.kill(victim.user_attrs["worker"][1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "1 of 2 grading workers stopped" in stderr, stderr
    assert "Traceback" not in stderr
    first = _gradebook(out)
    assert first[victim.user_attrs["student"]]["status"] == "not graded"

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    book = _gradebook(out)
    assert sorted(book) == names and all(r["status"] == "graded" for r in book.values())
    graded = [t.user_attrs["student"] for t in _trials(out)
              if t.state.name == "COMPLETE" and "row" in t.user_attrs and not t.user_attrs.get("duplicate")]
    assert sorted(graded) == names  # each student graded once: the killed one again, nobody else twice
    assert f"{victim.user_attrs['student']}:" in rerun.stdout and rerun.stdout.count("graded  accuracy") == 1


@pytest.mark.slow
def test_graders_of_a_killed_parent_stop_by_themselves(tmp_path, trained, fake_data):
    """`grade --workers 2` killed (SIGKILL, nothing passed on): its graders stop within seconds, as
    a sweep's workers do, instead of grading the rest of the class on their own (they did: no
    watch of the parent had been started in a grader)."""
    from test_hostile import _alive

    run_dir, _ = trained
    subs = tmp_path / "subs"
    (tmp_path / "course.yaml").write_text(COURSE_RULES)
    (tmp_path / "rubric.yaml").write_text(RUBRIC)
    for i in range(24):  # about a minute of grading on two cores
        (subs / f"s{i:02d}").mkdir(parents=True)
        (subs / f"s{i:02d}" / "spec.yaml").write_text(mlp(f"s{i:02d}"))
        shutil.copy(run_dir / "model.pt", subs / f"s{i:02d}" / "model.pt")
    out = tmp_path / "grades"
    proc = subprocess.Popen(NETSPEC + ["grade", str(subs), "--rubric", str(tmp_path / "rubric.yaml"), "--out", str(out),
                                       "--data-dir", str(fake_data), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    graders: set[int] = set()
    deadline = time.monotonic() + 120
    while len(graders) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        if (out / "grade.journal").is_file():
            graders = {t.user_attrs["worker"][1] for t in _trials(out) if "worker" in t.user_attrs}
    assert len(graders) == 2
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in graders):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in graders)
    graded = [t for t in _trials(out) if t.state.name == "COMPLETE" and "row" in t.user_attrs]
    assert len(graded) < 24  # stopped, not finished


def test_the_rubric_is_checked_like_a_spec_with_lines(tmp_path):
    (tmp_path / "r.yaml").write_text("name: hw\nrules: [nope]\npoints:\n  valid: -1\n  accuracy: {from: 0.9, to: 0.8, points: 3}\n"
                                     "mode: train\n")
    with pytest.raises(SpecError) as e:
        load_rubric(tmp_path / "r.yaml")
    where = {(p.line, p.path) for p in e.value.problems}
    assert (4, "points.valid") in where and (6, "mode") in where
    (tmp_path / "r.yaml").write_text("rules: [nope]\npoints: {accuracy: {from: 0.9, to: 0.8, points: 3}}\n")
    with pytest.raises(SpecError) as e:
        load_rubric(tmp_path / "r.yaml")
    assert [(p.line, p.message.split(":")[0]) for p in e.value.problems] == [
        (1, "rules 'nope' not found"), (2, "from must be below to")]


def test_identical_rule_sets_count_once_and_items_match_the_checks(tmp_path, write_spec):
    (tmp_path / "copy.yaml").write_text((Path(__file__).parents[1] / "netspec/spec/rulesets/mnist-cnn.yaml").read_text())
    (tmp_path / "r.yaml").write_text("rules: [mnist-cnn, copy.yaml]\npoints: {valid: 1, rules: {params: 4, fixed: 1}}\n")
    rubric = load_rubric(tmp_path / "r.yaml")
    assert len(rubric.rules) == 1
    spec = write_spec((Path(__file__).parents[1] / "specs/cnn.yaml").read_text(), "cnn.yaml")
    verdict = judge(Entry("x", str(spec), spec=str(spec)), rubric)
    # the gradebook's columns are exactly the checks' results, whatever the spec
    from netspec.check.checker import apply_rules
    from conftest import check_file

    checked = check_file(spec)
    names = [result_item_name(r) for r in apply_rules(rubric.rules[0], checked.spec, checked.analysis) if r.ok is not None]
    assert names == [n for n, _ in rule_items(rubric.rules[0])]
    assert [i.name for i in verdict.items] == [n for n, _ in columns(rubric)]
    assert verdict.status == "valid" and verdict.points == 1 + 4 + 1 + 1 + 1  # valid, params, three fixed
    assert [i.max_points for i in verdict.items] == [1, 0, 4, 0, 0, 1, 1, 1, 0]


def test_a_data_path_outside_the_submission_is_refused(tmp_path):
    import numpy as np

    np.savez(tmp_path / "hidden.npz", images=np.zeros((20, 8, 8), np.uint8), labels=np.arange(20) % 2)
    (tmp_path / "r.yaml").write_text("points: {valid: 1}\n")
    (tmp_path / "eve").mkdir()
    spec = tmp_path / "eve" / "spec.yaml"
    spec.write_text("name: eve\ndata: {dataset: npz, path: ../hidden.npz, validation: 2, test: 2}\n"
                    "model: {layers: [Flatten, {Linear: {out_features: 2}}]}\n")
    verdict = judge(Entry("eve", str(tmp_path / "eve"), spec=str(spec)), load_rubric(tmp_path / "r.yaml"))
    assert verdict.status == "invalid" and verdict.problems[0].line == 2
    assert "outside the submission" in verdict.problems[0].message


def test_student_names_map_to_distinct_file_names():
    assert safe_name("alice") == "alice"
    assert safe_name("a b") != safe_name("a_b") and "/" not in safe_name("../x")


def test_validate_with_a_rubric_shows_the_points_before_training(tmp_path):
    (tmp_path / "course.yaml").write_text(COURSE_RULES)
    (tmp_path / "rubric.yaml").write_text(RUBRIC)
    (tmp_path / "erin.yaml").write_text(mlp("erin", optimizer="sgd", extra="rules: mnist-mlp\n"))
    proc = subprocess.run(NETSPEC + ["validate", "--rubric", str(tmp_path / "rubric.yaml"), str(tmp_path / "erin.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "20 of 45 points before training" in proc.stdout  # the spec's own mnist-mlp is replaced, not added
    assert "✗ course: train.optimizer.name: 0/5" in proc.stdout and "erin.yaml:9:" in proc.stdout


GRADESCOPE_SCHEMA = json.loads((HERE / "data" / "gradescope-results.schema.json").read_text())


@pytest.mark.slow
def test_the_autograder_zip_runs_in_an_autograder_tree(tmp_path, trained, fake_data):
    run_dir, recorded = trained
    (tmp_path / "course.yaml").write_text(COURSE_RULES)
    (tmp_path / "rubric.yaml").write_text(RUBRIC)
    zip_path = tmp_path / "autograder.zip"
    made = subprocess.run(NETSPEC + ["grade", "--rubric", str(tmp_path / "rubric.yaml"), "--make-autograder", str(zip_path)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as z:
        assert sorted(n for n in z.namelist() if not n.startswith("netspec-src/")) == [
            "course.yaml", "rubric.yaml", "run_autograder", "setup.sh"]
        z.extractall(root / "source")
    run_autograder = root / "run_autograder"  # where Gradescope copies it
    shutil.copy(root / "source" / "run_autograder", run_autograder)
    run_autograder.chmod(0o755)
    (root / "submission").mkdir()
    (root / "submission" / "spec.yaml").write_text(mlp("student"))
    shutil.copy(run_dir / "model.pt", root / "submission" / "model.pt")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "NETSPEC_DATA_DIR": str(fake_data)}
    proc = subprocess.run([str(run_autograder)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 45 and [t["score"] for t in results["tests"]] == [10, 5, 5, 5, 20]
    assert results["leaderboard"][0]["value"] == pytest.approx(recorded, abs=1e-4)

    # a broken submission: its score so far, the reason and the line for the student
    (root / "submission" / "spec.yaml").write_text(mlp("student", optimizer="sgd"))
    proc = subprocess.run([str(run_autograder)], capture_output=True, text=True, env=env, timeout=300)
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 20 and "spec.yaml:9:" in results["output"] and "leaderboard" not in results


def test_the_shipped_rubric_loads():
    rubric = load_rubric(Path(__file__).parents[1] / "rubrics" / "hw2-cnn.yaml")
    assert rubric.rules[0].name == "mnist-cnn" and rubric.accuracy_max() == 40 and rubric.limit == 20000
    assert sum(m for _, m in columns(rubric)) == 81


def test_a_grader_without_its_test_data_grades_nobody(tmp_path):
    (tmp_path / "hidden.npz").write_bytes(b"not an archive")
    (tmp_path / "rubric.yaml").write_text("test: {path: hidden.npz}\npoints: {valid: 1}\n")
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.yaml").write_text(mlp("a"))
    proc = subprocess.run(NETSPEC + ["grade", str(tmp_path / "subs"), "--rubric", str(tmp_path / "rubric.yaml"),
                                     "--out", str(tmp_path / "grades")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "the rubric's test data cannot be read, so nobody can be graded" in proc.stderr
    assert "hidden.npz" in proc.stderr and not (tmp_path / "grades" / "gradebook.csv").exists()


def test_a_submission_over_the_memory_limit_keeps_its_points_so_far(tmp_path, fake_data):
    (tmp_path / "rubric.yaml").write_text("mode: evaluate\npoints: {valid: 10, accuracy: [{at_least: 0.0, points: 5}]}\n"
                                          "limits: {memory_mb: 64}\n")  # less than importing torch takes
    (tmp_path / "subs" / "a").mkdir(parents=True)
    (tmp_path / "subs" / "a" / "spec.yaml").write_text(mlp("a"))
    _save_weights(mlp("a"), tmp_path / "subs" / "a", fake_data)
    proc = subprocess.run(NETSPEC + ["grade", str(tmp_path / "subs"), "--rubric", str(tmp_path / "rubric.yaml"),
                                     "--out", str(tmp_path / "grades"), "--data-dir", str(fake_data)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = _gradebook(tmp_path / "grades")["a"]
    assert (row["status"], row["total"]) == ("memory limit", "10")
    assert "the rubric's limit is 64 MB" in row["reason"] and int(row["peak_mb"]) > 64


def test_a_huge_model_pt_is_not_read_through_to_tell_whether_it_changed(tmp_path):
    from netspec.grading.verdict import MAX_WEIGHTS, find_entries

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "spec.yaml").write_text(mlp("s"))
    with open(tmp_path / "s" / "model.pt", "wb") as f:  # sparse: no disk, and reading it would take long
        f.truncate(MAX_WEIGHTS * 40)
    started = time.perf_counter()
    [entry] = find_entries(tmp_path)
    assert time.perf_counter() - started < 1.0  # judged by its size before a byte is read
    assert entry.problem == "more than 2 GiB of files: submit less"
    with open(tmp_path / "s" / "spec.yaml", "a") as f:
        f.write("# changed\n")
    (tmp_path / "s" / "model.pt").unlink()
    assert find_entries(tmp_path)[0].source != entry.source  # a changed submission is graded again


def test_a_gradebooks_rows_are_grade_rows_that_round_trip_through_their_json(tmp_path, fake_data):
    from dataclasses import replace

    import netspec
    from netspec.grading.classroom import grade as grade_class
    from netspec.grading.row import GradeRow
    from netspec.grading.verdict import Item

    (tmp_path / "rubric.yaml").write_text("points: {valid: 1}\n")
    subs = tmp_path / "subs"
    (subs / "heidi").mkdir(parents=True)  # handed in nothing
    (subs / "heidi" / "notes.txt").write_text("forgot the spec")
    (subs / "frank.yaml").write_text("name: frank\nmodel:\n  layers: [Linear\n")  # YAML that does not parse
    book = netspec.grade(subs, tmp_path / "rubric.yaml", out=tmp_path / "grades", data_dir=fake_data)
    assert [(r.student, r.status, r.total) for r in book.rows] == [("frank", "invalid", 0), ("heidi", "missing", 0)]
    for row in book.rows:
        assert isinstance(row, GradeRow) and all(isinstance(i, Item) for i in row.items)
        as_json = json.loads(json.dumps(row.to_dict()))
        assert GradeRow.from_dict(as_json) == row and GradeRow.from_dict(as_json).to_dict() == row.to_dict()
        assert list(as_json) == ["student", "file_name", "status", "total", "max", "items", "test_accuracy", "test_size",
                                 "params", "seconds", "peak_mb", "reason", "problems", "fingerprint", "run_dir",
                                 "spec", "mode", "same_as"]
    # the rows stored in the class's study are read back as they were; on_graded is told GradeRows
    told = []
    again = grade_class(subs, tmp_path / "rubric.yaml", out=tmp_path / "grades", data_dir=fake_data, only=["frank"],
                        on_graded=told.append)
    assert [type(r) for r in told] == [GradeRow] and told[0].student == "frank"
    measured = {"seconds": 0, "peak_mb": None}  # the regrade's own
    assert [replace(r, **measured) for r in again.rows] == [replace(r, **measured) for r in book.rows]
    stored = [t.user_attrs["row"] for t in _trials(tmp_path / "grades") if "row" in t.user_attrs]
    assert all(GradeRow.from_dict(r).to_dict() == r and "same_as" not in r for r in stored)
