"""What netspec knows about a dataset before loading it: image shape, classes, sizes.

Named datasets (torchvision's small classification sets) are one table row
each. A user's own data (`imagefolder`, `npz`) is described by looking at the
files without decoding an image: folder names, npz array headers and labels.
The checker compares the spec with these facts (input size, output classes,
validation size), so a mistake is reported at its line before any training.
"""
from __future__ import annotations

import math
import os
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where an npz is read
    import numpy as np


DIGITS = tuple(string.digits)
_MERGED = set("cijklmopsuvwxyz")  # EMNIST bymerge/balanced fold these lowercase letters into uppercase


@dataclass(frozen=True)
class Named:
    """One dataset torchvision downloads and netspec knows by name."""

    title: str
    image_shape: tuple[int, int, int]  # (C, H, W) as netspec stores it
    classes: tuple[str, ...]
    train: int  # training images (validation is held out of these)
    test: int
    needs: str = ""  # anything beyond torchvision (shown by `netspec data` and in errors)


def _emnist(split: str, classes, train: int, test: int) -> Named:
    return Named(f"EMNIST {split}", (1, 28, 28), tuple(classes), train, test)


NAMED: dict[str, Named] = {
    "mnist": Named("MNIST", (1, 28, 28), DIGITS, 60000, 10000),
    "fashion-mnist": Named("Fashion-MNIST", (1, 28, 28), (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        60000, 10000),
    "kmnist": Named("Kuzushiji-MNIST", (1, 28, 28), ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
                    60000, 10000),
    "emnist-balanced": _emnist("balanced", sorted(set(string.digits + string.ascii_letters) - _MERGED), 112800, 18800),
    "emnist-byclass": _emnist("byclass", sorted(string.digits + string.ascii_letters), 697932, 116323),
    "emnist-bymerge": _emnist("bymerge", sorted(set(string.digits + string.ascii_letters) - _MERGED), 697932, 116323),
    "emnist-letters": _emnist("letters", string.ascii_lowercase, 124800, 20800),
    "emnist-digits": _emnist("digits", DIGITS, 240000, 40000),
    "emnist-mnist": _emnist("mnist", DIGITS, 60000, 10000),
    "cifar10": Named("CIFAR-10", (3, 32, 32), (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), 50000, 10000),
    "svhn": Named("SVHN", (3, 32, 32), DIGITS, 73257, 26032, needs="scipy, to read its .mat files: pip install 'netspec[svhn]'"),
}
FILES = ("imagefolder", "npz")  # the user's own data, at data.path
DATASETS = (*NAMED, *FILES, "none")  # none: shapes only, nothing to train
DEFAULT_VALIDATION = 5000  # named datasets; the user's own data holds out 10%
DEFAULT_FILE_VALIDATION = 0.1
DEFAULT_TEST = 0.2  # a single folder or array without its own test split
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


@dataclass(frozen=True)
class Facts:
    """A dataset as the checker and the data layer see it."""

    image_shape: tuple[int, int, int]  # (C, H, W) of one stored image
    classes: tuple[str, ...]
    train: int | None  # images in the training split (before validation is held out); None: not counted
    test: int | None
    layout: str = ""  # imagefolder: "split" (train/ and test/) or "single"; npz: the array keys used
    pixels: str = ""  # npz: how the images are stored, NHW, NHWC or NCHW

    @property
    def holds_out_test(self) -> bool:
        """A single folder, or an npz of images and labels: the test set is held out of it (data.test)."""
        return self.layout in ("single", "images,labels")


def test_count(data, total: int) -> int:
    """Images held out as the test set of a single folder or array: data.test, or 20%."""
    return count(data.test if data.test is not None else DEFAULT_TEST, total)


class FactsError(Exception):
    """A spec's data section does not match the data: `path` is where, `hint` what to do."""

    def __init__(self, path: tuple, message: str, hint: str = ""):
        super().__init__(message)
        self.path, self.message, self.hint = path, message, hint


def count(value: int | float | None, total: int) -> int:
    """A count given as images (int) or as a share of `total` (0 < float < 1)."""
    if value is None:
        return 0
    if isinstance(value, float) and 0 < value < 1:
        return int(math.floor(value * total))
    return int(value)


def dataset_facts(data) -> Facts:
    """Facts for a DataSpec (its path already absolute). FactsError when the data is unusable."""
    if data.dataset in NAMED:
        d = NAMED[data.dataset]
        return Facts(d.image_shape, d.classes, d.train, d.test)
    if data.dataset not in FILES:
        raise FactsError(("data", "dataset"), "dataset 'none' has no data")
    try:
        return _folder_facts(data) if data.dataset == "imagefolder" else _npz_facts(data)
    except (OSError, ValueError) as e:  # a name too long, a null byte, a folder we may not read...
        raise FactsError(("data", "path"), f"cannot read {data.path}: {e}") from None


def _need_path(data) -> Path:
    if not data.path:
        raise FactsError(("data", "dataset"), f"dataset {data.dataset} needs data.path",
                         "add data.path: the folder (imagefolder) or .npz file, relative to the spec file")
    return Path(data.path)


def stated_image_shape(data) -> tuple[int, int, int] | None:
    if data.image_shape:
        return tuple(data.image_shape)
    return tuple(data.input_shape) if len(data.input_shape) == 3 else None


# --- image folders --------------------------------------------------------------

def class_folders(root: Path) -> list[str]:
    """Class names: the sub-folders, sorted, as torchvision's ImageFolder finds them, except
    hidden ones (.ipynb_checkpoints, .git), which are never a class."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def folder_roots(path: Path) -> tuple[Path, Path | None]:
    """(training root, test root or None): `train/` and `test/` when both exist, else the folder itself."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        return path / "train", path / "test"
    return path, None


def first_image(root: Path) -> Path | None:
    """The first image file under `root` (sorted), or None; stops there, so a wrong path such as
    / costs a look, not a walk of the disk. Links to folders are not followed."""
    return next(iter(_image_files(root)), None)


MAX_FOLDER_DEPTH = 32  # class folders nest a few levels; a deeper tree is a mistake or an attack


def _image_files(root: Path):
    """Image files under `root`, sorted, depth first: regular files (or links to one) with an image
    suffix. Links to folders are never followed (a link to `.` would list every image again, for
    ever), hidden names are skipped, and a FIFO or device named x.png is not an image. The walk is
    iterative and stops at MAX_FOLDER_DEPTH levels (1,100 nested folders had overflowed Python's
    stack)."""
    def listing(folder):
        try:
            return iter(sorted(os.scandir(folder), key=lambda e: e.name))
        except NotADirectoryError:
            return iter(())

    stack = [listing(root)]  # one sorted listing per open folder: the order of a recursive walk
    while stack:
        e = next(stack[-1], None)
        if e is None:
            stack.pop()
        elif e.name.startswith("."):
            continue
        elif e.is_dir(follow_symlinks=False):
            if len(stack) >= MAX_FOLDER_DEPTH:
                raise FactsError(("data", "path"), f"folders nested deeper than {MAX_FOLDER_DEPTH} levels under "
                                 f"{root} (at {e.path})", "keep images at most a few folders below their class folder")
            stack.append(listing(e.path))
        elif e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file(follow_symlinks=True):
            yield Path(e.path)


class Listing:
    """The image files of a folder dataset, each file once: (path, class index) per split."""

    def __init__(self, classes: tuple[str, ...]):
        self.classes = classes
        self._seen: dict[tuple[int, int], tuple[str, str, Path]] = {}  # (device, inode) -> split, class, path
        self.repeats = 0  # links or hard links to a file already listed in the same class

    def add(self, root: Path, split: str) -> list[tuple[str, int]]:
        samples = []
        for index, c in enumerate(self.classes):
            for f in _image_files(root / c):
                st = f.stat()  # the file itself, through a link
                key = (st.st_dev, st.st_ino)
                if key in self._seen:
                    where = self._seen[key]
                    if where[:2] == (split, c):
                        self.repeats += 1
                        continue
                    raise FactsError(("data", "path"), f"the same image file is in {where[0]}/{where[1]} "
                                     f"({where[2]}) and in {split}/{c} ({f}), through a link or a copy by hard link",
                                     "an image belongs to one class of one split: remove the link")
                self._seen[key] = (split, c, f)
                samples.append((str(f), index))
        return samples


def list_folder(data) -> tuple[list[tuple[str, int]], list[tuple[str, int]] | None, int]:
    """(training samples, test samples or None, repeats skipped) of an image folder: the one
    listing the data layer trains on. FactsError when a file is reached from two classes or splits."""
    path = Path(data.path)
    train_root, test_root = folder_roots(path)
    listing = Listing(tuple(class_folders(train_root)))
    train = listing.add(train_root, "train" if test_root is not None else path.name)
    test = listing.add(test_root, "test") if test_root is not None else None
    return train, test, listing.repeats


def _folder_facts(data) -> Facts:
    path = _need_path(data)
    where = ("data", "path")
    if not path.is_dir():
        raise FactsError(where, f"{path} is not a folder", "imagefolder reads class sub-folders of image files")
    shape = stated_image_shape(data)
    if shape is None:
        raise FactsError(("data", "input_shape"), f"imagefolder resizes every image to a stated size; "
                         f"input_shape {list(data.input_shape)} does not say the channels, height and width",
                         "add data.image_shape: [channels, height, width] (channels 1 = grayscale, 3 = RGB)")
    if shape[0] not in (1, 3):
        raise FactsError(("data", "image_shape"), f"{shape[0]} channels: image files are read as grayscale (1) or RGB (3)")
    train_root, test_root = folder_roots(path)
    classes = class_folders(train_root)
    if len(classes) < 2:
        raise FactsError(where, f"{train_root} has {len(classes)} class sub-folder(s); a classifier needs at least 2",
                         "put each class's images in its own sub-folder: PATH/cat/1.png, PATH/dog/2.png "
                         "(optionally under PATH/train/ and PATH/test/)")
    for c in classes:  # the first empty class folder is the error (the folder may be a wrong path)
        if first_image(train_root / c) is None:
            raise FactsError(where, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in class folder {c} of {train_root}",
                             "every sub-folder is a class; move other folders out, or hide them (a name starting with .)")
    if test_root is not None:
        test_classes = class_folders(test_root)
        if test_classes != classes:
            raise FactsError(where, f"{test_root} has classes {test_classes}, but {train_root} has {classes}",
                             "both splits need the same class sub-folders")
        if first_image(test_root) is None:
            raise FactsError(where, f"{test_root} holds no image files: a test split of 0 images",
                             "put test images in its class sub-folders, or remove train/ and test/ to hold out data.test")
    # image counts are the data layer's (torchvision lists the files); the check needs none
    return Facts(shape, tuple(classes), None, None, "split" if test_root is not None else "single")


# --- npz arrays -----------------------------------------------------------------

NPZ_KEYS = (("x_train", "y_train", "x_test", "y_test"), ("images", "labels", None, None))
NPZ_LAYOUTS = ("NHW", "NHWC", "NCHW")
MAX_CLASSES = 100_000  # the schema's limit on data.classes
CHUNK_BYTES = 64 << 20  # an npz array is read (decompressed) this much at a time


def npz_image_shape(shape: tuple[int, ...], layout: str | None = None) -> tuple[tuple[int, int, int], str] | None:
    """(C, H, W) and the array's layout ("NHW", "NHWC" or "NCHW") from an image array's shape, as
    stated (`layout`) or as the only reading that fits; None when no reading fits. NpzLayoutError
    when both channels-last and channels-first fit, such as (N, 3, 8, 3)."""
    fits = []
    if len(shape) == 3:
        fits.append(((1, shape[1], shape[2]), "NHW"))
    if len(shape) == 4 and shape[3] in (1, 3):
        fits.append(((shape[3], shape[1], shape[2]), "NHWC"))
    if len(shape) == 4 and shape[1] in (1, 3):
        fits.append(((shape[1], shape[2], shape[3]), "NCHW"))
    if layout is not None:
        return next((f for f in fits if f[1] == layout), None)
    if len(fits) > 1:
        raise NpzLayoutError(shape)
    return fits[0] if fits else None


class NpzLayoutError(ValueError):
    def __init__(self, shape):
        super().__init__(f"images of shape {list(shape)} read as channels-last (N, H, W, C) and as channels-first "
                         "(N, C, H, W)")


@dataclass(frozen=True)
class Member:
    """One array of an npz archive, known from its header and the archive's directory alone."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes of the .npy header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def npz_member(archive: zipfile.ZipFile, key: str) -> Member:
    """An array's header, checked against the size the archive declares for it before anything is
    decompressed: a header that claims 10^12 images, or a member whose declared size differs from
    what its header says (a zip bomb, a cut file), is a ValueError, as is an array of objects
    (pickles are never loaded)."""
    import numpy as np  # only for npz archives: checking other specs never loads it

    info = archive.getinfo(key + ".npy")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{key} is an array of Python objects ({dtype}); netspec reads numbers only, "
                         "and never unpickles")
    m = Member(key, tuple(shape), dtype, fortran, offset)
    if info.file_size != offset + m.nbytes:
        raise ValueError(f"{key}'s header says {list(shape)} {dtype} ({m.nbytes:,} bytes) but the archive holds "
                         f"{max(info.file_size - offset, 0):,} bytes for it: a damaged or forged archive")
    return m


def npz_chunks(archive: zipfile.ZipFile, m: Member, rows: int | None = None):
    """The array `m` as consecutive blocks of rows (first axis), each at most about CHUNK_BYTES
    (or `rows` rows): reading never decompresses more than the block it returns."""
    import numpy as np  # only for npz archives: checking other specs never loads it

    if m.fortran and len(m.shape) > 1:
        raise ValueError(f"{m.key} is stored in Fortran order; save it with numpy.savez after numpy.ascontiguousarray")
    row = m.nbytes // m.shape[0] if m.shape and m.shape[0] else 0
    step = rows or max(1, CHUNK_BYTES // max(row, 1))
    with archive.open(m.key + ".npy") as f:
        f.read(m.offset)
        for start in range(0, m.shape[0] if m.shape else 0, step):
            n = min(step, m.shape[0] - start)
            yield np.frombuffer(f.read(n * row), dtype=m.dtype).reshape(n, *m.shape[1:])


def npz_keys(path: Path) -> tuple[str, str, str | None, str | None]:
    with zipfile.ZipFile(path) as archive:
        names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
    for keys in NPZ_KEYS:
        if {k for k in keys if k} <= names:
            return keys
    raise FactsError(("data", "path"), f"{path} holds arrays {sorted(names)}; netspec reads x_train, y_train, x_test, "
                                       "y_test (Keras's layout) or images and labels",
                     "save with numpy.savez(path, images=..., labels=...), images uint8 (N, H, W) or (N, H, W, C)")


def memory_bytes() -> int:
    """This machine's physical memory (a cap for what one input may make netspec hold)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _images_problem(archive, m: Member) -> str | None:
    """What is wrong with an image array's pixels, read a block at a time: a type netspec does not
    read, floats outside 0..1, NaN or infinite values (which would become 0 without a word)."""
    import numpy as np  # only for npz archives: checking other specs never loads it

    if m.dtype == np.uint8:
        return None
    if not np.issubdtype(m.dtype, np.floating):
        return f"{m.key} is {m.dtype}: netspec reads uint8 images (0..255) or floats in 0..1"
    bad, low, high = 0, math.inf, -math.inf
    for block in npz_chunks(archive, m):
        finite = np.isfinite(block)
        bad += int(block.size - np.count_nonzero(finite))
        if finite.any():
            low, high = min(low, float(block[finite].min())), max(high, float(block[finite].max()))
    if bad:
        return f"{m.key} holds {bad:,} NaN or infinite pixel values"
    if low < 0 or high > 1:
        return f"{m.key} is {m.dtype} with values in {low:g}..{high:g}: netspec reads floats in 0..1 (or uint8 0..255)"
    return None


def _label_range(archive, m: Member, images: int) -> tuple[int, int] | None:
    """(smallest, largest) label, read a block at a time (never the whole array); None if empty."""
    import numpy as np  # only for npz archives: checking other specs never loads it

    if len(m.shape) != 1 or m.shape[0] != images or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{m.key} must be one integer label per image ({images:,} images); it has shape "
                         f"{list(m.shape)} and dtype {m.dtype}")
    ends = [(int(b.min()), int(b.max())) for b in npz_chunks(archive, m) if len(b)]
    return (min(lo for lo, _ in ends), max(hi for _, hi in ends)) if ends else None


