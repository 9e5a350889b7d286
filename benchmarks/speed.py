"""Per-step training time of the shipped specs under each speed setting.

Every variant trains the same spec (same weights at the start, same batches)
with the runner's own Trainer; the variants are timed in turn, round after
round, in this one process, and each cell is the median over rounds of the
mean step time of one timed epoch (compilation warm-up excluded). "today"
is fp32 eager (exact, what netspec did before the speed settings); "auto" is
the default (`precision`, `channels_last`, `compile`, `fused_attention` all
`auto`).

    python benchmarks/speed.py --data-dir ../shared/data            # CPU
    python benchmarks/speed.py --device cuda --steps 400            # a GPU
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from netspec.builder.model import build_model
from netspec.data.splits import Data, Split
from netspec.runner.trainer import Trainer
import netspec

ROOT = Path(__file__).resolve().parents[1]


def checked_file(path, overrides=()):
    """A spec file checked as `netspec.load` checks it."""
    return netspec.load(Path(path), overrides=list(overrides)).checked

VARIANTS = {  # name -> --set overrides (everything else: the spec's own settings)
    "today (fp32 eager)": ("train.precision=fp32", "train.channels_last=false", "train.compile=off", "train.fused_attention=false"),
    "channels_last": ("train.precision=fp32", "train.channels_last=true", "train.compile=off", "train.fused_attention=false"),
    "bf16": ("train.precision=bf16", "train.channels_last=false", "train.compile=off", "train.fused_attention=false"),
    "channels_last+bf16": ("train.precision=bf16", "train.channels_last=true", "train.compile=off", "train.fused_attention=false"),
    "fused attention": ("train.precision=fp32", "train.channels_last=false", "train.compile=off", "train.fused_attention=true"),
    "compile": ("train.precision=fp32", "train.channels_last=false", "train.compile=on", "train.fused_attention=false"),
    "compile+bf16": ("train.precision=bf16", "train.channels_last=auto", "train.compile=on", "train.fused_attention=auto"),
    "cudagraphs+bf16": ("train.precision=bf16", "train.channels_last=auto", "train.compile=cudagraphs", "train.fused_attention=auto"),
    "graph": ("train.precision=fp32", "train.channels_last=false", "train.compile=graph", "train.fused_attention=false"),
    "graph+bf16": ("train.precision=bf16", "train.channels_last=auto", "train.compile=graph", "train.fused_attention=auto"),
    "auto (new default)": ("train.precision=auto", "train.channels_last=auto", "train.compile=auto", "train.fused_attention=auto"),
}
APPLIES = {  # variants that mean something for each kind of model
    "cnn": ["today (fp32 eager)", "channels_last", "bf16", "channels_last+bf16", "compile", "compile+bf16", "cudagraphs+bf16", "graph", "graph+bf16", "auto (new default)"],
    "vit": ["today (fp32 eager)", "bf16", "fused attention", "compile", "compile+bf16", "cudagraphs+bf16", "graph", "graph+bf16", "auto (new default)"],
    "mlp": ["today (fp32 eager)", "bf16", "compile", "cudagraphs+bf16", "graph", "graph+bf16", "auto (new default)"],
}


def synthetic_data(shape, n: int, device) -> Data:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    empty = Split(x[:0], y[:0])
    return Data("synthetic", Split(x, y), empty, empty, tuple(shape), (0.0,), (1.0,), (1, 28, 28),
                tuple(str(i) for i in range(10)))  # MNIST-shaped


def trainer_for(name: str, variant: str, steps: int, batch: int, device) -> Trainer:
    sets = ("train.augment.shift=0", "train.augment.rotate=0", f"train.batch_size={batch}", "train.schedule.name=none",
            "train.device=" + device.type, "data.validation=0") + VARIANTS[variant]
    checked = checked_file(ROOT / "specs" / f"{name}.yaml", overrides=sets)
    spec = checked.spec
    data = synthetic_data(spec.data.input_shape, steps * batch, device)
    torch.manual_seed(0)
    return Trainer(spec, build_model(spec, device), data, device, softmax_head=checked.analysis.softmax_head)


def floor_epoch(trainer: Trainer):
    """torch's minimal eager loop over `trainer`'s model and training batches, in order (forward,
    cross-entropy, backward, fused Adam; no augmentation, shuffle, schedule, checks or counters) on a
    it trains `trainer.net` itself. Returns a function timing one epoch (s per step)."""
    import torch.nn.functional as F

    net, x, y, b = trainer.net, trainer.data.train.x, trainer.data.train.y, trainer.spec.train.batch_size
    opt = torch.optim.Adam(net.parameters(), lr=trainer.spec.train.optimizer.lr, fused=True)
    net.train()

    def epoch() -> float:
        start = time.perf_counter()
        for s in range(trainer.steps_per_epoch):
            loss = F.cross_entropy(net(x[s * b:(s + 1) * b]), y[s * b:(s + 1) * b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / trainer.steps_per_epoch
    return epoch


def timed_epoch(trainer: Trainer, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_epoch(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / trainer.steps_per_epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=60, help="timed steps per epoch")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--specs", nargs="+", default=["cnn", "vit", "mlp"])
    p.add_argument("--variants", nargs="*", help="only these variants (names as in the table)")
    args = p.parse_args()
    device = torch.device(args.device)
    console = Console(width=200)
    for name in args.specs:
        batch = 64 if name == "mlp" else 32
        names = [v for v in APPLIES[name] if (not args.variants or v in args.variants)
                 and (device.type == "cuda" or "graph" not in v)]  # CUDA graphs: a GPU's
        trainers, notes = {}, {}
        for v in names:
            tr = trainer_for(name, v, args.steps, batch, device)
            tr.observer.note = lambda text, v=v: notes.setdefault(v, text)
            tr.train_epoch(1)  # warm-up: compilation, autotuning, allocator
            trainers[v] = tr
        times = {v: [] for v in names}
        for _ in range(args.rounds):
            for v in names:
                times[v].append(timed_epoch(trainers[v], device))
        base = statistics.median(times[names[0]])
        table = Table(title=f"{name}: ms per training step (batch {batch}, median of {args.rounds} interleaved rounds of "
                            f"{args.steps} steps), {device}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                      title_justify="left")
        for col in ("variant", "settings as run", "ms/step", "vs today"):
            table.add_column(col, justify="right" if col in ("ms/step", "vs today") else "left")
        for v in names:
            med = statistics.median(times[v])
            table.add_row(v, trainers[v].speed.describe() + (f" [{notes[v]}]" if v in notes else ""),
                          f"{1000 * med:.2f}", f"{base / med:.2f}x")
        console.print(table)


if __name__ == "__main__":
    main()
