"""One student's line of the gradebook, typed: what netspec.grading.classroom makes of a
submission, what `on_graded` is told, what `Gradebook.rows` holds and (as `to_dict()`) what the
class's Optuna study stores and the gradebook files are written from.

`to_dict()` is the row's JSON as it always was (its keys in their order), and `from_dict()` reads
it back, so the rows stored by an earlier grading run of a class are read as they were written.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from netspec.errors import Problem
from netspec.grading.verdict import Item

# a row's status stays a plain string (it is stored in JSON and shown as it is): one of these
STATUSES = ("graded", "invalid", "rules", "missing", "time limit", "memory limit", "error", "not graded")


@dataclass(frozen=True)
class GradeRow:
    """A gradebook row. `same_as` and `roster` are added to the class's rows (None until then)."""

    student: str  # the entry's name in the submissions folder
    file_name: str  # of feedback/<file_name>.md and runs/<file_name>
    status: str  # STATUSES
    total: float
    max: float
    items: tuple[Item, ...]  # one per rubric column, in its order
    test_accuracy: float | None
    test_size: int | None
    params: int | None
    seconds: float  # the submission's work: CPU seconds of its processes
    peak_mb: int | None
    reason: str  # why it is not graded (the problems' messages joined), or ""
    problems: tuple[Problem, ...]  # what the student is told to fix (at most 50)
    fingerprint: str | None  # of the resolved spec and its files: identical submissions share it
    run_dir: str | None
    spec: str  # the submitted spec's path
    mode: str  # the rubric's: evaluate or retrain
    same_as: tuple[str, ...] | None = None  # the other students of the same fingerprint (the class's rows)
    roster: dict[str, str] | None = None  # its student on --roster (name, id, email, ...); None: not on it

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON (gradebook files, Optuna's user_attrs["row"]): same_as and roster only
        once they are set."""
        out = dict(vars(self))  # the fields, in their order
        out["items"] = [asdict(i) for i in self.items]
        out["problems"] = [p.to_dict() for p in self.problems]
        for late in ("same_as", "roster"):
            if out[late] is None:
                del out[late]
        if self.same_as is not None:
            out["same_as"] = list(self.same_as)
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> GradeRow:
        """A row as `to_dict()` wrote it (this run's, or one stored by an earlier run of the class)."""
        same_as = row.get("same_as")
        return cls(**{**row, "items": tuple(Item(**i) for i in row["items"]),
                      "problems": tuple(Problem(**p) for p in row["problems"]),
                      "same_as": None if same_as is None else tuple(same_as)})
