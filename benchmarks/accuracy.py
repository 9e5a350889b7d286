"""Accuracy and time of the shipped specs on real MNIST, as one table.

Trains each spec with the runner (exactly `netspec run specs/<name>.yaml`) and
prints test accuracy against the rules' target, the issue's aim, parameters
and training time. `--runs DIR...` tabulates finished run folders instead.

    python benchmarks/accuracy.py --data-dir ../shared/data                 # all four, ~45 min on 2 CPU cores
    python benchmarks/accuracy.py --specs mlp cnn-small
    python benchmarks/accuracy.py --runs runs/mlp-* runs/cnn-*
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

import netspec

ROOT = Path(__file__).resolve().parents[1]
AIMS = {"mlp": 0.984, "cnn": 0.995, "cnn-small": 0.992, "vit": 0.985}  # the issues' aims, beyond the rules


def _arithmetic(speed: dict | None) -> str:
    if not speed:
        return "fp32 eager (before speed settings)"
    parts = [speed["precision"]] + (["channels_last"] if speed["channels_last"] else []) + [
        "eager" if speed["compile"] == "off" else f"compile {speed['compile']}"]
    return ", ".join(parts + (["fused attention"] if speed["fused_attention"] else []))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--specs", nargs="+", default=["mlp", "cnn", "cnn-small", "vit"])
    p.add_argument("--runs", nargs="+", type=Path, help="tabulate these run folders instead of training")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--set", action="append", default=[], help="key=value for every spec, e.g. train.precision=fp32")
    args = p.parse_args()
    metrics = []
    if args.runs:
        metrics = [json.loads((d / "metrics.json").read_text()) for d in args.runs]
    else:
        for name in args.specs:
            result = netspec.train(netspec.load(ROOT / "specs" / f"{name}.yaml", overrides=list(args.set)),
                                   out=args.out / name, data_dir=args.data_dir, force=True)
            metrics.append(result.metrics.to_dict())
    table = Table(title="shipped specs on MNIST (test set, 10,000 images)", title_justify="left")
    for col in ("spec", "params", "epochs", "test acc", "rules target", "aim", "train s", "s / epoch", "device", "arithmetic"):
        table.add_column(col, justify="left" if col in ("spec", "device") else "right")
    for m in metrics:
        aim = AIMS.get(m["name"])
        table.add_row(
            m["name"], f"{m['params']:,}", str(m["epochs_completed"]), f"{m['test_accuracy']:.4f}",
            "-" if m["target_accuracy"] is None else f"{m['target_accuracy']} {'✓' if m['passed'] else '✗'}",
            "-" if aim is None else f"{aim} {'✓' if m['test_accuracy'] >= aim else '✗'}",
            f"{m['train_seconds']:.0f}", f"{m['seconds_per_epoch']:.1f}", m["device"],
            _arithmetic(m.get("speed")))
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
