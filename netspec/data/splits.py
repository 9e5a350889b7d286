"""Training, validation and test splits, in memory or streamed.

The fast path keeps each split as one normalised float tensor on the training
device, so a batch is one `index_select`. A dataset whose float tensors would
exceed `data.memory_mb` (or `data.loading: stream`) is streamed instead: a
`DataLoader` with worker processes reads uint8 batches in the same order, and
they are normalised on the device the same way, so both paths train alike.

Normalisation statistics are the training split's (never validation or test
images), per channel, unless the spec gives `data.mean` and `data.std`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from netspec.data.datasets import ArrayImages, FileImages, Source, batches_of, load_all, loader_of
from netspec.errors import DataError
from netspec.spec.datasets import count

STATS_CHUNK_BYTES = 64 << 20  # float64 pixels summed at a time (at most; less under a small data.memory_mb)


def worker_count(setting: int | str, images) -> int:
    """DataLoader workers for `images`. auto: none for arrays already in memory (a worker would
    only copy them between processes) and, for image files, none on 2 cores or fewer, else half
    the cores up to 4. Measured on 2 cores (benchmarks/loading.py): no worker was fastest for
    MNIST's arrays (1.36 s an epoch against 2.23 s with 2) and for 32x32 PNGs (1.64 s against 2.03 s)."""
    if setting != "auto":
        return int(setting)
    if isinstance(images, ArrayImages):
        return 0
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 (0..255) or floats already in 0..1 -> float32, per-channel (x - mean) / std."""
    scaled = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return (scaled - mean) / std


def share(batch_size: int, part: tuple[int, int]) -> int:
    """The samples of a full batch that process `part` = (rank, ranks) trains on."""
    rank, ranks = part
    return len(range(rank, batch_size, ranks))


@dataclass
class Split:
    """A split in memory: x (N, *input_shape) float32, normalised, on the device; y (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, order: torch.Tensor | None = None, steps: int | None = None,
                part: tuple[int, int] = (0, 1), chunk: int = 1):
        """(x, y) batches on the device: in `order` (indices) when given, else in sequence. With
        `part` (rank, ranks), every batch_size-batch is dealt out: this process gets its every
        ranks-th sample, the batch size in the spec being the batch of all processes together.
        With `chunk`, up to `chunk` full batches come as one (x, y), gathered in one operation (a
        last partial batch always comes alone): split it by `share(batch_size, part)`."""
        n = len(self) if order is None else len(order)
        steps = math.ceil(n / batch_size) if steps is None else steps
        rank, ranks = part
        full = min(steps, n // batch_size)
        starts = [(s, min(chunk, full - s)) for s in range(0, full, chunk)] + [(s, 1) for s in range(full, steps)]
        for s, k in starts:
            lo, hi = s * batch_size, min((s + k) * batch_size, n)
            if order is None and ranks == 1:
                yield self.x[lo:hi], self.y[lo:hi]
                continue
            idx = (torch.arange(n, device=self.y.device) if order is None else order)[lo:hi]
            if ranks > 1:
                idx = idx[rank::ranks] if k == 1 else idx.view(k, batch_size)[:, rank::ranks].reshape(-1)
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)  # half the time of x[idx] on a CPU

    def example(self, index: int) -> tuple[torch.Tensor, int]:
        """One input (1, *input_shape) on the device, and its label."""
        return self.x[index: index + 1], int(self.y[index])


