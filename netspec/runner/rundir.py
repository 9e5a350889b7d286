"""A run folder: each file written atomically (a rename); torch files only loaded with `weights_only=True`."""
from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import secrets
import shutil
import socket
import time
from contextlib import suppress
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import yaml

from netspec.errors import CheckpointError, first_line, RunError
from netspec.runner import safeweights
from netspec.runner.metrics import Metrics
from netspec.runner.safeweights import SAFE_WEIGHTS

if TYPE_CHECKING:
    from netspec.runner.records import DataRecord, RulesRecord, RunRecord

R = TypeVar("R")  # a record class
SPEC_FILE = "spec.yaml"
CHECKPOINT = "checkpoint.pt"  # resumable state after the last finished epoch
WEIGHTS = "model.pt"  # final weights + the spec that builds them (SAFE_WEIGHTS, read in preference, runs no code)
_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write beside `path`, fsync, rename over it (a planted symlink is replaced, not followed), fsync the folder."""
    path = Path(path)
    # O_EXCL, mode 0666 so the umask applies (mkstemp's 0600 hides run files from others; reading the umask sets it)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        with suppress(FileExistsError):
            fd = os.open(tmp, _EXCL, 0o666)
            break
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if not isinstance(e, (OSError, KeyboardInterrupt)) and _disk_full(path.parent):
            # torch.save reports a full disk as RuntimeError("... unexpected pos ..."): say what it is
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    with suppress(OSError):  # the rename made durable (the new directory entry); some file systems refuse this
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


CLAIM = "# netspec run folder claimed, data loading: "  # spec.yaml until the resolved spec replaces it


def claim_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) of the run that claimed a folder and has not written its spec yet; None when `path` holds a spec."""
    try:
        text = path.read_text() if path.stat().st_size <= 200 else ""
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(CLAIM):
        return None
    host, _, pid = text[len(CLAIM):].strip().rpartition(" ")
    return (host, int(pid)) if pid.isdigit() else ("", 0)


