"""The one exception family of netspec.

Library code raises these; only the CLI turns them into a message and an exit
code. A `SpecError` carries every problem found, each with its place in the
file, so a user fixes them all in one pass.
"""
from __future__ import annotations

from dataclasses import dataclass


class NetspecError(Exception):
    """Base class: a problem the user can act on (never a bug of ours)."""


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in a spec or rules file, located as precisely as we can."""

    file: str
    line: int  # 1-based; 0 when the place is not in a file (e.g. --set)
    col: int  # 1-based
    path: str  # JSON-style path inside the document, e.g. model.layers[3].Linear
    message: str
    hint: str = ""
    code: str = ""  # stable: schema/unknown-key, shape, rule/params, a lint's name, ... (README: "Finding codes")

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file

    def format(self) -> str:
        text = f"{self.where}  {self.path or '(top)'}: {self.message}"
        return text + (f"\n    hint: {self.hint}" if self.hint else "")

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "code": self.code or "spec",
        }

    def coded(self, code: str) -> "Problem":
        from dataclasses import replace

        return replace(self, code=code)


class SpecError(NetspecError):
    """A spec (or rules file) is invalid; `problems` lists every mistake."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        self.checked = None  # set when the model itself builds and only rules or settings failed
        super().__init__("\n".join(p.format() for p in self.problems))


class DataError(NetspecError):
    """A dataset is missing, cannot be downloaded or is not what we expect."""


class RunError(NetspecError):
    """A training run cannot start or had to stop (non-finite loss, bad folder...)."""


class CheckpointError(NetspecError):
    """A checkpoint or run folder cannot be loaded safely."""


class Interrupted(NetspecError):
    """Training was interrupted by the user; the state was saved to `run_dir`."""

    def __init__(self, message: str, run_dir):
        self.run_dir = run_dir
        super().__init__(message)


def os_error_text(e: OSError) -> str:
    """An operating-system error as one line: what failed, and on which file."""
    text = e.strerror or str(e) or type(e).__name__
    return f"{text}: {e.filename}" if e.filename else text


def first_line(e: BaseException, default: str = "") -> str:
    """The first line of an exception's message (torch's run to pages), or `default` when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else default
