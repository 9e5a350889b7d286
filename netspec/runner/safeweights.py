"""model.safetensors: a run's weights in a format whose loading runs no code; its metadata holds "data" (JSON),
"epoch", "netspec" (the version), "format": "pt". No torch at import: a grader judges sizes before loading."""
from __future__ import annotations

import json
import os
import struct
from contextlib import suppress
from pathlib import Path

from netspec.errors import CheckpointError, first_line

SAFE_WEIGHTS = "model.safetensors"
HEADER_LIMIT = 100_000_000  # the safetensors library's own limit on the JSON header (bytes)


def to_bytes(state: dict, record: dict | None = None, *, epoch: int | None = None, version: str | None = None) -> bytes:
    """A state dict as safetensors bytes, each tensor a contiguous CPU copy (the format refuses tied weights)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    notes = {"data": None if record is None else json.dumps(record), "epoch": None if epoch is None else str(epoch),
             "netspec": version}
    return save(tensors, metadata={"format": "pt", **{k: v for k, v in notes.items() if v is not None}})


def read_header(path: str | Path, limit: int | None = None, label: str | None = None) -> dict:
    """The JSON header of a safetensors file (an 8-byte little-endian length, then the JSON), read before any
    tensor; a file declaring more than `limit` bytes in all is refused. `label`: its name in messages."""
    path = Path(path)
    name = label or str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{name} is not a safetensors file (shorter than its 8-byte header length)")
            (length,) = struct.unpack("<Q", head)
            if limit is not None and 8 + length > limit:
                raise CheckpointError(f"{name} declares a {length >> 20} MiB header; at most {limit >> 20} MiB in all")
            if length > size - 8:
                raise CheckpointError(f"{name} is not a safetensors file (its header length, {length} bytes, "
                                      f"is more than the file holds)")
            if length > HEADER_LIMIT:
                raise CheckpointError(f"{name} has a {length >> 20} MiB header; the safetensors format allows "
                                      f"{HEADER_LIMIT // 1_000_000} MB")
            header = json.loads(f.read(length))
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError included
        what = "nested too deeply" if isinstance(e, RecursionError) else f"not JSON: {first_line(e)}"
        raise CheckpointError(f"{name} is not a safetensors file (its header is {what})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is not a safetensors file (its header is not a JSON object)")
    declared = 8 + length  # and the tensor bytes: up to the end of the furthest tensor
    for key, entry in ((k, e) for k, e in header.items() if k != "__metadata__"):
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
            raise CheckpointError(f"{name} is not a safetensors file (tensor {key!r} has no data_offsets)")
        declared = max(declared, 8 + length + offsets[1])
    if limit is not None and declared > limit:
        raise CheckpointError(f"{name} declares {declared >> 20} MiB of weights; at most {limit >> 20} MiB")
    return header


def metadata(header: dict) -> dict:
    """The metadata of a header, "data" and "epoch" read back from JSON (else left as text, for the caller to refuse)."""
    raw = header.get("__metadata__")
    out = dict(raw) if isinstance(raw, dict) else {}
    for key in ("data", "epoch"):
        with suppress(KeyError, TypeError, ValueError, RecursionError):
            out[key] = json.loads(out[key])
    return out


def load(path: str | Path, limit: int | None = None, label: str | None = None) -> tuple[dict, dict]:
    """(state dict on the CPU, metadata) of a safetensors file; its header is judged first."""
    from safetensors.torch import load_file

    header = read_header(path, limit, label)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - SafetensorError and friends: one line for the user
        raise CheckpointError(f"{label or path} is not a readable safetensors file: {first_line(e, type(e).__name__)}") from None
    return state, metadata(header)