def _npz_facts(data) -> Facts:
    path = _need_path(data)
    where = ("data", "path")
    if not path.is_file():
        raise FactsError(where, f"{path} is not a file", "npz reads a numpy .npz archive")
    layout = getattr(data, "layout", None)
    try:
        keys = npz_keys(path)
        with zipfile.ZipFile(path) as archive:
            x_key = keys[0]
            members = {k: npz_member(archive, k) for k in keys if k}
            found = npz_image_shape(members[x_key].shape, layout)
            if found is None:
                raise FactsError(where if layout is None else ("data", "layout"),
                                 f"{x_key} has shape {list(members[x_key].shape)}; images are (N, H, W), (N, H, W, C) "
                                 "or (N, C, H, W) with 1 or 3 channels" + (f", and not {layout}" if layout else ""))
            total = sum(members[k].nbytes for k in keys[0::2] if k)
            if total > memory_bytes() // 2:
                raise FactsError(where, f"the images take {total / 2**30:,.1f} GiB unpacked, more than half of this "
                                        f"machine's {memory_bytes() / 2**30:,.1f} GiB of memory")
            labels = {}
            for xk, yk in zip(keys[0::2], keys[1::2]):
                if not xk:
                    continue
                if xk != x_key and npz_image_shape(members[xk].shape, found[1]) != found:
                    raise FactsError(where, f"{xk} has shape {list(members[xk].shape)}, {x_key} "
                                            f"{list(members[x_key].shape)}: both splits need the same image size")
                problem = _images_problem(archive, members[xk])
                if problem:
                    raise FactsError(where, problem)
                labels[yk] = span = _label_range(archive, members[yk], members[xk].shape[0])
                if span and span[0] < 0:
                    raise FactsError(where, f"{yk} has a negative label ({span[0]}); labels are 0, 1, ... classes-1")
            names = _class_names(archive) if "classes.npy" in archive.namelist() else None
    except NpzLayoutError as e:
        raise FactsError(("data", "dataset"), f"{e}: netspec cannot tell which", "state data.layout: NHWC or NCHW") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        raise FactsError(where, f"cannot read {path} as a numpy .npz archive: {e}") from None
    shape = found[0]
    classes = _npz_classes(names, labels, where)
    stated = stated_image_shape(data)
    if data.image_shape and stated != shape:
        raise FactsError(("data", "image_shape"), f"{list(stated)} but the images in {path.name} are {list(shape)}")
    train = members[x_key].shape[0]
    if keys[2]:
        test = members[keys[2]].shape[0]
    else:
        test = test_count(data, train)
        train -= test
    if test < 1:
        raise FactsError(("data", "test") if not keys[2] else where,
                         f"a test split of {test} images ({keys[2] or 'data.test of ' + str(train) + ' images'})",
                         "hold out at least one image for testing")
    return Facts(shape, classes, train, test, ",".join(k for k in keys if k), found[1])


