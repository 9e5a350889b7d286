"""A sweep with 1 worker and with 2 workers: trials per minute, wall time, same results.

Runs the shipped MLP grid sweep (specs/mlp.yaml's sweep: section, 12 trials) once per worker
count, each in a fresh folder, the way `netspec sweep specs/mlp.yaml --workers N` does
(run folders with reports included), and compares every trial's test accuracy between the two.

    python benchmarks/sweep_workers.py --data-dir ../shared/data --limit 5000
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from netspec.report.run_report import RunReporter
from netspec.sweeps.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NETSPEC_DATA_DIR") or ROOT.parent / "shared" / "data"))
    p.add_argument("--limit", type=int, default=None, help="training images per trial (default: all)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            start = time.perf_counter()
            result = sweep(ROOT / "specs" / "mlp.yaml", out=Path(tmp) / f"w{n}", data_dir=args.data_dir,
                           limit=args.limit, workers=n, reporter=RunReporter())
            wall = time.perf_counter() - start
            trials = [t for t in result.study.trials if t.state.name == "COMPLETE"]
            results[n] = (wall, {tuple(sorted(t.params.items())): t.user_attrs["test_accuracy"] for t in trials})
    table = Table(title=f"specs/mlp.yaml grid sweep, {os.cpu_count()} cores, torch {torch.__version__}"
                        + (f", --limit {args.limit}" if args.limit else ""), title_justify="left")
    for col in ("workers", "trials", "wall s", "trials / min", "speed-up"):
        table.add_column(col, justify="right")
    base = results[args.workers[0]][0]
    for n, (wall, accs) in results.items():
        table.add_row(str(n), str(len(accs)), f"{wall:.0f}", f"{60 * len(accs) / wall:.2f}", f"{base / wall:.2f}x")
    console = Console(width=120)
    console.print(table)
    first, *others = [accs for _, accs in results.values()]
    for accs in others:
        same = [k for k in first if first[k] == accs.get(k)]
        diffs = sorted(abs(first[k] - accs[k]) for k in first if k in accs)
        console.print(f"test accuracy equal in {len(same)} of {len(first)} trials; largest difference "
                      f"{max(diffs) if diffs else 0:.4f}")


if __name__ == "__main__":
    main()
