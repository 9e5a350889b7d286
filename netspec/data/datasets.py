"""Reading a dataset: torchvision's named sets, an image folder, an npz archive.

Every source gives uint8 images (N, C, H, W) and int64 labels per split, read
by torchvision's own dataset classes (which, on a user's machine, download the
named sets). `netspec.data.splits` turns them into what training iterates.
"""
from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms

from netspec.errors import DataError
from netspec.spec.datasets import (NAMED, Facts, FactsError, dataset_facts, list_folder,
                                   npz_chunks, npz_image_shape, npz_keys, npz_member, test_count)

TEST_SPLIT_SEED = 0  # a single folder's test hold-out is the same whatever the training seed


def default_data_dir() -> Path:
    env = os.environ.get("NETSPEC_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "netspec"


# --- images, whole or as files -----------------------------------------------------

class ArrayImages:
    """Images held in memory: uint8 (N, C, H, W)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "ArrayImages":
        return ArrayImages(self.images[idx], self.labels[idx])

    def dataset(self) -> Dataset:
        return TensorDataset(self.images, self.labels)


def read_image(path: str, mode: str, size: tuple[int, int]) -> torch.Tensor:
    """One image file as uint8 (C, H, W): converted to grayscale ("L") or RGB, resized.
    Deeper pixels (16-bit, 32-bit integer, float) are scaled to 8 bits by their range and
    transparency is resolved (`_eight_bit`), never clipped or dropped; a file too large to
    decode (PIL's decompression-bomb limit) is a DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = _eight_bit(img, path).convert(mode)
    except Image.DecompressionBombError:
        raise DataError(f"{path} is larger than netspec decodes ({Image.MAX_IMAGE_PIXELS * 2:,} pixels at most): "
                        "resize it first") from None
    if img.size != (size[1], size[0]):
        img = transforms.functional.resize(img, list(size), antialias=True)
    return transforms.functional.pil_to_tensor(img)


def _eight_bit(img, path: str):
    """An image in an 8-bit mode (L or RGB), its pixels read as the file means them:
    - 16-bit grayscale (I;16...) and 32-bit integers up to 65535 are scaled by 255/65535 (PIL's
      own convert would clip them to black and white);
    - float pixels (F, as TIFF stores them) in 0..1 are scaled by 255, in 0..255 kept;
    - transparency (RGBA, LA, a palette's): where every visible pixel has one colour (a shape
      drawn in one ink, as drawing programs save a digit), the alpha channel is the image (ink
      light on dark, as in MNIST); otherwise the pixels are laid over black if they are light,
      over white if dark, so the picture stays visible rather than its alpha being dropped.
    Anything else (negative or NaN floats, integers beyond 16 bits) is a DataError."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path} has 32-bit integer pixels beyond 0..65535; netspec reads 8- and 16-bit images")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and not np.isfinite(a).all():
            raise DataError(f"{path} has {int((~np.isfinite(a)).sum()):,} NaN or infinite pixels")
        top = a.max() if a.size else 0
        if a.size and a.min() < 0 or top > 255:
            raise DataError(f"{path} has float pixels in {a.min():g}..{top:g}; netspec reads floats in 0..1 (or 0..255)")
        return Image.fromarray(np.rint(a * (255 if top <= 1 else 1)).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA")).astype(np.float64)
        alpha, colour = rgba[..., 3:] / 255, rgba[..., :3]
        visible = alpha[..., 0] > 0
        if not visible.any() or (alpha == 1).all():
            return img.convert("RGB")
        inks = colour[visible]
        if (inks == inks[0]).all():  # one ink: the shape is the alpha channel
            return Image.fromarray(np.rint(alpha[..., 0] * 255).astype(np.uint8), "L")
        light = (inks @ [0.299, 0.587, 0.114]).mean() >= 128
        laid = colour * alpha + (0 if light else 255) * (1 - alpha)
        return Image.fromarray(np.rint(laid).astype(np.uint8), "RGB")
    return img


class FileImages:
    """Images as files, decoded when read (in DataLoader workers): (path, label) pairs."""

    def __init__(self, samples: list[tuple[str, int]], image_shape: tuple[int, int, int]):
        self.samples, self.image_shape = samples, image_shape
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, idx: torch.Tensor) -> "FileImages":
        return FileImages([self.samples[i] for i in idx.tolist()], self.image_shape)

    def dataset(self) -> Dataset:
        c, h, w = self.image_shape
        return _Files(self.samples, functools.partial(read_image, mode="L" if c == 1 else "RGB", size=(h, w)))


class _Files(Dataset):
    def __init__(self, samples, read):
        self.samples, self.read = samples, read

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            return self.read(path), label
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise DataError(f"cannot read image {path}: {e}") from None


def loader_of(dataset: Dataset, workers: int, **kw) -> DataLoader:
    """A DataLoader that leaves torch's global RNG alone: without a generator of its own, each
    pass would draw its workers' base seed from the global one, shifting the dropout masks of
    training (so a streamed run would differ from the same run in memory)."""
    return DataLoader(dataset, num_workers=workers, generator=torch.Generator().manual_seed(0), **kw)


def batches_of(loader: DataLoader):
    """A DataLoader's batches; a DataError raised in a worker process comes back as its own
    message (torch wraps it in the worker's traceback text, which is no use to a user)."""
    try:
        yield from loader
    except DataError as e:
        text = str(e).strip().splitlines()
        raise DataError(text[-1].split("DataError: ", 1)[-1] if text else "a DataLoader worker failed") from None


def load_all(images, workers: int = 0) -> ArrayImages:
    """Decode every image into memory (files are read by `workers` DataLoader processes)."""
    if isinstance(images, ArrayImages):
        return images
    c, h, w = images.image_shape
    out = torch.empty((len(images), c, h, w), dtype=torch.uint8)
    loader = loader_of(images.dataset(), workers, batch_size=256)
    i = 0
    for x, _ in batches_of(loader):
        out[i: i + len(x)] = x
        i += len(x)
    return ArrayImages(out, images.labels)


@dataclass
class Source:
    """A dataset as read: its facts and the training and test images."""

    name: str
    facts: Facts
    train: ArrayImages | FileImages
    test: ArrayImages | FileImages

    @property
    def classes(self) -> tuple[str, ...]:
        return self.facts.classes


# --- the named datasets: torchvision classes, one row each ------------------------------

def _mnist_like(cls, **kw):
    def read(root, train, download):
        ds = cls(root, train=train, download=download, **kw)
        return ds.data.unsqueeze(1), ds.targets
    return read


def _emnist(split: str):
    def read(root, train, download):
        ds = datasets.EMNIST(root, split=split, train=train, download=download)
        images = ds.data.transpose(1, 2).unsqueeze(1)  # EMNIST's files store each image transposed
        labels = ds.targets - 1 if split == "letters" else ds.targets  # letters are labelled 1..26
        return images.contiguous(), labels
    return read


def _cifar10(root, train, download):
    ds = datasets.CIFAR10(root, train=train, download=download)
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)


def _svhn(root, train, download):
    try:
        import scipy.io  # noqa: F401 - torchvision reads SVHN's .mat files with it
    except ImportError:
        raise DataError(f"SVHN needs {NAMED['svhn'].needs.split(',')[0]}: pip install 'netspec[svhn]'") from None
    ds = datasets.SVHN(root, split="train" if train else "test", download=download)
    return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels.astype(np.int64))


READERS = {  # dataset name -> read(root, train, download) -> (uint8 (N, C, H, W), int64 labels)
    "mnist": _mnist_like(datasets.MNIST),
    "fashion-mnist": _mnist_like(datasets.FashionMNIST),
    "kmnist": _mnist_like(datasets.KMNIST),
    **{name: _emnist(name.split("-", 1)[1]) for name in NAMED if name.startswith("emnist-")},
    "cifar10": _cifar10,
    "svhn": _svhn,
}
WHERE = {  # what torchvision looks for under the data folder
    "mnist": "MNIST/raw/", "fashion-mnist": "FashionMNIST/raw/", "kmnist": "KMNIST/raw/",
    **{name: f"EMNIST/raw/emnist-{name.split('-', 1)[1]}-*-ubyte" for name in NAMED if name.startswith("emnist-")},
    "cifar10": "cifar-10-batches-py/", "svhn": "train_32x32.mat and test_32x32.mat",
}
assert READERS.keys() == NAMED.keys() == WHERE.keys()


def _read_named(name: str, root: Path, download: bool, create: bool = True, splits=(True, False)):
    """The named set's splits; downloaded into `root` when allowed, creating the folder only when it
    is the default cache (a given folder that does not exist is a typo, not a place to download to)."""
    read = READERS[name]
    title = NAMED[name].title
    missing = (f"{title} is not in {root}, or its files are incomplete (torchvision looks for {root / WHERE[name]}). "
               "Point --data-dir or NETSPEC_DATA_DIR at a folder that holds it, or go online once so torchvision "
               "can download it there.")
    try:
        return [read(str(root), t, False) for t in splits]
    except RuntimeError:
        if not download:
            raise DataError(missing) from None
    except (ValueError, OSError, KeyError, EOFError) as e:  # present but unreadable
        raise DataError(f"{title} in {root} cannot be read: {type(e).__name__}: {e}") from None
    if not create and not root.is_dir():
        raise DataError(f"the data folder {root} (--data-dir or NETSPEC_DATA_DIR) does not exist; point it at the "
                        "folder that holds the datasets, or create it for torchvision to download into")
    try:
        root.mkdir(parents=True, exist_ok=True)
        return [read(str(root), t, True) for t in splits]
    except DataError:  # ours (SVHN without scipy): already the message
        raise
    except Exception as e:  # noqa: BLE001 - network errors come in many types; all mean the same here
        raise DataError(f"{missing}\n  download failed: {e}") from None


# --- a user's own data ---------------------------------------------------------------

def _held_out_test(images, test: int):
    if test < 1:  # before training, not after it
        raise DataError(f"a test split of {test} images: {len(images)} images hold out none (data.test)")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(TEST_SPLIT_SEED))
    return images.subset(order[test:]), images.subset(order[:test])