def _npz_classes(names: tuple[str, ...] | None, labels: dict, where) -> tuple[str, ...]:
    """The classes: the archive's own names (classes.npy), or 0..the largest label."""
    top = max((span[1] for span in labels.values() if span), default=-1) + 1
    if names is not None:
        classes = names
        if top > len(classes):
            raise FactsError(where, f"labels go up to {top - 1} but the archive names {len(classes)} classes")
    elif top > MAX_CLASSES:
        raise FactsError(where, f"labels go up to {top - 1:,}: netspec trains at most {MAX_CLASSES:,} classes",
                         "labels are 0, 1, ... classes-1; renumber them")
    else:
        classes = tuple(str(i) for i in range(top))
    if len(classes) < 2:
        raise FactsError(where, f"the labels name {len(classes)} class; a classifier needs at least 2")
    return classes


def _class_names(archive) -> tuple[str, ...]:
    m = npz_member(archive, "classes")
    if len(m.shape) != 1 or m.dtype.kind not in "US" or m.shape[0] > MAX_CLASSES:
        raise ValueError(f"classes must be up to {MAX_CLASSES:,} names (an array of text); it is "
                         f"{list(m.shape)} {m.dtype}")
    return tuple(c.decode(errors="replace") if isinstance(c, bytes) else str(c)
                 for block in npz_chunks(archive, m) for c in block.tolist())
