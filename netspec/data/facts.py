"""The facts of a dataset (problem 2(a) asks for MNIST's), computed from the data itself."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from netspec.data.datasets import load_all, load_source
from netspec.data.splits import pixel_stats, split_indices, worker_count
from netspec.errors import DataError
from netspec.spec.config import DataSpec
from netspec.spec.datasets import (DEFAULT_FILE_VALIDATION, FILES, NAMED, FactsError, class_folders, dataset_facts,
                                   first_image, folder_roots)


def data_spec_for(what: str, image_shape: tuple[int, int, int] | None = None,
                  validation: int | float | None = None) -> DataSpec:
    """A data section for a dataset name, an image folder or an .npz file (`netspec data WHAT`)."""
    path = Path(what).expanduser()
    if what in NAMED:
        d = DataSpec(dataset=what)
    elif path.is_dir():
        d = DataSpec(dataset="imagefolder", path=str(path.resolve()), image_shape=image_shape or _first_image_shape(path))
    elif path.suffix == ".npz" and path.is_file():
        d = DataSpec(dataset="npz", path=str(path.resolve()))
    else:
        raise DataError(f"'{what}' is not a dataset netspec knows ({', '.join(NAMED)}), a folder or an .npz file")
    if d.dataset in FILES:
        d = replace(d, validation=DEFAULT_FILE_VALIDATION)
    if validation is not None:
        d = replace(d, validation=validation)
    try:
        facts = dataset_facts(d)
    except FactsError as e:
        raise DataError(f"{what}: {e.message}" + (f" ({e.hint})" if e.hint else "")) from None
    return replace(d, image_shape=facts.image_shape, input_shape=facts.image_shape, classes=len(facts.classes))


def _first_image_shape(folder: Path) -> tuple[int, int, int]:
    """(channels, height, width) of the folder's first image: the default size for `netspec data`."""
    from PIL import Image

    train_root, _ = folder_roots(folder)
    for c in class_folders(train_root):
        f = first_image(train_root / c)
        if f is not None:
            with Image.open(f) as img:
                return (1 if img.mode in ("1", "L", "I", "I;16", "F") else 3, img.height, img.width)
    raise DataError(f"{folder} holds no class sub-folder with image files")


def dataset_facts_table(data: DataSpec, data_dir=None):
    """(facts and class counts, the source, the first 32 training images as ArrayImages)."""
    source = load_source(data, data_dir)
    workers = worker_count(data.workers, source.train)
    train = load_all(source.train, workers)
    test = load_all(source.test, workers)
    n = len(train)
    val_idx, train_idx = split_indices(n, data.validation, seed=0, what="--validation")
    validation = len(val_idx)
    mean, std = pixel_stats(train, train_idx)
    c, h, w = source.facts.image_shape
    lo, hi = int(train.images.min()), int(train.images.max())
    kind = "grayscale" if c == 1 else "RGB"
    title = NAMED[data.dataset].title if data.dataset in NAMED else f"{data.dataset} {data.path}"
    facts = [
        ("image size", f"{h} x {w} pixels, {c} channel{'s' if c > 1 else ''} ({kind}); tensor shape ({c}, {h}, {w})"
         + ("; every file is converted and resized to this (--image-shape; data.image_shape in a spec)"
            if data.dataset == "imagefolder" else "")),
        ("pixel value", "brightness of the pixel: 0 is dark, 255 is full intensity"
                        + ("" if c == 1 else ", per colour channel (red, green, blue)")),
        ("value range", f"{lo}..{hi} as stored (uint8); {lo / 255:.2f}..{hi / 255:.2f} after scaling to 0..1"),
        ("mean / std", " | ".join(f"{m:.4f} / {s:.4f}" for m, s in zip(mean, std))
         + " (per channel, training split, scaled to 0..1); netspec normalises with these"),
        ("training + validation", f"{n:,} images"),
        ("training / validation", f"{n - validation:,} / {validation:,} (seeded split; data.validation in a spec)"),
        ("test", f"{len(test):,} images" + (" (held out of the same folder or array: data.test)"
                                            if source.facts.holds_out_test else "")),
        ("classes", f"{len(source.classes)}: " + ", ".join(source.classes[:20]) + (", ..." if len(source.classes) > 20 else "")),
        ("in a spec", f"data: {{dataset: {data.dataset}" + (f", path: {data.path}" if data.path else "")
         + (f", image_shape: [{c}, {h}, {w}]" if data.dataset == "imagefolder" else "")
         + f"}}, input_shape [{c}, {h}, {w}] or [{c * h * w}]"),
    ]
    if data.dataset in NAMED and NAMED[data.dataset].needs:
        facts.append(("needs", NAMED[data.dataset].needs))
    k = len(source.classes)
    train_counts = torch.bincount(train.labels, minlength=k).tolist()
    test_counts = torch.bincount(test.labels, minlength=k).tolist()
    table = {"title": title, "facts": facts, "class_counts": list(zip(source.classes, train_counts, test_counts))}
    return table, source, train.subset(torch.arange(min(32, n)))
