"""ONNX export of the spec's model (Softmax included) on normalised `images`; model.onnx.json says how to preprocess."""
from __future__ import annotations

import io
import json
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

from netspec.errors import first_line, NetspecError, RunError
from netspec.runner.rundir import atomic_write
from netspec.runner.records import preprocessing
from netspec.runner.reopen import load_run


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
    """Write RUN_DIR/model.onnx (or `out`, replaced only with `force`) and its preprocessing next to it."""
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
    pre = preprocessing(run_dir, spec)
    c, h, w = pre.image_shape
    meta = {"input": "images", "input_shape": ["batch", *spec.data.input_shape],
            "normalise": {"mean": list(pre.mean), "std": list(pre.std)},
            "pixels": f"{'grayscale' if c == 1 else 'RGB'} {h}x{w}, scaled to 0..1, then per channel (x - mean) / std, "
                      f"reshaped to input_shape", "output": "outputs",
            "output_is": "probabilities (the spec ends in Softmax)" if checked.analysis.softmax_head else "logits",
            "classes": list(pre.classes), "spec": spec.name}
    for target, data in ((path, program.model_proto.SerializeToString()),
                         (path.with_name(path.name + ".json"), (json.dumps(meta, indent=2) + "\n").encode())):
        try:
            atomic_write(target, lambda f, data=data: f.write(data))
        except OSError as e:
            raise NetspecError(f"cannot write {target}: {e.strerror or e}") from None
    return path


@dataclass(frozen=True)
class FilePrediction:
    """One image file's prediction (`Run.predict_files`, `netspec predict`), or the `error` reading it."""

    file: str
    class_name: str | None = None  # the class's name ("class" in JSON output)
    label: int | None = None  # its index
    probability: float | None = None
    looks_inverted: bool = False  # far from the training images' brightness, and its inverse close
    error: str | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "class": self.class_name, "label": self.label, "probability": self.probability,
                "looks_inverted": self.looks_inverted, "error": self.error}
