"""Start-up cost of the front door: median wall time and peak memory of `netspec --version`,
`--help`, `validate` of one and of every shipped spec, and `summary`, each in a fresh process.

    python benchmarks/startup.py [--repeats 7] [--tree PATH ...]

`--tree` compares other checkouts of netspec (their package is put first on the path), run
interleaved with this one, e.g. an old commit unpacked by `git archive da3c9bf netspec | tar -x -C /tmp/old`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(str(p) for p in (ROOT / "specs").glob("*.yaml"))
CASES = {
    "--version": ["--version"],
    "--help": ["--help"],
    "validate (1 spec)": ["validate", str(ROOT / "specs" / "cnn.yaml")],
    f"validate ({len(SPECS)} specs)": ["validate", *SPECS],
    "summary": ["summary", str(ROOT / "specs" / "vit.yaml")],
}


PROBE = """import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"""


def once(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one `python -m netspec ARGS` with `tree` first on the
    path, measured by a small parent process of its own (so each peak is this command's alone)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "netspec", *args], cwd=tree, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tree", action="append", default=[], help="another checkout to compare (its root)")
    a = ap.parse_args()
    trees = [ROOT, *map(Path, a.tree)]
    times = {(t, c): [] for t in trees for c in CASES}
    peaks = {(t, c): [] for t in trees for c in CASES}
    for _ in range(a.repeats):  # interleaved: a busy moment affects every tree alike
        for case, args in CASES.items():
            for tree in trees:
                wall, peak = once(tree, args)
                times[tree, case].append(wall)
                peaks[tree, case].append(peak)
    print(f"{'command':<22}" + "".join(f"{str(t):>34}" for t in trees))
    for case in CASES:
        cells = [f"{statistics.median(times[tree, case]):.3f} s, {max(peaks[tree, case]):.0f} MiB" for tree in trees]
        print(f"{case:<22}" + "".join(f"{c:>34}" for c in cells))
    print(f"(median wall time of {a.repeats} fresh processes, and the largest peak resident memory among them)")


if __name__ == "__main__":
    main()
