"""Gradescope's autograder zip (`netspec grade --make-autograder`) and `--gradescope` mode: the zip
holds the rubric's named files only (no dotfile, backup or link), ships netspec itself, fetches a
named test set once; a grader that fails still writes results.json."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

import netspec
from netspec.errors import RunError, SpecError
from netspec.grading import gradescope
from netspec.grading.gradescope import grade_gradescope, make_autograder
from netspec.grading.row import GradeRow
from conftest import NETSPEC, ROOT

HERE = Path(__file__).parent
GRADESCOPE_SCHEMA = json.loads((HERE / "data" / "gradescope-results.schema.json").read_text())
COURSE = "name: course\nallowed_layers: [Linear, ReLU, Flatten]\n"
SPEC = """name: s
data: {validation: 100}
model:
  layers:
    - Flatten
    - Linear: {out_features: 10}
train: {epochs: 1, batch_size: 32, precision: fp32}
"""
FAILED = "The autograder could not grade this submission; tell your instructor. "


def _own(z: zipfile.ZipFile) -> list[str]:
    """The zip's names but netspec's own source."""
    return sorted(n for n in z.namelist() if not n.startswith("netspec-src/"))


def _hidden_folder_rubric(folder: Path) -> Path:
    """A rubric whose hidden test data is an image folder, beside the clutter an instructor's
    folder has: a git checkout, an editor's backups and swap files, a notes file."""
    from PIL import Image

    for c in ("0", "1"):
        (folder / "hidden" / "test" / c).mkdir(parents=True)
        Image.new("L", (28, 28), int(c) * 255).save(folder / "hidden" / "test" / c / f"{c}.png")
    (folder / "hidden" / ".git").mkdir()
    (folder / "hidden" / ".git" / "config").write_text("[remote]\n  url = https://token@example.com\n")
    (folder / "hidden" / ".env").write_text("SECRET=1\n")
    (folder / "hidden" / "test" / "0" / "0.png~").write_bytes(b"backup")
    (folder / "hidden" / "test" / "0" / "#0.png#").write_bytes(b"autosave")
    (folder / "hidden" / "test" / "0" / ".0.png.swp").write_bytes(b"swap")
    (folder / "hidden" / "test" / "notes.txt").write_text("answers\n")
    (folder / "course.yaml").write_text(COURSE)
    (folder / "rubric.yaml").write_text("rules: [course.yaml]\ntest: {path: hidden}\npoints: {valid: 1}\n")
    return folder / "rubric.yaml"