def _read_folder(data, facts: Facts):
    """The image files as the check lists them (links to folders not followed, each file once)."""
    try:
        train, test, _ = list_folder(data)
    except FactsError as e:
        raise DataError(f"data.path: {e.message}") from None
    for split, samples in (("training", train), ("test", test)):
        if samples is not None and not samples:
            raise DataError(f"{data.path} has no {split} images")
    everything = FileImages(train, facts.image_shape)
    if test is not None:
        return everything, FileImages(test, facts.image_shape)
    return _held_out_test(everything, test_count(data, len(everything)))


def _npz_images(archive, key: str, layout: str) -> torch.Tensor:
    """An image array as uint8 (N, C, H, W), converted a block at a time (floats in 0..1, which
    the check found finite and in range, scaled by 255), never as one float64 copy."""
    m = npz_member(archive, key)
    (c, h, w), _ = npz_image_shape(m.shape, layout)
    out = np.empty((m.shape[0], c, h, w), np.uint8)
    i = 0
    for block in npz_chunks(archive, m):
        if block.dtype != np.uint8:
            block = np.rint(block.astype(np.float32) * 255).astype(np.uint8)
        if layout == "NHW":
            block = block[:, None]
        elif layout == "NHWC":
            block = block.transpose(0, 3, 1, 2)
        out[i: i + len(block)] = block
        i += len(block)
    return torch.from_numpy(out)


