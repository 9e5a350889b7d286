"""The grader treats every submission as hostile (issue 31): it works on a sealed copy (regular
files only, no link followed at any depth, capped walks), judges and measures it in a contained
child (its own session, measured and killed as a group), clocks the student's work rather than
the grader's start-up or load, and digests everything a grade depends on."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import NETSPEC

CLASSES = ("a", "b", "c")
OWN_SPEC = """name: {name}
data: {{dataset: imagefolder, path: data, image_shape: [1, 8, 8], input_shape: [64], validation: 6}}
model:
  layers:
    - Linear: {{out_features: 16}}
    - ReLU
    - Linear: {{out_features: 3}}
train: {{epochs: 3, batch_size: 16, precision: fp32, optimizer: {{name: adam, lr: 0.01}}}}
"""
RUBRIC = """name: own
mode: retrain
test: {{path: hidden}}
points:
  valid: 10
  accuracy: {{from: 0.3, to: 1.0, points: 90}}
limits: {{seconds: {seconds}}}
"""


def images(folder: Path, seed: int, n: int = 20) -> None:
    """Class i: a bright column at 2i+1 on noise; learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    for i, c in enumerate(CLASSES):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            img = rng.integers(0, 60, (8, 8)).astype(np.uint8)
            img[:, 2 * i + 1] = 250
            Image.fromarray(img, "L").save(folder / c / f"{k}.png")


def nest(folder: Path, levels: int, request) -> None:
    """`levels` folders, one inside the next (os.makedirs recurses; 2,200 characters is within PATH_MAX),
    removed after the test from the bottom up (pytest's own clean-up recurses too)."""
    top = folder
    for _ in range(levels):
        folder = folder / "d"
        folder.mkdir()
    request.addfinalizer(lambda: unnest(top))


def unnest(top: Path) -> None:
    deepest = top
    while (deepest / "d").is_dir():
        deepest = deepest / "d"
    while deepest != top:
        os.rmdir(deepest)
        deepest = deepest.parent


def _book(out: Path) -> dict[str, dict]:
    with open(out / "gradebook.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def _grade(subs: Path, root: Path, out: Path, *extra, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(NETSPEC + ["grade", str(subs), "--rubric", str(root / "rubric.yaml"), "--out", str(out),
                                     *extra], capture_output=True, text=True, timeout=timeout, env=env)


