"""Models that leave the run folder: ONNX export (torch's dynamo exporter) and image files
read the way the run's data was (grayscale, 28x28, scaled to 0..1).

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

from netspec.data.datasets import DATASETS
from netspec.errors import NetspecError, RunError
from netspec.runner.rundir import atomic_write
from netspec.runner.run import load_run

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def export_onnx(run_path: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN_DIR/model.onnx (or `out`) and its preprocessing next to it; returns the path."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; say so before torch fails deeper
    except ImportError:
        raise NetspecError("ONNX export needs the onnx extra: pip install 'netspec[onnx]' "
                           "(onnx, onnxscript; onnxruntime to run the file)") from None
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
            raise RunError(f"ONNX export of {run_dir.path} failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    data = program.model_proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    info = DATASETS[spec.data.dataset]
    meta = {"input": "images", "input_shape": ["batch", *spec.data.input_shape], "normalise": {"mean": info.mean, "std": info.std},
            "pixels": "grayscale, scaled to 0..1, then (x - mean) / std", "output": "outputs",
            "output_is": "probabilities (the spec ends in Softmax)" if checked.analysis.softmax_head else "logits",
            "classes": list(info.classes), "spec": spec.name}
    atomic_write(path.with_name(path.name + ".json"), lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))
    return path


def image_files(paths: list[str | Path]) -> list[Path]:
    """The image files named, and those inside named folders (sorted)."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise NetspecError(f"{p} does not exist")
    if not found:
        raise NetspecError("no image files found (" + ", ".join(IMAGE_SUFFIXES) + ")")
    return found


def read_images(files: list[Path], size: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """(N, H, W) floats in 0..1: each file as grayscale, resized to `size` if it differs."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for f in files:
        try:
            with Image.open(f) as img:
                gray = img.convert("L")
                if gray.size != (size[1], size[0]):
                    gray = gray.resize((size[1], size[0]), Image.BILINEAR)
                out.append(torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(size))
        except (UnidentifiedImageError, OSError) as e:
            raise NetspecError(f"{f} is not an image netspec can read: {e}") from None
    return torch.stack(out).float() / 255
