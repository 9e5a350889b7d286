"""Training throughput: netspec's runner against a plain PyTorch loop.

Both train the same model (built from the spec) for the same number of steps
at batch size 32, in this one process, on the same device and threads:

  plain    torchvision.datasets.MNIST with transforms.ToTensor() and
           DataLoader(batch_size=32, shuffle=True); Adam; cross-entropy
  netspec  the runner's Trainer: whole dataset as one normalised tensor on
           the device, batches sliced from a seeded permutation, and the
           spec's default speed settings (`auto`: bf16 + channels-last for the
           CNN on a bf16-capable CPU, fp32 for the MLP; see benchmarks/speed.py)

Augmentation is off in both (the plain loop has none). The netspec time
includes its per-epoch validation pass over a small held-out set.

    python benchmarks/throughput.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from netspec.builder.model import build_model
from netspec.data.datasets import load_source
from netspec.data.splits import prepare
from netspec.runner.trainer import Trainer, logits_model
import netspec
from speed import checked_file  # benchmarks/speed.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def plain_loop(checked, data_dir: Path, steps: int, device: torch.device) -> float:
    """Images per second of the textbook loop."""
    torch.manual_seed(0)
    model = build_model(checked.spec, device)
    net = logits_model(model, checked.analysis.softmax_head).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ds = datasets.MNIST(str(data_dir), train=True, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True)
    shape = checked.spec.data.input_shape
    it = iter(loader)

    def step():
        x, y = next(it)
        x, y = x.to(device).reshape(len(y), *shape), y.to(device)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(10):  # warm-up
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * BATCH / (time.perf_counter() - start)


def netspec_loop(checked, data_dir: Path, steps: int, device: torch.device) -> float:
    """Images per second of the runner's epoch loop (one epoch of `steps` steps)."""
    spec = checked.spec
    raw = load_source(spec.data, data_dir, download=False)
    data = prepare(raw, spec.data, seed=0, device=device, limit=steps * BATCH)
    torch.manual_seed(0)
    model = build_model(spec, device)
    trainer = Trainer(spec, model, data, device, softmax_head=checked.analysis.softmax_head)
    warm = prepare(raw, spec.data, seed=0, device=device, limit=10 * BATCH)
    Trainer(spec, build_model(spec, device), warm, device, softmax_head=checked.analysis.softmax_head).train_epoch(1)
    _sync(device)
    start = time.perf_counter()
    trainer.train_epoch(1)
    _sync(device)
    return trainer.steps_per_epoch * BATCH / (time.perf_counter() - start), trainer.speed.describe()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NETSPEC_DATA_DIR") or ROOT.parent / "shared" / "data"),
                   help="folder holding MNIST/raw (default: $NETSPEC_DATA_DIR, else ../shared/data)")
    p.add_argument("--steps", type=int, default=300, help="timed training steps per measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--specs", nargs="+", default=["mlp", "cnn"])
    args = p.parse_args()
    device = torch.device(args.device)
    overrides = ("train.augment.shift=0", "train.augment.rotate=0", "train.augment.scale=0",
                 "train.batch_size=32", "train.schedule.name=none")
    table = Table(title=f"training throughput, batch {BATCH}, {args.steps} steps, {device}, "
                        f"{torch.get_num_threads()} threads, torch {torch.__version__}", title_justify="left")
    for col in ("spec", "params", "plain loop img/s", "netspec img/s", "speed-up", "netspec settings"):
        table.add_column(col, justify="right" if col != "spec" else "left")
    for name in args.specs:
        checked = checked_file(ROOT / "specs" / f"{name}.yaml", overrides=overrides)
        plain = plain_loop(checked, args.data_dir, args.steps, device)
        ours, settings = netspec_loop(checked, args.data_dir, args.steps, device)
        table.add_row(name, f"{checked.analysis.params:,}", f"{plain:,.0f}", f"{ours:,.0f}", f"{ours / plain:.2f}x", settings)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
