"""Models that leave the run folder: ONNX export (torch's dynamo exporter) and image files
read the way the run's data was (grayscale or RGB, resized to its image size, scaled to 0..1).

The exported graph is the model as the spec describes it (a final Softmax included, so it
outputs probabilities when the spec ends in one), taking `images`: normalised inputs of the
spec's input shape with a dynamic batch dimension. `model.onnx.json` beside it says how to
normalise (mean, std), the input shape and the class names.
"""
from __future__ import annotations

import io
import json
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch

from netspec.errors import DataError, first_line, NetspecError, RunError
from netspec.runner.rundir import atomic_write
from netspec.runner.records import preprocessing
from netspec.runner.reopen import load_run
from netspec.spec.datasets import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = (*IMAGE_EXTENSIONS, ".gif")


def _export_target(out: Path, force: bool) -> None:
    """Refuse a target that is not a new file in an existing folder (unless `force` replaces a file)."""
    if out.is_dir():
        raise NetspecError(f"--out {out} is a folder; give a file name, such as {out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise NetspecError(f"--out {out}: the folder {out.parent} does not exist")
    for target in (out, out.with_name(out.name + ".json")):
        if (target.exists() or target.is_symlink()) and not force:
            raise NetspecError(f"{target} already exists; pick another --out, or add --force to replace it")
        if target.exists() and not target.is_file():
            raise NetspecError(f"{target} exists and is not a regular file")


def export_onnx(run_path: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write RUN_DIR/model.onnx (or `out`) and its preprocessing next to it; returns the path.
    An explicit `out` that exists is replaced only with `force`; the run folder's own model.onnx
    is the export's, and is written again."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; say so before torch fails deeper
    except ImportError:
        raise NetspecError("ONNX export needs the onnx extra: pip install 'netspec[onnx]' "
                           "(onnx, onnxscript; onnxruntime to run the file)") from None
    if out is not None:
        _export_target(Path(out), force)
    run_dir, checked, model, _ = load_run(run_path)
    spec = checked.spec
    path = Path(out) if out else run_dir / "model.onnx"
    model.eval()
    example = torch.zeros(2, *spec.data.input_shape)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["outputs"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
        except Exception as e:  # noqa: BLE001 - any exporter failure is one line for the user
            raise RunError(f"ONNX export of {run_dir.path} failed: {type(e).__name__}: {first_line(e)}") from None
    data = program.model_proto.SerializeToString()
    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise NetspecError(f"cannot write {path}: {e.strerror or e}") from None
    pre = preprocessing(run_dir, spec)
    c, h, w = pre["image_shape"]
    meta = {"input": "images", "input_shape": ["batch", *spec.data.input_shape],
            "normalise": {"mean": pre["mean"], "std": pre["std"]},
            "pixels": f"{'grayscale' if c == 1 else 'RGB'} {h}x{w}, scaled to 0..1, then per channel (x - mean) / std, "
                      f"reshaped to input_shape",
            "output": "outputs",
            "output_is": "probabilities (the spec ends in Softmax)" if checked.analysis.softmax_head else "logits",
            "classes": pre["classes"], "spec": spec.name}
    try:
        atomic_write(path.with_name(path.name + ".json"), lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))
    except OSError as e:
        raise NetspecError(f"cannot write {path}.json: {e.strerror or e}") from None
    return path


def image_files(paths: list[str | Path]) -> list[Path]:
    """The image files named, and those inside named folders (sorted): regular files only (a FIFO
    named x.png would block the read for ever); links to files are read, links to folders listed."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        elif p.exists():
            raise NetspecError(f"{p} is not a regular file")
        else:
            raise NetspecError(f"{p} does not exist")
    if not found:
        raise NetspecError("no image files found (" + ", ".join(IMAGE_SUFFIXES) + ")")
    return found


INVERTED_GAP = 0.3  # an image's mean brightness this far from training's, whose inverse is near it


def looks_inverted(images: torch.Tensor, train_mean) -> list[bool]:
    """Per image (N, C, H, W in 0..1): brighter or darker than the training images by a wide
    margin, while 1 - image matches them (dark ink on light paper for a model of light-on-dark digits)."""
    mean = torch.tensor(train_mean, dtype=torch.float32).mean()
    seen = images.flatten(1).mean(1)
    return [bool(abs(s - mean) > INVERTED_GAP and abs((1 - s) - mean) < abs(s - mean) / 2) for s in seen]


def read_images(files: list[Path], image_shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, C, H, W) floats in 0..1: each file read as in training (grayscale or RGB, resized)."""
    images, unread = read_readable(files, image_shape)
    if unread:
        f, reason = next(iter(unread.items()))
        raise NetspecError(f"{f}: {reason}")
    return images


def read_readable(files: list[Path], image_shape: tuple[int, int, int]) -> tuple[torch.Tensor, dict[Path, str]]:
    """The files that can be read, as (N, C, H, W) floats in 0..1 in the order given, and why each
    other one cannot: one corrupt file among a folder's stops nobody else's prediction."""
    from netspec.data.datasets import read_image

    c, h, w = image_shape
    out, unread = [], {}
    for f in files:
        try:
            out.append(read_image(str(f), "L" if c == 1 else "RGB", (h, w)))
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError; a truncated file may be either
            unread[f] = f"not an image netspec can read: {e}"
        except DataError as e:  # too large to decode
            unread[f] = first_line(e)
    images = torch.stack(out).float() / 255 if out else torch.zeros(0, c, h, w)
    return images, unread
