"""netspec as a Gradescope autograder (its autograder specification): the zip an instructor
uploads, and the grading of one submission inside Gradescope's /autograder tree.

The zip holds setup.sh (installs CPU torch, then netspec from the zip's own netspec-src/ or a
given wheel, never by name from an index, where `netspec` is another project; and fetches a named
test set once), run_autograder (runs `netspec grade --gradescope`), the rubric as rubric.yaml and
the files it names (rule sets, the hidden test data) at the same relative places: regular files
only, no link followed. In /autograder, the student's upload is in submission/, the zip's content
in source/, and results/results.json is what Gradescope reads.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shlex
import stat
import time
import zipfile
from pathlib import Path

from netspec._version import __version__
from netspec.errors import NetspecError, RunError
from netspec.grading.classroom import grade_entry
from netspec.grading.rubric import load_rubric
from netspec.grading.verdict import submission_entry
from netspec.report.gradebook import gradescope_results
from netspec.runner.rundir import atomic_write
from netspec.spec.datasets import IMAGE_EXTENSIONS, NAMED
from netspec.spec.loader import load_file
from netspec.spec.rules import shipped_rule_sets

RUBRIC = "rubric.yaml"
PACKAGE_INIT = Path(__file__).parents[1] / "__init__.py"  # the installed netspec package's own file
FAILED = "The autograder could not grade this submission; tell your instructor. "  # then why

SOURCE = "netspec-src"  # netspec's own source in the zip, installed by setup.sh
DATA = "/autograder/data"  # a named test set, fetched once by setup.sh
# Copies of pyproject.toml's, for an installed netspec that has no pyproject.toml beside it
# (tests/test_autograder.py holds them equal to the checkout's).
DEPENDENCIES = ("torch>=2.14,<2.15", "torchvision>=0.29,<0.30", "pyyaml>=6.0,<7", "jsonschema>=4.26,<5",
                "rich>=15,<16", "typer>=0.29,<0.30", "matplotlib>=3.11,<4", "optuna>=5.0,<6", "safetensors>=0.8,<0.9")
PACKAGE_DATA = ("spec/schema.json", "spec/rulesets/*.yaml", "report/results.schema.json")

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder's image.
set -euo pipefail
cd /autograder/source
python3 -m pip install --upgrade pip
python3 -m pip install --index-url https://download.pytorch.org/whl/cpu {torch}
python3 -m pip install {netspec}
{fetch}"""

FETCH = """# the test split, downloaded once here rather than once per submission
mkdir -p {data}
python3 -c {code}
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission, as /autograder/run_autograder.
cd "$(dirname "$0")"
exec netspec grade --gradescope --root "$PWD"{data_dir}
"""

PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "netspec"
version = {version}
requires-python = ">=3.10"
dependencies = {dependencies}

[project.scripts]
netspec = "netspec.cli:app"

[tool.setuptools.packages.find]
include = ["netspec*"]

