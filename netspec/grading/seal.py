"""A submission sealed before anything reads it: its regular files copied into a private folder
that the grading child works in, and a digest of every byte the grade depends on.

A submission is hostile input. Nothing in it is followed or opened but regular files: a link at
any depth (a class folder linked to the instructor's hidden test set, an image linked to another
student's) is not copied and is named; a FIFO or a device is never opened (it could block the
grader for ever); hidden names (.git, .DS_Store) are left out. The walk is iterative and capped
in depth, count and bytes, so a folder of 1,100 nested folders or a million files is a reason
in the gradebook, never a crash of the class. Files are opened with O_NOFOLLOW and checked
again with fstat, so a file swapped for a link between the look and the read is refused too.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_DEPTH = 16  # a submission is a spec, a run folder, a data folder with class folders
MAX_FILES = 100_000  # a small image data set
MAX_BYTES = 2 << 30  # 2 GiB in all
CHUNK = 1 << 20


@dataclass(frozen=True)
class Sealed:
    """What a walk (and copy) of a submission found."""

    files: tuple[tuple[str, str], ...]  # (relative POSIX path, sha256 of its bytes), sorted
    left_out: tuple[str, ...] = ()  # relative paths not read, each with why: "data/3 (a link)"
    problem: str = ""  # why the submission cannot be graded at all (caps passed, not a file)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for rel, file_hash in self.files:
            h.update(f"{rel}\0{file_hash}\n".encode("utf-8", "surrogateescape"))
        h.update(f"{self.problem}\0{self.left_out}".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]

    def digest_without(self, skip) -> str:
        """The digest of the files for which skip(relative path) is false (identical data and
        weights under another spec name still compare equal)."""
        h = hashlib.sha256()
        for rel, file_hash in self.files:
            if not skip(rel):
                h.update(f"{rel}\0{file_hash}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]


class _Refused(Exception):
    pass


def _text(name: str) -> str:
    """A name for a message: bytes that are not UTF-8 shown as U+FFFD (they cannot be written out)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def seal(source: str | Path, dest: str | Path | None = None) -> Sealed:
    """Walk a submission (a file or a folder) and, when `dest` is given, copy its regular files
    there (a file is copied into `dest` under its own name). Never raises for what the
    submission holds: a refusal is `Sealed.problem`."""
    source = Path(source)
    try:
        st = os.lstat(source)
    except OSError as e:
        return Sealed((), problem=f"cannot be read: {e.strerror}")
    if dest is not None:
        os.makedirs(dest, mode=0o700, exist_ok=True)
    try:
        if stat.S_ISREG(st.st_mode):
            total = [0]
            file_hash = _copy(source, None if dest is None else Path(dest) / source.name, st, total)
            return Sealed(((source.name, file_hash),))
        if not stat.S_ISDIR(st.st_mode):
            return Sealed((), problem=f"{_text(source.name)} is {_kind(st.st_mode)}, not a file or folder: submit the files")
        return _seal_folder(source, None if dest is None else Path(dest))
    except _Refused as e:
        return Sealed((), problem=str(e))


def _seal_folder(source: Path, dest: Path | None) -> Sealed:
    files, left_out, total = [], [], [0]
    stack = [(source, "")]  # iterative: depth is capped, never Python's stack
    while stack:
        folder, rel = stack.pop()
        if rel.count("/") + 1 > MAX_DEPTH and rel:
            raise _Refused(f"folders nested deeper than {MAX_DEPTH} levels (at {_text(rel)}): submit a shallower folder")
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise _Refused(f"the folder {rel or '.'} cannot be read: {e.strerror}") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            path = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if dest is not None:
                    os.makedirs(dest / path, mode=0o700, exist_ok=True)
                stack.append((Path(e.path), path))
            elif stat.S_ISREG(st.st_mode):
                if len(files) >= MAX_FILES:
                    raise _Refused(f"more than {MAX_FILES:,} files: submit fewer")
                files.append((path, _copy(Path(e.path), None if dest is None else dest / path, st, total)))
            else:
                left_out.append(f"{_text(path)} ({_kind(st.st_mode)})")
    return Sealed(tuple(sorted(files)), tuple(sorted(left_out)))


def _copy(source: Path, dest: Path | None, st: os.stat_result, total: list[int]) -> str:
    """sha256 of one regular file, copied to `dest` when given; refused when the bytes of the
    whole submission pass MAX_BYTES."""
    if total[0] + st.st_size > MAX_BYTES:
        raise _Refused(f"more than {MAX_BYTES >> 30} GiB of files: submit less")
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise _Refused(f"{_text(source.name)} cannot be read: {e.strerror}") from None
    h = hashlib.sha256()
    with open(fd, "rb") as f:
        now = os.fstat(f.fileno())
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _Refused(f"{_text(source.name)} changed while it was read")
        out = None if dest is None else open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        try:
            for block in iter(lambda: f.read(CHUNK), b""):
                total[0] += len(block)
                if total[0] > MAX_BYTES:
                    raise _Refused(f"more than {MAX_BYTES >> 30} GiB of files: submit less")
                h.update(block)
                if out is not None:
                    out.write(block)
        finally:
            if out is not None:
                out.close()
    return h.hexdigest()
