"""Memory against streaming: seconds per training epoch on each data path.

    python benchmarks/loading.py [--data-dir ../shared/data] [--limit 10000] [--repeats 3]

Two datasets: real MNIST (torchvision's files, whole uint8 arrays in memory
either way; streaming batches them through a DataLoader) and an image folder
of PNG files written here (streaming decodes every file every epoch, in worker
processes). The same small CNN trains one epoch on each path, interleaved,
median of the repeats; preparation (reading, decoding, statistics) is timed
apart; each case runs in a fresh process, so its peak resident memory is its
own. Both paths give the same numbers (tests/test_datasets.py); this says what
streaming costs and what it saves.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from netspec.check.checker import check_document
from netspec.builder.model import build_model
from netspec.data.datasets import load_source
from netspec.data.splits import prepare
from netspec.runner.trainer import Trainer
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
    trainer.train_epoch(1)
    return prepared, time.perf_counter() - start


def cases(args, folder: Path) -> list[tuple[str, str, str, int | None]]:
    """(data, path, data section, training images per epoch or None for the folder)."""
    pngs = f"{args.pngs} PNGs 32x32 RGB"
    folder_data = f"{{dataset: imagefolder, path: {folder}, input_shape: [3, 32, 32], validation: 500, test: 500, %s}}"
    return [
        ("MNIST", "memory", "{dataset: mnist, validation: 1000, loading: memory}", args.limit),
        ("MNIST", "stream, 2 workers", "{dataset: mnist, validation: 1000, loading: stream, workers: 2}", args.limit),
        ("MNIST", "stream, 0 workers", "{dataset: mnist, validation: 1000, loading: stream, workers: 0}", args.limit),
        (pngs, "memory", folder_data % "loading: memory", None),
        *[(pngs, f"stream, {w} workers", folder_data % f"loading: stream, workers: {w}", None) for w in (2, 1, 0)],
    ]


def one(args) -> None:
    """Run one case in this (fresh) process and print its figures as JSON: the peak resident
    memory of a process is only its own when the process does nothing else. Case -1 is the
    baseline: torch and netspec imported, the model built, no data."""
    if args.one == -1:
        build_model(checked_for("{dataset: mnist}", 10, ROOT).spec)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"prepare": 0.0, "epoch": 0.0, "peak_mib": peak}))
        return
    _, _, data, limit = cases(args, Path(args.folder))[args.one]
    prepared, epoch = epoch_seconds(checked_for(data, 10, ROOT), args.data_dir, limit)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"prepare": prepared, "epoch": epoch, "peak_mib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("NETSPEC_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--limit", type=int, default=10000, help="MNIST training images per epoch")
    p.add_argument("--pngs", type=int, default=6000, help="PNG files in the image folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        return one(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        write_pngs(folder, args.pngs)
        todo = cases(args, folder)
        results: dict[int, list[dict]] = {i: [] for i in range(-1, len(todo))}
        for _ in range(args.repeats):  # interleaved: every case once per round, each in its own process
            for i in range(-1, len(todo)):
                done = subprocess.run([sys.executable, __file__, "--one", str(i), "--folder", str(folder),
                                       "--data-dir", args.data_dir, "--limit", str(args.limit), "--pngs", str(args.pngs)],
                                      capture_output=True, text=True, check=True)
                results[i].append(json.loads(done.stdout.strip().splitlines()[-1]))
    table = Table(title=f"one training epoch, memory against streaming (median of {args.repeats}, "
                        f"{torch.get_num_threads()} threads; each case in a fresh process)")
    for col in ("data", "path", "images / epoch", "prepare s", "epoch s", "images / s", "peak MiB"):
        table.add_column(col, justify="right" if col not in ("data", "path") else "left")
    for i, (name, path, _, limit) in enumerate(todo):
        med = {k: statistics.median(r[k] for r in results[i]) for k in ("prepare", "epoch", "peak_mib")}
        n = limit or (args.pngs - 1000)
        table.add_row(name, path, f"{n:,}", f"{med['prepare']:.2f}", f"{med['epoch']:.2f}", f"{n / med['epoch']:,.0f}",
                      f"{med['peak_mib']:,.0f}")
    base = statistics.median(r["peak_mib"] for r in results[-1])
    table.add_row("(none)", "baseline: imports and model only", "", "", "", "", f"{base:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
