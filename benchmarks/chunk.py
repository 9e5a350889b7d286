"""How many batches the eager step should gather and augment at once (`CHUNK` in netspec/runner/steps.py).

In one process, interleaved round after round, median: torch's minimal loop (`--floor` of
step_compare.py: forward, cross-entropy, backward, fused Adam over contiguous slices) and the
Trainer's epoch with each chunk size, on a shipped spec's own recipe (augmentation; the schedule is
left out so that any number of epochs can run) over synthetic MNIST-shaped data.

    python benchmarks/chunk.py --spec mlp --chunks 1,4,8,16 --rounds 11
"""
from __future__ import annotations

import argparse
import statistics

import speed
import torch
from rich.console import Console
from rich.table import Table

from netspec.builder.model import build_model
from netspec.runner import steps
from netspec.runner.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="mlp")
    p.add_argument("--chunks", default="1,4,8,16")
    p.add_argument("--steps", type=int, default=200, help="steps per timed epoch")
    p.add_argument("--rounds", type=int, default=11)
    args = p.parse_args()
    cpu = torch.device("cpu")
    checked = speed.checked_file(speed.ROOT / "specs" / f"{args.spec}.yaml",
                                 overrides=("train.device=cpu", "data.validation=0", "train.schedule.name=none"))
    b = checked.spec.train.batch_size
    data = speed.synthetic_data(checked.spec.data.input_shape, args.steps * b, cpu)

    def trainer() -> Trainer:
        torch.manual_seed(0)
        return Trainer(checked.spec, build_model(checked.spec, "cpu"), data, cpu,
                       softmax_head=checked.analysis.softmax_head)

    tr, floor = trainer(), speed.floor_epoch(trainer())

    def chunked(k: int):
        def epoch() -> float:
            steps.CHUNK = k
            return speed.timed_epoch(tr, cpu)
        return epoch

    variants = {"torch floor": floor, **{f"chunk {k}": chunked(k) for k in map(int, args.chunks.split(","))}}
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(run() * 1e3)
    base = statistics.median(times["torch floor"])
    table = Table(title=f"{args.spec}: ms per step on the CPU ({torch.get_num_threads()} threads), median of "
                        f"{args.rounds} interleaved rounds, in one process", title_justify="left")
    for col in ("variant", "ms/step", "x floor"):
        table.add_column(col)
    for name, values in times.items():
        table.add_row(name, f"{statistics.median(values):.3f}", f"{statistics.median(values) / base:.3f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
