"""A run folder: everything needed to understand and reproduce one run.

Every file is written atomically (temporary file in the same folder, then
rename), so a run killed mid-write leaves the previous good file. Torch files
are only ever loaded with `weights_only=True`; one that needs more is refused.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from netspec.errors import CheckpointError, RunError

SPEC_FILE = "spec.yaml"
CHECKPOINT = "checkpoint.pt"  # resumable state after the last finished epoch
WEIGHTS = "model.pt"  # final weights + the spec that builds them


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide run files from others


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path | None, name: str, root: str | Path = "runs") -> "RunDir":
        """A new folder (or `out`), checked writable before any training starts."""
        path = Path(out) if out else Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not out:
            base, n = path, 1
            while path.exists():
                n += 1
                path = Path(f"{base}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunError(f"cannot write the run folder {path}: {e.strerror or e}") from None
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if not (path / SPEC_FILE).is_file():
            raise CheckpointError(f"{path} is not a run folder (no {SPEC_FILE} in it)")
        return cls(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        atomic_write(self / name, lambda f: f.write(text.encode("utf-8")))
        return self / name

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2) + "\n")

    def write_yaml(self, name: str, data: Any) -> Path:
        return self.write_text(name, yaml.safe_dump(data, sort_keys=False))

    def save(self, name: str, obj: Any) -> Path:
        atomic_write(self / name, lambda f: torch.save(obj, f))
        return self / name

    def save_figure(self, name: str, fig) -> Path:
        atomic_write(self / name, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
        return self / name

    def load(self, name: str) -> Any:
        return load_checkpoint(self / name)

    def read_json(self, name: str) -> Any:
        try:
            return json.loads((self / name).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {self / name}: {e}") from None


def load_checkpoint(path: Path) -> Any:
    """torch.load with weights_only=True and no fallback: plain tensors and containers only."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(
            f"{path} holds more than weights and was refused (it could run code when loaded): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {str(e).splitlines()[0] if str(e) else e}") from None