def _marked(mark: str) -> list[str]:
    """The processes still alive whose environment carries `mark` (inherited from the command a test
    started): its own descendants only, whatever else this machine runs."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"NETSPEC_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes():
                    found.append(proc.name)
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return found


def _graded_now(proc: subprocess.CompletedProcess) -> list[str]:
    return sorted(m.group(1) for m in re.finditer(r"^(\S+): [\d.]+/[\d.]+ ", proc.stdout, re.M))


@pytest.mark.slow
def test_links_at_any_depth_are_not_followed_and_every_byte_is_digested(tmp_path):
    images(tmp_path / "hidden", seed=1)
    (tmp_path / "rubric.yaml").write_text(RUBRIC.format(seconds=120))
    subs = tmp_path / "subs"
    for name in ("ana", "eve"):
        (subs / name).mkdir(parents=True)
        (subs / name / "spec.yaml").write_text(OWN_SPEC.format(name=name))
        images(subs / name / "data", seed=2)
    shutil.copytree(subs / "ana", subs / "ben")  # byte for byte ana's
    # eve trains on the hidden test set: one class folder and one image linked to the instructor's
    shutil.rmtree(subs / "eve" / "data" / "c")
    os.symlink(tmp_path / "hidden" / "c", subs / "eve" / "data" / "c")
    os.remove(subs / "eve" / "data" / "b" / "0.png")
    os.symlink(tmp_path / "hidden" / "b" / "0.png", subs / "eve" / "data" / "b" / "0.png")
    # a single spec file naming another student's data
    (subs / "mallory.yaml").write_text(OWN_SPEC.format(name="mallory").replace("path: data", "path: ana/data"))
    out = tmp_path / "grades"

    first = _grade(subs, tmp_path, out)
    assert first.returncode == 0, first.stderr
    book = _book(out)
    assert book["ana"]["status"] == "graded" and float(book["ana"]["test_accuracy"]) > 0.9
    assert book["ana"]["total"] == book["ben"]["total"]
    assert (book["ana"]["same_as"], book["ben"]["same_as"]) == ("ben", "ana")  # identical own data is found
    # eve's links are named, never read: her copy lacks class c, so she cannot be tested on three
    assert "not read: data/b/0.png (a link), data/c (a link)" in book["eve"]["reason"]
    assert book["eve"]["status"] == "invalid" and book["eve"]["test_accuracy"] == ""
    assert book["mallory"]["status"] == "invalid"
    assert "data.path ana/data is not part of this submission" in book["mallory"]["reason"]

    # a rerun grades nobody; a changed image of ana's is graded again, and only hers
    again = _grade(subs, tmp_path, out)
    assert again.returncode == 0 and _graded_now(again) == []
    img = np.asarray(Image.open(subs / "ana" / "data" / "a" / "0.png")).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img, "L").save(subs / "ana" / "data" / "a" / "0.png")
    changed = _grade(subs, tmp_path, out)
    assert changed.returncode == 0 and _graded_now(changed) == ["ana"]
    assert _book(out)["ana"]["same_as"] == ""  # no longer ben's copy

    # a hidden test set changed in place: everyone is graded on the new one, nobody keeps the old
    img = np.asarray(Image.open(tmp_path / "hidden" / "a" / "0.png")).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img, "L").save(tmp_path / "hidden" / "a" / "0.png")
    regraded = _grade(subs, tmp_path, out)
    assert regraded.returncode == 0 and _graded_now(regraded) == ["ana", "ben", "eve", "mallory"]


def test_a_folder_nested_1100_deep_or_a_fifo_is_one_students_reason_not_the_class_crash(tmp_path, fake_data, request):
    subs = tmp_path / "subs"
    deep = subs / "deep" / "data" / "a"
    deep.mkdir(parents=True)
    (subs / "deep" / "spec.yaml").write_text("name: deep\n")
    nest(deep, 1100, request)
    os.mkfifo(subs / "fifo.yaml")
    (subs / "ivan.YAML").write_text("name: ivan\n")  # capital suffix: a submission too
    (subs / "notes.pdf").write_text("not a spec")
    (subs / "bob.yaml").write_text("name: bob\n")
    (subs / "bob.yml").write_text("name: bob\n")
    (tmp_path / "rubric.yaml").write_text("name: r\npoints: {valid: 10}\n")
    out = tmp_path / "grades"
    proc = _grade(subs, tmp_path, out, "--data-dir", str(fake_data), timeout=120)  # a FIFO blocked it for ever
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    book = _book(out)
    assert sorted(book) == ["bob", "deep", "fifo", "ivan", "notes.pdf"]  # nobody vanishes, one row per name
    assert book["deep"]["reason"] == "folders nested deeper than 16 levels (at data/a/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d): " \
                                     "submit a shallower folder"
    assert book["fifo"]["reason"] == "fifo.yaml is a FIFO, not a file or folder: submit the files"
    assert book["bob"]["reason"] == "2 submissions named bob: bob.yaml, bob.yml; keep one"
    assert book["notes.pdf"]["reason"].startswith("not a submission")
    assert book["ivan"]["status"] == "invalid" and "model" in book["ivan"]["reason"]
    assert len(list((out / "feedback").glob("*.md"))) == 5


def test_validate_of_an_image_folder_nested_1100_deep_is_one_line(tmp_path, request):
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(root / "b" / "0.png")
    nest(root / "a", 1100, request)  # class a's images are looked for down there
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: n\ndata: {dataset: imagefolder, path: data, image_shape: [1, 4, 4], input_shape: [16]}\n"
                    "model:\n  layers:\n    - Linear: {out_features: 2}\n")
    proc = subprocess.run(NETSPEC + ["validate", str(spec)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert "folders nested deeper than 32 levels under" in proc.stdout


def test_validate_of_a_fifo_nobody_writes_answers_at_once(tmp_path):
    os.mkfifo(tmp_path / "spec.yaml")
    started = time.monotonic()
    proc = subprocess.run(NETSPEC + ["validate", str(tmp_path / "spec.yaml")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and time.monotonic() - started < 30
    assert "the file is empty" in proc.stdout


def test_a_rubric_of_another_name_is_refused_in_a_grade_folder(tmp_path, fake_data):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.yaml").write_text("name: a\n")
    (tmp_path / "rubric.yaml").write_text("name: one\npoints: {valid: 10}\n")
    assert _grade(subs, tmp_path, tmp_path / "grades", "--data-dir", str(fake_data)).returncode == 0
    (tmp_path / "rubric.yaml").write_text("name: two\npoints: {valid: 10}\n")
    proc = _grade(subs, tmp_path, tmp_path / "grades", "--data-dir", str(fake_data))
    assert proc.returncode == 1
    assert "holds grades of the rubric 'one', not 'two'; grade into a new --out folder" in proc.stderr


def test_the_grader_never_judges_a_submission_in_its_own_process(tmp_path, monkeypatch, fake_data):
    """Judging reads a submission's data (an npz of 4 GiB of float images took 29 s in the grader,
    outside every limit): it happens in the contained child."""
    import netspec
    from netspec.grading import verdict

    def refuse(*a, **k):
        raise AssertionError("judged in the grader's process")

    monkeypatch.setattr(verdict, "judge", refuse)
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.yaml").write_text("name: a\n")
    (tmp_path / "rubric.yaml").write_text("name: r\npoints: {valid: 10}\n")
    book = netspec.grade(subs, tmp_path / "rubric.yaml", out=tmp_path / "grades", data_dir=fake_data)
    assert [(r.student, r.status, r.total) for r in book.rows] == [("a", "invalid", 0)]
    assert "model" in book.rows[0].reason


def test_the_group_is_measured_and_killed_as_a_whole(tmp_path):
    """A child's own children (DataLoader workers) count in its memory, and are killed with it."""
    from netspec.grading.contain import group_memory_mb, group_pids, kill_group

    code = ("import os, time\nos.setsid()\nfor _ in range(2):\n    if os.fork() == 0:\n"
            "        b = bytearray(200 << 20)\n        for i in range(0, len(b), 4096): b[i] = 1\n"
            "        time.sleep(60)\n        os._exit(0)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and group_memory_mb(proc.pid) < 400:
            time.sleep(0.1)
        assert len(group_pids(proc.pid)) == 3 and group_memory_mb(proc.pid) >= 400
        kill_group(proc.pid)
        proc.wait(10)
        assert group_pids(proc.pid) == []
    finally:
        proc.kill()


def test_seal_copies_regular_files_and_names_the_rest(tmp_path):
    from netspec.grading.seal import seal

    src = tmp_path / "s"
    (src / "data" / "x").mkdir(parents=True)
    (src / "spec.yaml").write_text("name: s\n")
    (src / "data" / "x" / "1.png").write_bytes(b"png")
    (src / ".git").mkdir()
    (src / ".git" / "config").write_text("secret")
    os.symlink("/etc/passwd", src / "data" / "x" / "2.png")
    os.symlink(tmp_path, src / "data" / "y")
    os.mkfifo(src / "data" / "pipe.png")
    sealed = seal(src, tmp_path / "copy")
    assert [f for f, _ in sealed.files] == ["data/x/1.png", "spec.yaml"]
    assert sealed.left_out == ("data/pipe.png (a FIFO)", "data/x/2.png (a link)", "data/y (a link)")
    copied = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*"))
    assert copied == ["data", "data/x", "data/x/1.png", "spec.yaml"]
    before = sealed.digest
    (src / "data" / "x" / "1.png").write_bytes(b"pnh")  # one byte of the data: another digest
    assert seal(src).digest != before


@pytest.mark.slow
def test_evaluate_mode_names_the_keys_that_do_not_match_and_refuses_a_weights_bomb(tmp_path, fake_data):
    import zipfile

    import torch

    import netspec

    text = ("name: s\ndata: {validation: 100}\nmodel:\n  layers:\n    - Flatten\n    - Linear: {out_features: 10}\n"
            "train: {epochs: 1, precision: fp32}\n")
    subs = tmp_path / "subs"
    for name in ("extra", "bomb"):
        (subs / name).mkdir(parents=True)
        (subs / name / "spec.yaml").write_text(text)
    model = netspec.load(text).build()
    record = {"classes": [str(i) for i in range(10)], "image_shape": [1, 28, 28], "mean": [0.2], "std": [0.3]}
    state = dict(model.state_dict())
    state["9.weight"] = torch.zeros(2)
    torch.save({"data": record, "state_dict": state}, subs / "extra" / "model.pt")
    # a torch zip whose one member unpacks to 300 MiB of zeros (300 KB on disk)
    with zipfile.ZipFile(subs / "bomb" / "model.pt", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            zeros = bytes(1 << 20)
            for _ in range(300):
                f.write(zeros)
    (tmp_path / "rubric.yaml").write_text("name: e\nmode: evaluate\npoints: {valid: 10, accuracy: "
                                          "[{at_least: 0.0, points: 5}]}\nlimits: {seconds: 60}\n")
    proc = _grade(subs, tmp_path, tmp_path / "grades", "--data-dir", str(fake_data))
    assert proc.returncode == 0, proc.stderr
    book = _book(tmp_path / "grades")
    assert book["extra"]["reason"] == "the weights do not match the spec's architecture: unexpected 9.weight"
    assert book["bomb"]["reason"] == "model.pt unpacks to 300 MiB; at most 256 MiB"


@pytest.mark.slow
def test_a_class_gets_the_same_gradebook_on_a_quiet_and_on_a_loaded_machine(tmp_path, fake_data):
    """The clock is the submission's CPU time after start-up: 8 busy processes on the grader's
    machine (load 8 on 2 cores) slow everything down and change no grade. On the wall clock
    that counted importing torch, alice got 'time limit' under load."""
    from test_grade import SLOW, _save_weights, mlp

    subs = tmp_path / "subs"
    for name, text in (("alice", mlp("alice")), ("ivan", SLOW)):  # ivan: a minute of work, over 8 s
        (subs / name).mkdir(parents=True)
        (subs / name / "spec.yaml").write_text(text)
        _save_weights(text, subs / name, fake_data)
    (subs / "carl.yaml").write_text(mlp("carl", optimizer="rmsprop"))
    (tmp_path / "rubric.yaml").write_text("name: load\nmode: evaluate\npoints: {valid: 10, accuracy: "
                                          "[{at_least: 0.0, points: 5}]}\nlimits: {seconds: 8}\n")

    def book(out):
        proc = _grade(subs, tmp_path, tmp_path / out, "--data-dir", str(fake_data))
        assert proc.returncode == 0, proc.stderr
        keep = ("status", "total", "test_accuracy", "reason")
        return {s: {k: r[k] for k in keep} for s, r in _book(tmp_path / out).items()}

    quiet = book("quiet")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(8)]
    try:
        loaded = book("loaded")
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert quiet == loaded
    assert [quiet[s]["status"] for s in ("alice", "carl", "ivan")] == ["graded", "invalid", "time limit"]


@pytest.mark.slow
def test_a_child_killed_at_its_limit_leaves_no_worker_holding_the_graders_output(tmp_path, fake_data):
    """Streamed data with DataLoader workers, stopped by the time limit: the whole group dies, so
    the grader's piped output closes (workers left under PID 1 had kept `grade | grep` open)."""
    from test_grade import mlp

    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "w.yaml").write_text(mlp("w").replace("data: {validation: 100}",
                                                  "data: {validation: 100, loading: stream, workers: 2}"))
    (tmp_path / "rubric.yaml").write_text("name: w\nlocked: {train.epochs: 200}\npoints: {valid: 10, accuracy: "
                                          "[{at_least: 0.0, points: 5}]}\nlimits: {seconds: 4}\n")
    mark = os.urandom(8).hex()  # another run on this machine (a second test suite) has workers too
    proc = _grade(subs, tmp_path, tmp_path / "grades", "--data-dir", str(fake_data), timeout=240,
                  env={**os.environ, "NETSPEC_TEST_MARK": mark})
    assert proc.returncode == 0, proc.stderr
    assert _book(tmp_path / "grades")["w"]["status"] == "time limit"
    assert _marked(mark) == []


