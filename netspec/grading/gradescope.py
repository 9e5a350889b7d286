"""netspec as a Gradescope autograder (its autograder specification): the zip an instructor
uploads, and the grading of one submission inside Gradescope's /autograder tree.

The zip holds setup.sh (installs CPU torch and netspec), run_autograder (runs
`netspec grade --gradescope`), the rubric as rubric.yaml and the files it names (rule sets,
the hidden test data) at the same relative places. In /autograder, the student's upload is in
submission/, the zip's content in source/, and results/results.json is what Gradescope reads.
"""
from __future__ import annotations

import json
import os
import stat
import time
import zipfile
from pathlib import Path

from netspec._version import __version__
from netspec.errors import RunError
from netspec.grading.classroom import grade_entry
from netspec.grading.rubric import load_rubric
from netspec.grading.verdict import folder_entry
from netspec.report.gradebook import gradescope_results
from netspec.runner.rundir import atomic_write
from netspec.spec.loader import load_file
from netspec.spec.rules import shipped_rule_sets

RUBRIC = "rubric.yaml"

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder's image.
set -euo pipefail
cd /autograder/source
python3 -m pip install --upgrade pip
python3 -m pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision
if ls netspec-*.whl >/dev/null 2>&1; then
  python3 -m pip install netspec-*.whl
else
  python3 -m pip install "netspec=={version}"
fi
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission, as /autograder/run_autograder.
cd "$(dirname "$0")"
exec netspec grade --gradescope --root "$PWD"
"""


def grade_gradescope(root: str | Path, data_dir=None) -> dict:
    """Grade root/submission with root/source/rubric.yaml; write root/results/results.json."""
    root = Path(root)
    rubric = load_rubric(root / "source" / RUBRIC)
    submission = root / "submission"
    if not submission.is_dir():
        raise RunError(f"{submission} does not exist: not an /autograder tree (give --root)")
    started = time.perf_counter()
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    entry = folder_entry(submission)
    row = grade_entry(entry, rubric, results / "netspec", None if data_dir is None else str(data_dir),
                      threads=os.cpu_count() or 1)
    out = gradescope_results(row, rubric.visibility, time.perf_counter() - started)
    atomic_write(results / "results.json", lambda f: f.write(json.dumps(out, indent=2).encode()))
    return out


def make_autograder(rubric_path: str | Path, zip_path: str | Path, wheel: str | Path | None = None) -> list[str]:
    """The autograder zip for Gradescope; returns the names it holds."""
    rubric_path = Path(rubric_path)
    load_rubric(rubric_path)  # a rubric with mistakes is refused here, not on Gradescope
    base = rubric_path.parent.resolve()
    files = _referenced(rubric_path, base)
    names = []
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        _add_text(z, "setup.sh", SETUP.format(version=__version__))
        _add_text(z, "run_autograder", RUN)
        z.write(rubric_path, RUBRIC)
        names += ["setup.sh", "run_autograder", RUBRIC]
        for path in files:
            for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
                z.write(f, f.relative_to(base).as_posix())
                names.append(f.relative_to(base).as_posix())
        if wheel is not None:
            z.write(wheel, Path(wheel).name)
            names.append(Path(wheel).name)
    return names


def _referenced(rubric_path: Path, base: Path) -> list[Path]:
    """Rule files and the hidden test data the rubric names: inside the rubric's folder, so the
    zip keeps them where the rubric says."""
    data = load_file(rubric_path).data
    refs = [r for r in data.get("rules", []) if r not in shipped_rule_sets()]
    if "path" in data.get("test", {}):
        refs.append(data["test"]["path"])
    out = []
    for ref in refs:
        path = (base / ref).resolve()
        if Path(ref).is_absolute() or base not in path.parents:
            raise RunError(f"the rubric names {ref}, outside its folder {base}; the autograder zip holds the rubric's "
                           f"folder only: put the file beside the rubric and name it relative to it")
        out.append(path)
    return out


def _add_text(z: zipfile.ZipFile, name: str, text: str) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | 0o755) << 16  # executable once unzipped
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, text)