def test_the_zip_holds_the_named_files_and_no_dotfile_backup_or_note(tmp_path):
    rubric = _hidden_folder_rubric(tmp_path)
    make_autograder(rubric, tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert _own(z) == ["course.yaml", "hidden/test/0/0.png", "hidden/test/1/1.png", "rubric.yaml",
                           "run_autograder", "setup.sh"]


@pytest.mark.parametrize("planted", ["file link", "folder link", "fifo"])
def test_a_link_or_fifo_in_the_hidden_folder_is_refused_by_name(tmp_path, planted):
    rubric = _hidden_folder_rubric(tmp_path)
    where = tmp_path.resolve() / "hidden" / "test" / "1" / "passwd.png"  # as the message names it
    said = (f"{where} is a link; the autograder zip holds regular files only and follows no link: "
            "put the file itself there")
    if planted == "file link":
        where.symlink_to("/etc/passwd")
    elif planted == "folder link":
        where.symlink_to("/etc", target_is_directory=True)
    else:
        os.mkfifo(where)
        said = f"{where} is not a regular file (a FIFO, socket or device); the autograder zip holds regular files only"
    with pytest.raises(RunError) as e:
        make_autograder(rubric, tmp_path / "a.zip")
    assert str(e.value) == said and not (tmp_path / "a.zip").exists()


@pytest.mark.parametrize("named, link", [("course.yaml", "course.yaml"), ("rules/course.yaml", "rules")])
def test_a_named_rule_file_reached_through_a_link_is_refused_through_the_cli(tmp_path, named, link):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "course.yaml").write_text(COURSE)
    (tmp_path / link).symlink_to("real/course.yaml" if link == named else "real")  # inside the folder, even
    (tmp_path / "rubric.yaml").write_text(f"rules: [{named}]\ntest: {{dataset: mnist}}\npoints: {{valid: 1}}\n")
    said = (f"the rubric names {named}, and {tmp_path.resolve() / link} is a link; the autograder zip holds regular "
            "files only and follows no link: put the file itself there")
    with pytest.raises(RunError) as e:
        make_autograder(tmp_path / "rubric.yaml", tmp_path / "a.zip")
    assert str(e.value) == said
    proc = subprocess.run(NETSPEC + ["grade", "--rubric", str(tmp_path / "rubric.yaml"), "--make-autograder",
                                     str(tmp_path / "a.zip")], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (1, f"error: {said}\n")
    assert not (tmp_path / "a.zip").exists()


def _scripts(zip_path: Path, tmp_path: Path) -> tuple[str, str]:
    with zipfile.ZipFile(zip_path) as z:
        setup, run = z.read("setup.sh").decode(), z.read("run_autograder").decode()
    for name, text in (("setup.sh", setup), ("run_autograder", run)):
        (tmp_path / name).write_text(text)
        checked = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    return setup, run


def test_setup_fetches_a_named_test_set_once_and_run_autograder_reads_it_there(tmp_path, fake_data):
    (tmp_path / "rubric.yaml").write_text("test: {dataset: mnist}\npoints: {valid: 1}\n")
    make_autograder(tmp_path / "rubric.yaml", tmp_path / "a.zip")
    setup, run = _scripts(tmp_path / "a.zip", tmp_path)
    fetch = setup.splitlines()[-1]
    assert setup.splitlines()[-2] == "mkdir -p /autograder/data"
    assert fetch == ("python3 -c 'from netspec.data.datasets import load_named_test; "
                     "load_named_test(\"mnist\", \"/autograder/data\")'")
    assert run.splitlines()[-1] == ('exec netspec grade --gradescope --root "$PWD" '
                                    '--data-dir "${NETSPEC_DATA_DIR:-/autograder/data}"')
    # the one-liner itself works: run on a folder that holds (the synthetic) MNIST, it reads the test split
    code = shlex.split(fetch)[2].replace("/autograder/data", str(fake_data))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_hidden_test_set_fetches_nothing(tmp_path):
    (tmp_path / "hidden.npz").write_bytes(b"the instructor's")
    (tmp_path / "rubric.yaml").write_text("test: {path: hidden.npz}\npoints: {valid: 1}\n")
    make_autograder(tmp_path / "rubric.yaml", tmp_path / "a.zip")
    setup, run = _scripts(tmp_path / "a.zip", tmp_path)
    assert "load_named_test" not in setup and "/autograder/data" not in setup + run
    assert run.splitlines()[-1] == 'exec netspec grade --gradescope --root "$PWD"'


def test_setup_installs_the_netspec_in_the_zip_never_netspec_by_name(tmp_path):
    (tmp_path / "rubric.yaml").write_text("test: {dataset: mnist}\npoints: {valid: 1}\n")
    names = make_autograder(tmp_path / "rubric.yaml", tmp_path / "a.zip")
    assert names == ["setup.sh", "run_autograder", "rubric.yaml", "netspec-src/"]
    setup, _ = _scripts(tmp_path / "a.zip", tmp_path)
    installs = [line for line in setup.splitlines() if "pip install" in line]
    assert installs == ["python3 -m pip install --upgrade pip",
                        "python3 -m pip install --index-url https://download.pytorch.org/whl/cpu "
                        "'torch>=2.14,<2.15' 'torchvision>=0.29,<0.30'",
                        "python3 -m pip install ./netspec-src"]
    package = Path(netspec.__file__).parent
    expected = {f"netspec-src/netspec/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")
                if "__pycache__" not in p.parts}
    expected |= {"netspec-src/pyproject.toml", "netspec-src/netspec/spec/schema.json",
                 "netspec-src/netspec/report/results.schema.json"}
    expected |= {f"netspec-src/netspec/spec/rulesets/{p.name}" for p in (package / "spec" / "rulesets").glob("*.yaml")}
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert {n for n in z.namelist() if n.startswith("netspec-src/")} == expected
        project = tomllib.loads(z.read("netspec-src/pyproject.toml").decode())
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["version"] == netspec.__version__
    assert project["project"]["dependencies"] == ours["project"]["dependencies"]
    assert project["project"]["scripts"] == ours["project"]["scripts"]
    assert project["tool"]["setuptools"]["package-data"] == ours["tool"]["setuptools"]["package-data"]


