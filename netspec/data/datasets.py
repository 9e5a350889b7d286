"""MNIST and Fashion-MNIST as whole tensors on the training device.

torchvision reads (and, on a user's machine, downloads) the files; we take
its uint8 tensors directly, normalise once and keep everything on the device,
so a batch is one `index_select` instead of 32 PIL conversions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from netspec.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    title: str
    loader: type  # torchvision dataset class
    mean: float  # training-set pixel mean after scaling to [0, 1]
    std: float
    classes: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", datasets.MNIST, 0.1307, 0.3081, tuple(str(i) for i in range(10))),
    "fashion-mnist": DatasetInfo(
        "Fashion-MNIST", datasets.FashionMNIST, 0.2860, 0.3530,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}


def default_data_dir() -> Path:
    env = os.environ.get("NETSPEC_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "netspec"


@dataclass(frozen=True)
class RawData:
    """uint8 images (N, 28, 28) and int64 labels, as stored."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_raw(name: str, data_dir: str | Path | None = None, download: bool = True) -> RawData:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    info = DATASETS[name]
    root = Path(data_dir) if data_dir else default_data_dir()
    try:
        train, test = (info.loader(str(root), train=t, download=False) for t in (True, False))
    except RuntimeError:
        if not download:
            raise DataError(_missing(info, root)) from None
        try:
            root.mkdir(parents=True, exist_ok=True)
            train, test = (info.loader(str(root), train=t, download=True) for t in (True, False))
        except Exception as e:  # network errors come in many types; all mean the same here
            raise DataError(f"{_missing(info, root)}\n  download failed: {e}") from None
    return RawData(train.data, train.targets, test.data, test.targets)


def _missing(info: DatasetInfo, root: Path) -> str:
    return (f"{info.title} is not in {root} (looked for {root / info.loader.__name__ / 'raw'}). "
            f"Point --data-dir or NETSPEC_DATA_DIR at a folder that holds {info.loader.__name__}/raw/, "
            f"or go online once so torchvision can download it there.")


@dataclass
class Split:
    x: torch.Tensor  # (N, *input_shape) float32, normalised, on the device
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    mean: float
    std: float
    image_shape: tuple[int, int, int] = (1, 28, 28)  # the stored image, whatever input_shape reshapes it to
    train_available: int = 0  # training images after the validation split, before any --limit


def prepare(raw: RawData, *, name: str, input_shape: tuple[int, ...], validation: int, seed: int,
            device: torch.device | str = "cpu", limit: int | None = None) -> Data:
    """Normalise once, split train/validation with a seeded permutation, move to `device`.

    `limit` keeps only the first `limit` training images (after the validation split):
    a quicker, smaller training set; validation and test sets stay whole, so
    their accuracies are measured on the same images as a full run's.
    """
    info = DATASETS[name]
    n = len(raw.train_labels)
    if not 0 <= validation < n:
        raise DataError(f"validation {validation:,} must be at least 0 and below the {n:,} training images")
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit}: give a number of training images of at least 1")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:validation], order[validation:]
    test_x, test_y = raw.test_images, raw.test_labels
    available = len(train_idx)
    if limit is not None:
        train_idx = train_idx[:limit]

    def to_split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        x = (images.to(device=device, dtype=torch.float32) / 255.0 - info.mean) / info.std
        return Split(x.reshape(len(images), *input_shape), labels.to(device))

    return Data(
        name=name,
        train=to_split(raw.train_images[train_idx], raw.train_labels[train_idx]),
        val=to_split(raw.train_images[val_idx], raw.train_labels[val_idx]),
        test=to_split(test_x, test_y),
        input_shape=tuple(input_shape), mean=info.mean, std=info.std,
        image_shape=(1, *raw.train_images.shape[1:]), train_available=available,
    )
