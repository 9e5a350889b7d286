"""A small class graded on a quiet machine and under N busy processes: the gradebooks and the
times side by side. The grader's clock is the submission's CPU work after start-up, so the
statuses and points must be equal; only the wall time grows.

    python benchmarks/grade_load.py --data-dir ../shared/data            # 8 busy processes
    python benchmarks/grade_load.py --data-dir ../shared/data --busy 4

The class (evaluate mode, limit 8 s of work): a small MLP with untrained weights (well inside the
limit), a spec with a setting the rules refuse (never trained), and a 9.5M-parameter CNN whose
evaluation is about a minute of work (over the limit).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import netspec

MLP = """name: alice
data: {validation: 100}
model:
  layers: [Flatten, {Linear: {out_features: 32}}, ReLU, {Linear: {out_features: 10}}]
train: {epochs: 1, precision: fp32, optimizer: {name: adam}}
"""
CNN = "name: ivan\ndata: {validation: 100}\nmodel:\n  layers:\n" + "".join(
    "    - Conv2d: {out_channels: 512, kernel_size: 3, padding: 1}\n    - ReLU\n" for _ in range(5)) + (
    "    - Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}\n    - Flatten\n    - Linear: {out_features: 10}\n"
    "train: {optimizer: {name: adam}, precision: fp32, eval_batch_size: 100}\n")
RUBRIC = "name: load\nmode: evaluate\npoints: {valid: 10, accuracy: [{at_least: 0.0, points: 5}]}\nlimits: {seconds: 8}\n"


def make_class(root: Path) -> Path:
    subs = root / "subs"
    for name, text in (("alice", MLP), ("ivan", CNN)):
        (subs / name).mkdir(parents=True)
        (subs / name / "spec.yaml").write_text(text)
        spec = netspec.load(text)
        torch.manual_seed(0)
        record = {"classes": [str(i) for i in range(10)], "image_shape": [1, 28, 28], "mean": [0.13], "std": [0.31]}
        torch.save({"spec": spec.to_dict(), "data": record, "state_dict": spec.build().state_dict()},
                   subs / name / "model.pt")
    (subs / "carl.yaml").write_text(MLP.replace("alice", "carl").replace("adam", "rmsprop"))
    (root / "rubric.yaml").write_text(RUBRIC)
    return subs


def grade(subs: Path, root: Path, out: str, data_dir: str) -> tuple[dict, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "netspec", "grade", str(subs), "--rubric", str(root / "rubric.yaml"),
                           "--out", str(root / out), "--data-dir", data_dir], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    with open(root / out / "gradebook.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--busy", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subs = make_class(root)
        quiet, quiet_s = grade(subs, root, "quiet", args.data_dir)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            loaded, loaded_s = grade(subs, root, "loaded", args.data_dir)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    table = Table(title=f"one class, quiet and under {args.busy} busy processes ({len(quiet)} students)")
    for col in ("student", "quiet: status, points, work s", "loaded: status, points, work s", "same grade"):
        table.add_column(col)
    for s in sorted(quiet):
        q, lo = quiet[s], loaded[s]
        table.add_row(s, f"{q['status']}, {q['total']}, {q['seconds']}", f"{lo['status']}, {lo['total']}, {lo['seconds']}",
                      "yes" if (q["status"], q["total"], q["test_accuracy"]) == (lo["status"], lo["total"],
                                                                               lo["test_accuracy"]) else "NO")
    console = Console()
    console.print(table)
    console.print(f"wall time of the whole class: quiet {quiet_s:.1f} s, loaded {loaded_s:.1f} s")


if __name__ == "__main__":
    main()
