"""A class roster (CSV): who each submission entry is. Its `folder` column is the entry's name in
the submissions folder (`alice.yaml` or `alice/` is `alice`); `name`, `id` and `email` go into
the gradebook beside the grade, and `gradebook-canvas.csv` has a row for each student on it.

    folder,name,id,email[,section][,canvas_id]

`id` is the student's institutional ID (Canvas's "SIS User ID"); the optional `canvas_id` is
Canvas's own user ID (its "ID" column) and `section` its "Section".
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from netspec.errors import RunError

COLUMNS = ("folder", "name", "id", "email")
OPTIONAL = ("section", "canvas_id")
MAX_BYTES = 16 << 20  # a roster of a large class is kilobytes


@dataclass(frozen=True)
class Student:
    folder: str  # the submission entry's name
    name: str
    id: str  # institutional (SIS) ID
    email: str
    section: str = ""
    canvas_id: str = ""

    def fields(self) -> dict:
        return {"name": self.name, "id": self.id, "email": self.email, "section": self.section,
                "canvas_id": self.canvas_id}


def load_roster(path: str | Path) -> list[Student]:
    """The students of a roster CSV, in its order; every problem of the file at once, each with its line."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"--roster {path}: not a file")
    if path.stat().st_size > MAX_BYTES:
        raise RunError(f"--roster {path}: larger than {MAX_BYTES >> 20} MiB; a roster is one line per student")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not a column name
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"--roster {path}: cannot read it: {e}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise RunError(f"{path}:1: the roster has no {', '.join(missing)} column; its columns are "
                       f"{', '.join(COLUMNS)} (and optionally {', '.join(OPTIONAL)})")
    reader.fieldnames = header
    students, problems, seen = [], [], {}
    for line, row in enumerate(reader, 2):
        values = {k: (row.get(k) or "").strip() for k in (*COLUMNS, *OPTIONAL)}
        if not any(values.values()):
            continue  # a blank line
        if not values["folder"]:
            problems.append(f"{path}:{line}: no folder (the student's entry in the submissions folder)")
        elif values["folder"] in seen:
            problems.append(f"{path}:{line}: folder {values['folder']!r} is also on line {seen[values['folder']]}")
        else:
            seen[values["folder"]] = line
            students.append(Student(**values))
    if problems:
        raise RunError("the roster has problems:\n" + "\n".join(problems))
    return students