def process_alive(host: str, pid: int) -> bool:
    """Whether process `pid` on `host` still runs; another machine's is assumed to."""
    if host != socket.gethostname():
        return True
    try:
        with suppress(PermissionError):  # another user's: alive
            os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no process number at all (a forged claim)
        return False
    return True


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path | None, name: str, root: str | Path = "runs", *, force: bool = False) -> "RunDir":
        """A new run folder: `out` (new, empty, or a run folder emptied with `force`), else runs/<name>-<time>[-2...].
        Claimed by creating spec.yaml O_EXCL: a run racing for it fails cleanly; a planted symlink is not followed."""
        try:
            if out:
                path = Path(out)
                if path.is_symlink() or path.exists():
                    cls._make_room(path, force)
                path.mkdir(parents=True, exist_ok=True)
            else:
                Path(root).mkdir(parents=True, exist_ok=True)
                base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
                for n in count(1):  # mkdir is atomic: of two runs started in the same second, each gets its own
                    path = base if n == 1 else Path(f"{base}-{n}")
                    with suppress(FileExistsError):
                        path.mkdir()
                        break
            try:
                with os.fdopen(os.open(path / SPEC_FILE, _EXCL, 0o666), "w") as claim:
                    claim.write(f"{CLAIM}{socket.gethostname()} {os.getpid()}\n")
            except FileExistsError:
                raise RunError(f"{path} was taken by another run at the same moment; use another --out") from None
        except OSError as e:
            raise RunError(f"cannot write the run folder {out or root}: {e.strerror or e}") from None
        return cls(path)

    def release(self) -> None:
        """Give back a folder claimed by `create` before anything was written into it."""
        claim = self.path / SPEC_FILE
        with suppress(OSError):  # not empty (or not ours to remove): leave it
            if claim.is_file() and not claim.is_symlink() and claim_owner(claim) is not None:
                claim.unlink()
            self.path.rmdir()

    @staticmethod
    def _make_room(path: Path, force: bool) -> None:
        if not path.is_dir() or path.is_symlink():
            raise RunError(f"--out {path} exists and is not a folder")
        entries = list(path.iterdir())
        claim = path / SPEC_FILE
        if entries == [claim] and not claim.is_symlink() and (owner := claim_owner(claim)) is not None:
            if owner[1] and process_alive(*owner):
                raise RunError(f"{path} already holds an earlier run, still loading its data (process "
                               f"{owner[1]}); pick another --out")
            claim.unlink()  # a claim never used: its run was killed before its data loaded
            return
        if not entries:
            return
        if not claim.is_file():
            raise RunError(f"--force empties only run folders, and {path} has no {SPEC_FILE}; pick another --out"
                           if force else f"{path} already holds files; pick a new or empty folder for --out")
        if not force:
            if (path / WEIGHTS).is_file() and RunDir(path).finished():
                raise RunError(f"{path} already holds an earlier run (finished); pick another --out, or add --force "
                               f"to empty it first")
            raise RunError(f"{path} already holds an earlier run; pick another --out, continue it with "
                           f"`netspec run --resume {path}`, or add --force to empty it first")
        for entry in entries:  # never follows links: a link is removed, not what it points to
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if not (path / SPEC_FILE).is_file():
            raise CheckpointError(f"{path} is not a run folder (no {SPEC_FILE} in it)")
        if (owner := claim_owner(path / SPEC_FILE)) is not None:
            state = "still loading its data" if owner[1] and process_alive(*owner) else "stopped before its data loaded"
            raise CheckpointError(f"{path} holds a run {state}: nothing to resume; run the spec again with --out "
                                  f"{path} once it is not in use")
        return cls(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def _write(self, name: str, write: Callable[[io.BufferedWriter], None]) -> Path:
        atomic_write(self / name, write)
        return self / name

    def write_text(self, name: str, text: str) -> Path:
        return self._write(name, lambda f: f.write(text.encode("utf-8")))

    def write_json(self, name: str, data: Any) -> Path:
        safe = json.loads(json.dumps(data), parse_constant=lambda _: None)  # NaN, infinities: null (valid JSON)
        return self.write_text(name, json.dumps(safe, indent=2, allow_nan=False) + "\n")

    def write_yaml(self, name: str, data: Any) -> Path:
        return self.write_text(name, yaml.safe_dump(data, sort_keys=False))

    def save(self, name: str, obj: Any) -> Path:
        import torch  # here, not at the top: grading's parent and sweep reports use this module without torch

        return self._write(name, lambda f: torch.save(obj, f))

    def save_figure(self, name: str, fig) -> Path:
        return self._write(name, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))

    def load(self, name: str) -> Any:
        return load_checkpoint(self / name)

    def save_safetensors(self, name: str, state: dict, record: dict | None = None, **notes: Any) -> Path:
        """`state` as a safetensors file, the data `record` and `notes` (epoch, version) in its metadata."""
        data = safeweights.to_bytes(state, record, **notes)
        return self._write(name, lambda f: f.write(data))

    def weights_name(self) -> str:
        """The weights file to read: model.safetensors when the run wrote one, else model.pt."""
        return SAFE_WEIGHTS if (self / SAFE_WEIGHTS).is_file() else WEIGHTS

    def load_weights(self, name: str | None = None) -> dict:
        """The `state_dict` saved in `name` (default: `weights_name()`), checked to map names to tensors."""
        name = name or self.weights_name()
        if name.endswith(".safetensors"):
            return safeweights.load(self / name)[0]
        saved = self.load(name)
        state = saved.get("state_dict") if isinstance(saved, dict) else None
        if not is_state_dict(state):
            raise CheckpointError(f"{self / name} does not hold netspec weights (no mapping of names to tensors)")
        return state

    def read_json(self, name: str) -> Any:
        """A JSON file of the folder; NaN, infinities (netspec writes null) and too deep nesting refused as damage."""
        try:
            return json.loads((self / name).read_text(), parse_constant=_not_finite, parse_float=_finite)
        except (OSError, ValueError, RecursionError) as e:
            what = "it is nested too deeply" if isinstance(e, RecursionError) else e
            raise CheckpointError(f"cannot read {self / name}: {what}") from None

    # The records (Metrics, and those of netspec.runner.records): each class names its FILE and its schema.

    def write_record(self, record: Metrics | DataRecord | RunRecord | RulesRecord) -> Path:
        return self.write_json(record.FILE, record.to_dict())

    def read_record(self, kind: type[R]) -> R:
        if not (self / kind.FILE).is_file():
            raise CheckpointError(f"{self.path} has no {kind.FILE}: its run stopped before writing it, or the file "
                                  f"was removed; rerun the spec to write the folder again")
        return kind.from_dict(self.read_json(kind.FILE), str(self / kind.FILE))

    def metrics(self) -> Metrics:
        """metrics.json: how the run ended and what it measured."""
        return self.read_record(Metrics)

    def finished(self) -> bool:
        """Whether metrics.json says the run finished (a missing or damaged one: no)."""
        try:
            return self.metrics().finished
        except CheckpointError:
            return False


def _not_finite(text: str) -> float:
    raise ValueError(f"{text} is not a number a run writes")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def is_state_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def load_checkpoint(path: Path) -> Any:
    """torch.load with weights_only=True and no fallback: plain tensors and containers only."""
    import torch

    if not Path(path).is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} holds more than weights and was refused (it could run code when loaded): "
                              f"{first_line(e, 'unsupported content')}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {first_line(e, type(e).__name__)}") from None