def test_what_an_adversary_found_is_a_row_with_its_reason(tmp_path, fake_data):
    """Found by attacking the sealed grader: `~` in data.path passed the 'outside' check (the
    checker expands it: a student trained on the hidden set, 100/100); a file name that is not
    UTF-8 crashed the class; a 236-character name broke every feedback file; a name could take
    another's feedback file; a hidden data folder passed validate and failed in the grader; a
    named data set was downloaded into --data-dir; --out inside the class became a student."""
    from netspec.grading.verdict import safe_name

    subs = tmp_path / "subs"
    (subs / "eve").mkdir(parents=True)
    (subs / "eve" / "spec.yaml").write_text(OWN_SPEC.format(name="eve").replace("path: data", "path: ~/hidden"))
    (subs / "hid").mkdir()
    (subs / "hid" / "spec.yaml").write_text(OWN_SPEC.format(name="hid").replace("path: data", "path: .data"))
    images(subs / "hid" / ".data", seed=3, n=2)
    (subs / "bob").mkdir()
    (subs / "bob" / "spec.yaml").write_text("name: bob\n")
    (subs / "bob" / os.fsdecode(b"x\xff.png")).write_bytes(b"not really")
    (subs / os.fsdecode(b"bad\xff.yaml")).write_text("name: bad\n")
    (subs / ("x" * 236 + ".yaml")).write_text("name: long\n")
    (subs / "fm.yaml").write_text("name: fm\ndata: {dataset: fashion-mnist, validation: 100}\nmodel:\n  layers:\n"
                                  "    - Flatten\n    - Linear: {out_features: 10}\ntrain: {epochs: 1}\n")
    (tmp_path / "rubric.yaml").write_text("name: r\npoints: {valid: 10}\n")
    out = subs / "grades"  # the grade folder inside the class
    proc = _grade(subs, tmp_path, out, "--data-dir", str(fake_data))
    assert proc.returncode == 0, proc.stderr
    book = _book(out)
    assert sorted(book) == ["bad\ufffd", "bob", "eve", "fm", "hid", "x" * 236]  # grades/ is no student
    assert "data.path ~/hidden lies outside the submission" in book["eve"]["reason"]
    assert "data.path .data names a hidden file or folder" in book["hid"]["reason"]
    assert book["bad\ufffd"]["status"] == "invalid" and book["x" * 236]["status"] == "invalid"
    assert "Fashion-MNIST is not in" in book["fm"]["reason"] and not (fake_data / "FashionMNIST").exists()
    assert "netspec-sealed" not in (out / "gradebook.csv").read_text()  # the grader's private copy is not named
    assert all(float(r["seconds"]) >= 0 for r in book.values())
    assert len(list((out / "feedback").glob("*.md"))) == 6
    assert safe_name("a b") != safe_name(safe_name("a b"))  # no name can take another's file
    assert len(safe_name("x" * 300)) <= 107


def test_a_new_test_set_under_another_data_dir_grades_everyone_again(tmp_path, fake_data):
    from conftest import synthetic_mnist

    other = synthetic_mnist(tmp_path / "other", seed=5)
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a.yaml").write_text("name: a\n")
    (tmp_path / "rubric.yaml").write_text("name: r\npoints: {valid: 10}\n")
    first = _grade(subs, tmp_path, tmp_path / "g", "--data-dir", str(fake_data))
    same = _grade(subs, tmp_path, tmp_path / "g", "--data-dir", str(fake_data))
    new = _grade(subs, tmp_path, tmp_path / "g", "--data-dir", str(other))
    assert (_graded_now(first), _graded_now(same), _graded_now(new)) == (["a"], [], ["a"])