def _npz_labels(archive, key: str) -> torch.Tensor:
    m = npz_member(archive, key)
    return torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *npz_chunks(archive, m)]).astype(np.int64))


def _read_npz(data, facts: Facts):
    path = Path(data.path)
    x_train, y_train, x_test, y_test = npz_keys(path)
    try:
        with zipfile.ZipFile(path) as archive:
            train = ArrayImages(_npz_images(archive, x_train, facts.pixels), _npz_labels(archive, y_train))
            if x_test:
                return train, ArrayImages(_npz_images(archive, x_test, facts.pixels), _npz_labels(archive, y_test))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return _held_out_test(train, test_count(data, len(train)))


def load_source(data, data_dir: str | Path | None = None, download: bool = True) -> Source:
    """Read the dataset a checked spec's data section names (`data.path` absolute)."""
    download = download and not os.environ.get("NETSPEC_NO_DOWNLOAD")  # set in a grader's child process
    try:
        facts = dataset_facts(data)
    except FactsError as e:
        raise DataError(f"data.{'.'.join(map(str, e.path[1:]))}: {e.message}") from None
    if data.dataset in NAMED:
        given = bool(data_dir or os.environ.get("NETSPEC_DATA_DIR"))
        (tr_x, tr_y), (te_x, te_y) = _read_named(data.dataset, Path(data_dir) if data_dir else default_data_dir(),
                                                 download, create=not given)
        train, test = ArrayImages(tr_x, tr_y.long()), ArrayImages(te_x, te_y.long())
    elif data.dataset == "imagefolder":
        train, test = _read_folder(data, facts)
    else:
        train, test = _read_npz(data, facts)
    if data.classes is not None and data.classes != len(facts.classes):
        raise DataError(f"{data.path or data.dataset} now has {len(facts.classes)} classes; the spec says {data.classes}")
    return Source(data.dataset, facts, train, test)