@dataclass
class StreamSplit:
    """A split read batch by batch by a DataLoader (uint8 batches, normalised on the device)."""

    images: ArrayImages | FileImages
    mean: torch.Tensor  # (C, 1, 1) on the device
    std: torch.Tensor
    input_shape: tuple[int, ...]
    device: torch.device
    workers: int = 2
    y: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.y = self.images.labels.to(self.device)

    def __len__(self) -> int:
        return len(self.images)

    def _loader(self, index_batches: list[list[int]]) -> DataLoader:
        return loader_of(self.images.dataset(), self.workers, batch_sampler=index_batches,
                         pin_memory=self.device.type == "cuda")

    def batches(self, batch_size: int, order: torch.Tensor | None = None, steps: int | None = None,
                part: tuple[int, int] = (0, 1), chunk: int = 1):  # noqa: ARG002 - always one batch at a time
        """As Split.batches, a batch at a time; with `part`, this process's DataLoader reads only its share."""
        idx = torch.arange(len(self)) if order is None else order.cpu()
        steps = math.ceil(len(idx) / batch_size) if steps is None else steps
        rank, ranks = part
        plan = [idx[s * batch_size: (s + 1) * batch_size][rank::ranks].tolist() for s in range(steps)]
        for images, labels in batches_of(self._loader(plan)):
            x = normalise(images.to(self.device, non_blocking=True), self.mean, self.std)
            yield x.reshape(len(labels), *self.input_shape), labels.to(self.device, non_blocking=True)

    def example(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.images.dataset()[index]
        x = normalise(torch.as_tensor(image)[None].to(self.device), self.mean, self.std)
        return x.reshape(1, *self.input_shape), int(label)


@dataclass
class Data:
    name: str
    train: Split | StreamSplit
    val: Split | StreamSplit
    test: Split | StreamSplit
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]  # per channel, of pixels scaled to 0..1
    std: tuple[float, ...]
    image_shape: tuple[int, int, int]  # the stored image, whatever input_shape reshapes it to
    classes: tuple[str, ...]
    train_available: int = 0  # training images after the validation split, before any --limit
    loading: str = "memory"  # memory | stream
    loading_reason: str = ""
    stats_from: str = "training split"  # or "spec"
    workers: int = 0  # DataLoader worker processes used

    def record(self) -> dict:
        """What a run folder keeps (data.json): enough to preprocess new images as in training."""
        return {"dataset": self.name, "classes": list(self.classes), "image_shape": list(self.image_shape),
                "input_shape": list(self.input_shape), "mean": list(self.mean), "std": list(self.std),
                "stats_from": self.stats_from, "loading": self.loading, "loading_reason": self.loading_reason,
                "workers": self.workers,
                "images": {"train": len(self.train), "validation": len(self.val), "test": len(self.test),
                           "train_available": self.train_available}}

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised input back to pixels in 0..1, shaped as the stored image (C, H, W)."""
        c = self.image_shape[0]
        mean, std = torch.tensor(self.mean).view(c, 1, 1), torch.tensor(self.std).view(c, 1, 1)
        return x.detach().float().cpu().reshape(self.image_shape) * std + mean


def pixel_stats(images: ArrayImages | FileImages, idx: torch.Tensor | None = None,
                workers: int = 0, memory_mb: int = 2048) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of pixels scaled to 0..1 (float64 sums), over
    the images at `idx` (all when None), read a chunk at a time (no copy of the split): a chunk's
    float64 pixels take at most STATS_CHUNK_BYTES, and at most an eighth of data.memory_mb."""
    idx = torch.arange(len(images)) if idx is None else idx
    c = images.image_shape[0]
    budget = min(STATS_CHUNK_BYTES, memory_mb * 2**20 // 8)
    rows = max(1, budget // (8 * math.prod(images.image_shape)))
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    n = 0
    if isinstance(images, ArrayImages):
        chunks = (images.images[idx[i: i + rows]] for i in range(0, len(idx), rows))
    else:
        loader = loader_of(images.subset(idx).dataset(), workers, batch_size=min(256, rows))
        chunks = (x for x, _ in batches_of(loader))
    for x in chunks:
        x = x.double().div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square_().sum(dim=(0, 2, 3))
        n += x.numel() // c
    if n == 0:
        raise DataError("no training images to compute normalisation statistics from")
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt()
    if (std == 0).any():
        raise DataError("the training images are constant in some channel (standard deviation 0); "
                        "give data.mean and data.std in the spec")
    return tuple(mean.tolist()), tuple(std.tolist())


def check_limit(limit: int | None) -> None:
    """--limit: a number of training images, at least 1 (checked before any run folder is made)."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit}: give a number of training images of at least 1")


def split_indices(n: int, validation: int | float, *, seed: int, what: str = "validation") -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, training indices) of `n` training images: a seeded permutation, the
    first `validation` images (a count, or a share below 1) held out."""
    held = count(validation, n)
    if not 0 <= held < n:
        raise DataError(f"{what} {held:,}: hold out at least 0 and fewer than the {n:,} training images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:held], order[held:]


def prepare(source: Source, data, *, seed: int, device: torch.device | str = "cpu", limit: int | None = None) -> Data:
    """Split train/validation with a seeded permutation, normalise with the training split's
    statistics, and keep it in memory on `device` or stream it (`data.loading`).

    `limit` keeps only the first `limit` training images (after the validation split):
    a quicker, smaller training set; validation and test sets stay whole, so their
    accuracies are measured on the same images as a full run's. Statistics are those
    of the whole training split, so a limited run preprocesses like a full one.
    """
    device = torch.device(device)
    n = len(source.train)
    check_limit(limit)
    val_idx, train_idx = split_indices(n, data.validation, seed=seed)
    used_idx = train_idx if limit is None else train_idx[:limit]
    c, h, w = source.facts.image_shape
    need = (n + len(source.test)) * c * h * w * 4
    if data.loading == "auto":
        loading = "memory" if need <= data.memory_mb * 2**20 else "stream"
        reason = (f"auto: {need / 2**20:,.0f} MiB of float32 tensors {'fit' if loading == 'memory' else 'exceed'} "
                  f"data.memory_mb {data.memory_mb:,}")
    else:
        loading, reason = data.loading, f"data.loading: {data.loading}"
    workers = worker_count(data.workers, source.train)
    train_images, test_images = source.train, source.test
    if loading == "memory":
        train_images, test_images = load_all(source.train, workers), load_all(source.test, workers)
    if data.mean is not None and data.std is not None:  # the check made sure both have one value per channel
        mean, std, stats_from = tuple(data.mean), tuple(data.std), "spec"
    else:  # the whole training split, before --limit, so a limited run preprocesses like a full one
        mean, std = pixel_stats(train_images, train_idx, workers, data.memory_mb)
        stats_from = "training split"
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(c, 1, 1)
    input_shape = tuple(data.input_shape)

    def split(images, idx=None) -> Split | StreamSplit:
        part = images if idx is None else images.subset(idx)
        if loading == "stream":
            return StreamSplit(part, mean_t, std_t, input_shape, device, workers)
        x = normalise(part.images.to(device), mean_t, std_t)
        return Split(x.reshape(len(part), *input_shape), part.labels.to(device))

    train, val, test = split(train_images, used_idx), split(train_images, val_idx), split(test_images)
    return Data(name=source.name, train=train, val=val, test=test, input_shape=input_shape, mean=mean, std=std,
                image_shape=(c, h, w), train_available=len(train_idx), classes=source.classes, loading=loading,
                loading_reason=reason, stats_from=stats_from, workers=workers)
