"""The dataset facts problem 2(a) asks for, computed from the data itself."""
from __future__ import annotations

import torch

from netspec.data.datasets import DATASETS, load_raw
from netspec.errors import DataError


def dataset_facts(name: str, data_dir=None, validation: int = 5000):
    raw = load_raw(name, data_dir)
    info = DATASETS[name]
    n_train, h, w = raw.train_images.shape
    if not 0 <= validation < n_train:
        raise DataError(f"--validation {validation:,}: hold out at least 0 and fewer than the {n_train:,} training images")
    lo, hi = int(raw.train_images.min()), int(raw.train_images.max())
    scaled = raw.train_images.float() / 255
    facts = [
        ("image size", f"{h} x {w} pixels, 1 channel (grayscale); tensor shape (1, {h}, {w})"),
        ("pixel value", "brightness of the pixel: 0 is background (black), 255 is full ink (white)"),
        ("value range", f"{lo}..{hi} as stored (uint8); {lo / 255:.0f}..{hi / 255:.0f} after ToTensor-style scaling"),
        ("mean / std", f"{scaled.mean():.4f} / {scaled.std():.4f} (training set, scaled to 0..1); netspec normalises with these"),
        ("training + validation", f"{n_train:,} images"),
        ("training / validation", f"{n_train - validation:,} / {validation:,} (seeded split; data.validation in a spec)"),
        ("test", f"{len(raw.test_labels):,} images"),
        ("classes", f"{len(info.classes)}: " + ", ".join(info.classes)),
    ]
    train_counts = torch.bincount(raw.train_labels, minlength=len(info.classes)).tolist()
    test_counts = torch.bincount(raw.test_labels, minlength=len(info.classes)).tolist()
    return {"facts": facts, "class_counts": list(zip(info.classes, train_counts, test_counts))}, raw, info
