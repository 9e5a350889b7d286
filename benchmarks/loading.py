"""Memory against streaming: seconds per training epoch on each data path.

    python benchmarks/loading.py [--data-dir ../shared/data] [--limit 10000] [--repeats 3]

Two datasets: real MNIST (torchvision's files, whole uint8 arrays in memory
either way; streaming batches them through a DataLoader) and an image folder
of PNG files written here (streaming decodes every file every epoch, in worker
processes). The same small CNN trains one epoch on each path, interleaved,
median of the repeats; preparation (reading, decoding, statistics) is timed
apart. Both paths give the same numbers (tests/test_datasets.py); this says
what streaming costs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from netspec.builder.check import check_document
from netspec.builder.model import build_model
from netspec.data.datasets import load_source
from netspec.data.splits import prepare
from netspec.runner.train import Trainer
from netspec.spec.loader import load_text

ROOT = Path(__file__).resolve().parents[1]
SPEC = """name: loading
data: {data}
model:
  layers:
    - Conv2d: {{out_channels: 16, kernel_size: 3, padding: 1}}
    - ReLU
    - MaxPool2d: {{kernel_size: 2}}
    - Conv2d: {{out_channels: 32, kernel_size: 3, padding: 1}}
    - ReLU
    - MaxPool2d: {{kernel_size: 2}}
    - Flatten
    - Linear: {{out_features: {classes}}}
train: {{epochs: 1, batch_size: 64, precision: fp32, channels_last: false, compile: off}}
lint: {{ignore: [small-receptive-field]}}
"""


def write_pngs(folder: Path, n: int, classes: int = 10, size: int = 32) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        k = i % classes
        d = folder / f"class{k}"
        d.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.numpy(), "RGB").save(d / f"{i}.png")


def checked_for(data: str, classes: int, base: Path):
    return check_document(load_text(SPEC.format(data=data, classes=classes), "loading.yaml"), base_dir=base)


def epoch_seconds(checked, data_dir, limit: int) -> tuple[float, float]:
    """(seconds to prepare the data, seconds of one training epoch)."""
    spec = checked.spec
    start = time.perf_counter()
    data = prepare(load_source(spec.data, data_dir, download=False), spec.data, seed=0, limit=limit)
    prepared = time.perf_counter() - start
    torch.manual_seed(0)
    trainer = Trainer(spec, build_model(spec), data, torch.device("cpu"), softmax_head=False)
    start = time.perf_counter()
    trainer._epoch(1)
    return prepared, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--limit", type=int, default=10000, help="MNIST training images per epoch")
    p.add_argument("--pngs", type=int, default=6000, help="PNG files in the image folder")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        write_pngs(folder, args.pngs)
        cases = [
            ("MNIST", "memory", checked_for("{dataset: mnist, validation: 1000, loading: memory}", 10, ROOT), args.data_dir, args.limit),
            ("MNIST", "stream, 2 workers", checked_for("{dataset: mnist, validation: 1000, loading: stream, workers: 2}", 10, ROOT), args.data_dir, args.limit),
            ("MNIST", "stream, 0 workers", checked_for("{dataset: mnist, validation: 1000, loading: stream, workers: 0}", 10, ROOT), args.data_dir, args.limit),
            (f"{args.pngs} PNGs 32x32 RGB", "memory", checked_for(f"{{dataset: imagefolder, path: {folder}, input_shape: [3, 32, 32], validation: 500, test: 500, loading: memory}}", 10, ROOT), None, None),
            *[(f"{args.pngs} PNGs 32x32 RGB", f"stream, {w} workers", checked_for(f"{{dataset: imagefolder, path: {folder}, input_shape: [3, 32, 32], validation: 500, test: 500, loading: stream, workers: {w}}}", 10, ROOT), None, None)
              for w in (2, 1, 0)],
        ]
        times: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(cases))}
        for _ in range(args.repeats):  # interleaved: every case once per round
            for i, (_, _, checked, data_dir, limit) in enumerate(cases):
                times[i].append(epoch_seconds(checked, data_dir, limit))
    table = Table(title=f"one training epoch, memory against streaming (median of {args.repeats}, "
                        f"{torch.get_num_threads()} threads)")
    for col in ("data", "path", "images / epoch", "prepare s", "epoch s", "images / s"):
        table.add_column(col, justify="right" if col not in ("data", "path") else "left")
    for i, (name, path, checked, _, limit) in enumerate(cases):
        prep = statistics.median(t[0] for t in times[i])
        epoch = statistics.median(t[1] for t in times[i])
        n = limit or (args.pngs - 1000)
        table.add_row(name, path, f"{n:,}", f"{prep:.2f}", f"{epoch:.2f}", f"{n / epoch:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
