"""ViT training speed: all heads in one batched matmul against the 8 single-head
modules run one after another (same weights layout, same numbers).

Times `--steps` training steps of specs/vit.yaml at batch size 32 through the
runner's Trainer for each attention form, and extrapolates to one epoch of
55,000 training images.

    python benchmarks/vit_heads.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from netspec.builder.model import build_model
from netspec.data.datasets import load_source
from netspec.data.splits import prepare
from netspec.spec.config import DataSpec
from netspec.runner.trainer import Trainer
import netspec
from speed import checked_file  # benchmarks/speed.py, beside this script
from speed import timed_epoch  # benchmarks/speed.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
EPOCH_IMAGES = 55_000


def time_steps(form: str, raw, steps: int, device: torch.device) -> float:
    """Seconds per training step (after a short warm-up)."""
    checked = checked_file(ROOT / "specs" / "vit.yaml", overrides=(f"model.vit.attention={form}",))
    spec = checked.spec
    batch = spec.train.batch_size

    def trainer(n_steps: int) -> Trainer:
        data = prepare(raw, spec.data, seed=0, device=device, limit=n_steps * batch)
        data.val = data.val.__class__(data.val.x[:0], data.val.y[:0])  # time training only
        torch.manual_seed(0)
        return Trainer(spec, build_model(spec, device), data, device, softmax_head=False)

    trainer(5).train_epoch(1)
    return timed_epoch(trainer(steps), device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    raw = load_source(DataSpec(), args.data_dir, download=False)
    rows = {form: time_steps(form, raw, args.steps, device) for form in ("batched", "per_head")}
    table = Table(title=f"ViT (specs/vit.yaml) training, batch 32, {args.steps} steps, {device}, "
                        f"{torch.get_num_threads()} threads", title_justify="left")
    for col in ("attention", "ms / step", "s / epoch (55k images)", "relative"):
        table.add_column(col, justify="right" if col != "attention" else "left")
    for form, sec in rows.items():
        table.add_row(form, f"{sec * 1e3:.1f}", f"{sec * EPOCH_IMAGES / 32:.0f}", f"{sec / rows['batched']:.2f}x")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
