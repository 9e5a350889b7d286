"""Per-step training time of a shipped spec under two versions of netspec, interleaved.

Each version is a source tree (this one, and e.g. a `git worktree` of an older commit); every
measurement is a fresh process that builds the spec's Trainer with that tree's own
benchmarks/speed.py harness (same synthetic data, same weights), warms up one epoch and times
`--epochs` more; the trees take turns, round after round, and each cell is the median.

    git worktree add /tmp/old da3c9bf
    python benchmarks/step_compare.py --tree /tmp/old --spec mlp                 # the benchmark's step
    python benchmarks/step_compare.py --tree /tmp/old --spec mlp --recipe        # with the spec's augment and schedule
    python benchmarks/step_compare.py --tree /tmp/old --spec mlp --floor         # and torch's own minimal loop

`--floor` adds a third row, the least a step of this model costs in torch's eager mode: the same
model and batches trained by a bare loop (forward, cross-entropy, backward, fused Adam; no
augmentation, schedule, finite check or counters), in this tree's process. A netspec step cannot
be faster than that without leaving eager mode.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

MEASURE = r"""
import json, statistics, sys, time
tree, spec, steps, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
recipe, floor = sys.argv[5] == "1", sys.argv[6] == "1"
sys.path[:0] = [tree, tree + "/benchmarks"]
import torch
import speed
try:  # this tree's names
    from netspec.runner.trainer import Trainer
    check_file = speed.checked_file
    one_epoch = lambda tr: tr.train_epoch(1)
except ImportError:  # an older tree's
    from netspec.builder.check import check_file
    from netspec.runner.train import Trainer
    one_epoch = lambda tr: tr._epoch(1)
from netspec.builder.model import build_model
batch = 64 if spec == "mlp" else 32
if recipe:  # the spec's own augmentation and schedule; only the data is synthetic
    checked = check_file(speed.ROOT / "specs" / f"{spec}.yaml", overrides=("train.device=cpu", "data.validation=0"))
    data = speed.synthetic_data(checked.spec.data.input_shape, steps * checked.spec.train.batch_size, torch.device("cpu"))
    torch.manual_seed(0)
    tr = Trainer(checked.spec, build_model(checked.spec, "cpu"), data, torch.device("cpu"),
                 softmax_head=checked.analysis.softmax_head)
else:
    tr = speed.trainer_for(spec, "auto (new default)", steps, batch, torch.device("cpu"))
if floor:  # torch's minimal loop over the same model and batches (this tree's speed.py)
    epoch = speed.floor_epoch(tr)
    epoch()
    times = [epoch() for _ in range(epochs)]
    about = "torch's minimal eager loop (no augmentation, schedule, checks or counters)"
else:
    one_epoch(tr)
    times = [speed.timed_epoch(tr, torch.device("cpu")) for _ in range(epochs)]
    about = tr.speed.describe()
print(json.dumps({"ms": 1000 * statistics.median(times), "threads": torch.get_num_threads(), "speed": about}))
"""


def measure(tree: Path, spec: str, steps: int, epochs: int, recipe: bool, floor: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tree), spec, str(steps), str(epochs), "1" if recipe else "0",
                          "1" if floor else "0"],
                         capture_output=True, text=True, cwd=tree, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, required=True, help="the other version's source tree")
    p.add_argument("--spec", default="mlp")
    p.add_argument("--steps", type=int, default=200, help="steps per timed epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (median)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--recipe", action="store_true", help="keep the spec's augmentation and schedule")
    p.add_argument("--floor", action="store_true", help="add torch's minimal loop over the same model and batches")
    args = p.parse_args()
    trees = {"other": args.tree.resolve(), "this": ROOT}
    if args.floor:
        trees["torch floor"] = ROOT
    times: dict[str, list[float]] = {k: [] for k in trees}
    about = {}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            m = measure(tree, args.spec, args.steps, args.epochs, args.recipe, name == "torch floor")
            times[name].append(m["ms"])
            about[name] = m
    base = statistics.median(times["other"])
    table = Table(title=f"{args.spec}{' (its recipe: augmentation and schedule)' if args.recipe else ''}: ms per training "
                        f"step on the CPU, {about['this']['threads']} threads, median of {args.rounds} interleaved "
                        f"rounds", title_justify="left")
    for col in ("tree", "settings", "ms/step", "rounds", "vs other"):
        table.add_column(col)
    for name, tree in trees.items():
        med = statistics.median(times[name])
        table.add_row(f"{name} ({tree})", about[name]["speed"], f"{med:.3f}", " ".join(f"{t:.2f}" for t in times[name]),
                      f"{base / med:.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