def load_named_test(name: str, data_dir: str | Path | None = None) -> ArrayImages:
    """A named set's test split alone (a grader needs no training images to test a model)."""
    given = bool(data_dir or os.environ.get("NETSPEC_DATA_DIR"))
    (x, y), = _read_named(name, Path(data_dir) if data_dir else default_data_dir(), True, create=not given,
                          splits=(False,))
    return ArrayImages(x, y.long())


def load_test_set(path: str | Path, image_shape: tuple[int, int, int] | None = None) -> ArrayImages:
    """Every image of an npz archive or an image folder as one test set (a grader's hidden data):
    the archive's x_test/y_test or the folder's test/ where it has them, else all of it, never a
    share held out. A folder's images are read at `image_shape` (C, H, W) where given, else at
    the shape and colour of its first image; an archive's images have their own (a stated
    `image_shape` must be it)."""
    from dataclasses import replace

    from netspec.spec.config import DataSpec

    path = Path(path)
    try:
        data = DataSpec(dataset="imagefolder" if path.is_dir() else "npz", path=str(path))
        if data.dataset == "imagefolder" and image_shape is None:
            image_shape = first_image_shape(path)
        if image_shape is not None:  # input_shape too: a spec's default (1, 28, 28) would be read as stated
            data = replace(data, image_shape=tuple(image_shape), input_shape=tuple(image_shape))
        facts = dataset_facts(data)
        if data.dataset == "imagefolder":
            train, test, _ = list_folder(data)
            return load_all(FileImages(test or train, facts.image_shape))
        x_train, y_train, x_test, y_test = npz_keys(path)
        with zipfile.ZipFile(path) as archive:
            x, y = (x_test, y_test) if x_test else (x_train, y_train)
            return ArrayImages(_npz_images(archive, x, facts.pixels), _npz_labels(archive, y))
    except FactsError as e:
        raise DataError(f"the test data {path}: {e.message}") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"cannot read the test data {path}: {e}") from None


GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "F")  # and I;16...: read as one channel; every other mode as RGB


def first_image_shape(folder: Path) -> tuple[int, int, int] | None:
    """(channels, height, width) of an image folder's first image (of its test/ where it has one):
    1 channel for a grayscale mode, 3 for a colour one; None where it has none (the folder's
    facts say what is wrong with it)."""
    from PIL import Image

    from netspec.spec.datasets import class_folders, first_image, folder_roots

    _, test_root = folder_roots(folder)
    root = test_root or folder
    for c in class_folders(root):
        f = first_image(root / c)
        if f is not None:
            try:
                with Image.open(f) as img:
                    gray = img.mode in GRAYSCALE_MODES or img.mode.startswith("I;16")
                    return (1 if gray else 3, img.height, img.width)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise DataError(f"cannot read the test data's first image {f}: {e}") from None
    return None