def test_the_copies_of_the_dependencies_are_pyprojects():
    """An installed netspec (no pyproject.toml beside it) writes these into netspec-src/."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert list(gradescope.DEPENDENCIES) == ours["project"]["dependencies"]
    assert list(gradescope.PACKAGE_DATA) == ours["tool"]["setuptools"]["package-data"]["netspec"]


def test_with_a_wheel_setup_installs_that_wheel(tmp_path):
    (tmp_path / "rubric.yaml").write_text("test: {dataset: mnist}\npoints: {valid: 1}\n")
    wheel = tmp_path / "netspec-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel")
    names = make_autograder(tmp_path / "rubric.yaml", tmp_path / "a.zip", wheel)
    assert names == ["setup.sh", "run_autograder", "rubric.yaml", wheel.name]
    setup, _ = _scripts(tmp_path / "a.zip", tmp_path)
    assert [line for line in setup.splitlines() if "pip install" in line][-1] == \
        "python3 -m pip install ./netspec-0.1.0-py3-none-any.whl"
    assert "netspec==" not in setup
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert sorted(z.namelist()) == ["netspec-0.1.0-py3-none-any.whl", "rubric.yaml", "run_autograder", "setup.sh"]


def test_the_netspec_in_the_zip_installs_and_runs(tmp_path):
    """netspec-src/ pip-installed (no network: no dependencies, no build isolation; torch and the rest
    seen from this venv) into a fresh venv, whose netspec is then the one imported and run."""
    (tmp_path / "rubric.yaml").write_text("test: {dataset: mnist}\npoints: {valid: 1}\n")
    make_autograder(tmp_path / "rubric.yaml", tmp_path / "a.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        z.extractall(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(site) / "ours.pth").write_text("\n".join(ours) + "\n")  # this venv's packages, not its editable netspec
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "./netspec-src"], cwd=tmp_path / "source", capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run([python, "-c", "import netspec; print(netspec.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    version = subprocess.run([venv / "bin" / "netspec", "--version"], cwd=tmp_path, capture_output=True, text=True,
                             env=env)
    assert version.returncode == 0 and netspec.__version__ in version.stdout, version.stdout + version.stderr
    (tmp_path / "s.yaml").write_text(SPEC)  # reads the packaged schema.json
    checked = subprocess.run([venv / "bin" / "netspec", "validate", str(tmp_path / "s.yaml")], cwd=tmp_path,
                             capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _tree(root: Path, rubric: str) -> Path:
    (root / "source").mkdir(parents=True)
    (root / "source" / "rubric.yaml").write_text(rubric)
    (root / "submission").mkdir()
    (root / "submission" / "spec.yaml").write_text(SPEC)
    return root


def _failure(root: Path) -> str:
    """results.json of a grader that failed: strict JSON as Gradescope reads it, 0 points; its output."""
    text = (root / "results" / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 0 and results["tests"] == []
    assert results["output"].startswith(FAILED)
    return results["output"][len(FAILED):]


def test_unreadable_hidden_data_still_writes_results_json_through_the_cli(tmp_path):
    root = _tree(tmp_path / "autograder", "test: {path: hidden.npz}\npoints: {valid: 1}\n")
    (root / "source" / "hidden.npz").write_bytes(b"not an archive")
    proc = subprocess.run(NETSPEC + ["grade", "--gradescope", "--root", str(root)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    reason = _failure(root)
    hidden = root / "source" / "hidden.npz"
    assert reason.endswith(f"the test data {hidden}: cannot read {hidden} as a numpy .npz archive: "
                           "File is not a zip file")
    assert proc.stderr == f"error: {reason}\n"  # the same reason, for the instructor's log


def test_a_rubric_that_fails_to_load_still_writes_results_json(tmp_path):
    root = _tree(tmp_path, "points: {valid: -1}\n")
    with pytest.raises(SpecError) as e:
        grade_gradescope(root)
    assert _failure(root) == str(e.value) and "points.valid" in str(e.value)


def test_a_missing_submission_still_writes_results_json(tmp_path):
    root = _tree(tmp_path, "points: {valid: 1}\n")
    (root / "submission" / "spec.yaml").unlink()
    (root / "submission").rmdir()
    with pytest.raises(RunError):
        grade_gradescope(root)
    assert _failure(root) == f"{root / 'submission'} does not exist: not an /autograder tree (give --root)"


def test_a_score_that_is_not_a_number_is_never_written_as_infinity(tmp_path, monkeypatch):
    root = _tree(tmp_path, "points: {valid: 1}\n")
    row = GradeRow.from_dict({
        "student": "a", "file_name": "a", "status": "graded", "total": float("inf"), "max": 1, "items": [],
        "test_accuracy": None, "test_size": None, "params": 0, "seconds": 0.0, "peak_mb": None, "reason": "",
        "problems": [], "fingerprint": None, "run_dir": None, "spec": "a.yaml", "mode": "evaluate"})
    monkeypatch.setattr(gradescope, "grade_entry", lambda *a, **k: row)
    with pytest.raises(RunError):
        grade_gradescope(root)
    assert _failure(root) == "the score came out as inf, not a number of points"
