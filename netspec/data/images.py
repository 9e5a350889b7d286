"""Image files a trained run classifies (`netspec predict`), read the way the run's data was:
grayscale or RGB, resized to its image size, scaled to 0..1."""
from __future__ import annotations

from pathlib import Path

import torch

from netspec.errors import DataError, NetspecError, first_line
from netspec.spec.datasets import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = (*IMAGE_EXTENSIONS, ".gif")


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
