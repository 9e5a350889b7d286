"""Real MNIST through every source: torchvision's files, an npz, and a folder of PNGs.

    python benchmarks/own_data.py [--data-dir ../shared/data] [--epochs 2] [--limit 20000]

Writes real MNIST (60,000 + 10,000 images) as `mnist.npz` (Keras's layout) and as
a folder of PNG files (`train/<digit>/*.png`, `test/<digit>/*.png`), then trains
the shipped `cnn-small` layers (its rules dropped, so epochs and batch can be
chosen) on each source: the npz must give exactly the named set's numbers (same
arrays, same order); the folder lists its files class by class, so its seeded
validation split and its batches differ, and only the accuracy level compares.
Prints a table: preparation and training time, loading path, test accuracy.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from rich.console import Console
from rich.table import Table

import netspec
from netspec.data.datasets import load_source
from netspec.spec.config import DataSpec

ROOT = Path(__file__).resolve().parents[1]


def write_sources(data_dir: str, where: Path) -> tuple[Path, Path, float]:
    source = load_source(DataSpec(dataset="mnist"), data_dir, download=False)
    npz = where / "mnist.npz"
    np.savez(npz, x_train=source.train.images[:, 0].numpy(), y_train=source.train.labels.numpy(),
             x_test=source.test.images[:, 0].numpy(), y_test=source.test.labels.numpy())
    folder = where / "mnist-png"
    start = time.perf_counter()
    for split, images in (("train", source.train), ("test", source.test)):
        for i, (image, label) in enumerate(zip(images.images[:, 0].numpy(), images.labels.tolist())):
            d = folder / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "L").save(d / f"{i:05d}.png")
    return npz, folder, time.perf_counter() - start


def spec_for(data: dict, epochs: int) -> dict:
    spec = yaml.safe_load((ROOT / "specs" / "cnn-small.yaml").read_text())
    spec.pop("rules", None)
    spec["name"] = "cnn-small-" + data["dataset"]
    spec["data"] = {"validation": 5000, **data}
    spec["train"] = {**spec["train"], "epochs": epochs}
    return spec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000, help="training images per epoch")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz, folder, written = write_sources(args.data_dir, tmp)
        Console().print(f"wrote 70,000 PNG files in {written:.0f} s")
        cases = [
            ("mnist (torchvision's files)", {"dataset": "mnist"}),
            ("npz (the same arrays)", {"dataset": "npz", "path": str(npz)}),
            ("imagefolder, memory", {"dataset": "imagefolder", "path": str(folder), "input_shape": [1, 28, 28]}),
            ("imagefolder, stream", {"dataset": "imagefolder", "path": str(folder), "input_shape": [1, 28, 28],
                                     "loading": "stream"}),
        ]
        for name, data in cases:
            spec = netspec.load(spec_for(data, args.epochs))
            start = time.perf_counter()
            run = netspec.train(spec, data_dir=args.data_dir, out=tmp / spec.config.name / name.split()[-1],
                                limit=args.limit, progress=False)
            wall = time.perf_counter() - start
            m = run.metrics.to_dict()
            rows.append((name, m["loading"], f"{wall - m['train_seconds']:.1f}", f"{m['train_seconds']:.1f}",
                         f"{m['best_val_accuracy']:.4f}", f"{m['test_accuracy']:.4f}", f"{run.preprocessing['mean'][0]:.6f}"))
    table = Table(title=f"cnn-small, {args.epochs} epochs on {args.limit:,} training images, real MNIST from each source")
    for col in ("source", "loading", "other s", "train s", "best val acc", "test acc", "mean"):
        table.add_column(col, justify="left" if col in ("source", "loading") else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