[tool.setuptools.package-data]
netspec = {package_data}
"""


def grade_gradescope(root: str | Path, data_dir=None) -> dict:
    """Grade root/submission with root/source/rubric.yaml; write root/results/results.json.
    When the grader itself fails (its rubric, its test data, the tree), results.json still says
    why, with a score of 0, so the student reads the reason rather than Gradescope's generic
    failure; the error is raised after, so the command fails too."""
    root = Path(root)
    results = root / "results"
    try:
        rubric = load_rubric(root / "source" / RUBRIC)
        submission = root / "submission"
        if not submission.is_dir():
            raise RunError(f"{submission} does not exist: not an /autograder tree (give --root)")
        started = time.perf_counter()
        results.mkdir(parents=True, exist_ok=True)
        entry = submission_entry([submission], "submission")  # sealed and digested as in a class
        row = grade_entry(entry, rubric, results / "netspec", None if data_dir is None else str(data_dir),
                          threads=os.cpu_count() or 1)
        out = gradescope_results(row, rubric.visibility, time.perf_counter() - started)
        text = _results_json(out)
    except Exception as e:
        if root.is_dir():  # a tree to write into; a --root that is not there gets no results/ made up
            results.mkdir(exist_ok=True)
            failed = {"score": 0, "output": FAILED + _reason(e), "tests": []}
            atomic_write(results / "results.json", lambda f: f.write(json.dumps(failed, indent=2).encode()))
        raise
    atomic_write(results / "results.json", lambda f: f.write(text.encode()))
    return out


def _results_json(out: dict) -> str:
    """results.json's text: strict JSON (Python's json writes inf and nan as Infinity and NaN,
    which Gradescope cannot read), and a score that is a number."""
    if not math.isfinite(out["score"]):
        raise RunError(f"the score came out as {out['score']}, not a number of points")
    try:
        return json.dumps(out, indent=2, allow_nan=False)
    except ValueError as e:
        raise RunError(f"the results cannot be written as JSON: {e}") from None


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, NetspecError) else f"{type(e).__name__}: {e}"


def make_autograder(rubric_path: str | Path, zip_path: str | Path, wheel: str | Path | None = None) -> list[str]:
    """The autograder zip for Gradescope; returns the names it holds (netspec's own source as the
    one name netspec-src/)."""
    rubric_path = Path(rubric_path)
    rubric = load_rubric(rubric_path)  # a rubric with mistakes is refused here, not on Gradescope
    base = rubric_path.parent.resolve()
    files = [(f, f.relative_to(base).as_posix()) for f in _referenced(rubric_path, base)]
    if wheel is not None:
        wheel = Path(wheel)
        if not (wheel.name.startswith("netspec-") and wheel.name.endswith(".whl") and wheel.is_file()):
            raise RunError(f"--wheel {wheel}: not a netspec wheel file (netspec-VERSION-....whl)")
        files.append((wheel, wheel.name))
        install = shlex.quote(f"./{wheel.name}")
    else:
        install = f"./{SOURCE}"
    fixed = ["setup.sh", "run_autograder", RUBRIC]
    clash = [name for _, name in files if name in fixed or name.split("/")[0] == SOURCE]
    if clash:
        raise RunError(f"the rubric names {', '.join(clash)}, which the autograder zip holds for itself: rename it")
    dependencies, package_data = _project()
    source = _source_files(package_data) if wheel is None else []  # refused here, before a zip is begun
    torch = " ".join(shlex.quote(d) for d in dependencies if _requirement_name(d) in ("torch", "torchvision"))
    fetch = ""
    if rubric.test_dataset is not None:
        if rubric.test_dataset not in NAMED:
            raise RunError(f"the rubric's test dataset '{rubric.test_dataset}' is not one netspec names "
                           f"({', '.join(NAMED)})")
        code = (f"from netspec.data.datasets import load_named_test; "
                f"load_named_test({json.dumps(rubric.test_dataset)}, {json.dumps(DATA)})")
        fetch = FETCH.format(data=DATA, code=shlex.quote(code))
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        _add_text(z, "setup.sh", SETUP.format(torch=torch, netspec=install, fetch=fetch))
        _add_text(z, "run_autograder", RUN.format(
            data_dir=f' --data-dir "${{NETSPEC_DATA_DIR:-{DATA}}}"' if fetch else ""))
        z.write(rubric_path, RUBRIC)
        for path, name in files + source:
            z.write(path, name)
        if wheel is None:
            _add_text(z, f"{SOURCE}/pyproject.toml", PYPROJECT.format(
                version=json.dumps(__version__), dependencies=json.dumps(list(dependencies)),
                package_data=json.dumps(list(package_data))), mode=0o644)
    return fixed + [name for _, name in files] + ([f"{SOURCE}/"] if wheel is None else [])


def _referenced(rubric_path: Path, base: Path) -> list[Path]:
    """The regular files the rubric names: its rule files, and its hidden test file or the image
    files of its hidden test folder; inside the rubric's folder, so the zip keeps them where the
    rubric says. A link on the way is refused, never followed (it would pack what it points to)."""
    data = load_file(rubric_path).data
    refs = [(r, False) for r in data.get("rules", []) if r not in shipped_rule_sets()]
    if "path" in data.get("test", {}):
        refs.append((data["test"]["path"], True))
    out = []
    for ref, may_be_folder in refs:
        path = Path(os.path.normpath(base / ref))
        if Path(ref).is_absolute() or ".." in Path(ref).parts or base not in path.parents:
            raise RunError(f"the rubric names {ref}, outside its folder {base}; the autograder zip holds the rubric's "
                           f"folder only: put the file beside the rubric and name it relative to it (no '..')")
        step = base
        for part in path.relative_to(base).parts:
            step = step / part
            if step.is_symlink():
                raise RunError(f"the rubric names {ref}, and {step} is a link; the autograder zip holds regular "
                               "files only and follows no link: put the file itself there")
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            out.append(path)
        elif stat.S_ISDIR(mode) and may_be_folder:
            out += [f for f in _regular_files(path) if f.name.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            raise RunError(f"the rubric names {ref}, which is not a regular file: the autograder zip holds none")
    return out


def _regular_files(top: Path) -> list[Path]:
    """The regular files under a folder, sorted, walked with a list rather than recursion (a deep
    tree cannot exhaust the stack). Hidden names (.git, .x.swp), editor backups (x~, #x#) and
    __pycache__ are left out; a link, FIFO, socket or device is refused by name, never followed
    nor left out unsaid."""
    files, folders = [], [top]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for e in entries:
                if e.name.startswith(".") or e.name.endswith("~") or e.name[:1] == e.name[-1:] == "#" \
                        or e.name == "__pycache__":
                    continue
                if e.is_symlink():
                    raise RunError(f"{e.path} is a link; the autograder zip holds regular files only and follows no "
                                   "link: put the file itself there")
                if e.is_dir(follow_symlinks=False):
                    folders.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    files.append(Path(e.path))
                else:
                    raise RunError(f"{e.path} is not a regular file (a FIFO, socket or device); the autograder zip "
                                   "holds regular files only")
    return sorted(files)


def _project() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """netspec's dependencies and package data, read from the checkout's pyproject.toml where this
    netspec runs from one (an editable install), else the copies kept here."""
    pyproject = Path(PACKAGE_INIT).parents[1] / "pyproject.toml"
    try:
        import tomllib  # Python 3.11+

        data = tomllib.loads(pyproject.read_text())
        if data["project"]["name"] == "netspec":
            return (tuple(data["project"]["dependencies"]),
                    tuple(data["tool"]["setuptools"]["package-data"]["netspec"]))
    except (ImportError, OSError, ValueError, KeyError):
        pass
    return DEPENDENCIES, PACKAGE_DATA


def _requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]*", requirement).group(0).lower()


def _source_files(package_data) -> list[tuple[Path, str]]:
    """netspec's own source for netspec-src/ (beside the pyproject.toml that builds it, so setup.sh
    installs this very netspec): the installed package's .py files and package data."""
    package = Path(PACKAGE_INIT).parent
    out = []
    for f in _regular_files(package):
        rel = f.relative_to(package).as_posix()
        if rel.endswith(".py") or any(fnmatch.fnmatch(rel, pattern) for pattern in package_data):
            out.append((f, f"{SOURCE}/netspec/{rel}"))
    return out


def _add_text(z: zipfile.ZipFile, name: str, text: str, mode: int = 0o755) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | mode) << 16  # executable once unzipped (the scripts)
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, text)
