from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import os

import pytest
import torch
from hypothesis import settings

# CI (CI=true) explores the same fuzz examples every run, so a green run can be repeated; elsewhere
# hypothesis draws new ones each time and may find new cases (as it found the lone '=' in a spec)
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_SWEEP = """name: tiny
data: {validation: 100, input_shape: [784]}
model:
  layers:
    - Linear: {out_features: 32}
    - ReLU
    - Linear: {out_features: 10}
train: {epochs: 1, batch_size: 64}
sweep:
  grid:
    train.batch_size: [32, 64]
"""  # a small MLP with a 2-point grid: the sweep tests' spec


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor in MNIST's idx format (what torchvision reads)."""
    header = struct.pack(">I", 0x00000800 | tensor.dim()) + b"".join(struct.pack(">I", d) for d in tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def synthetic_mnist(root: Path, n_train: int = 1200, n_test: int = 300, seed: int = 0, folder: str = "MNIST") -> Path:
    """A tiny MNIST look-alike in torchvision's layout: class k is a bright
    blob at one of ten places, with noise. Learnable in one or two epochs."""
    g = torch.Generator().manual_seed(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, k in enumerate(labels.tolist()):
            r, c = 3 + (k // 5) * 12, 2 + (k % 5) * 5
            images[i, r: r + 8, c: c + 4] = 255
        return images.to(torch.uint8), labels.to(torch.uint8)

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make(n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def fake_data(tmp_path_factory) -> Path:
    return synthetic_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str, name: str = "spec.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


def run(checked, **kw):
    """The runner with the report layer's hooks, as `netspec run` and `netspec.train` use it."""
    from netspec.report.run_report import RunReporter
    from netspec.runner.run import run as runner_run

    return runner_run(checked, reporter=RunReporter(), **kw)


def mnist_source(root, dataset: str = "mnist"):
    """The synthetic MNIST as netspec reads it: source.train.images is uint8 (N, 1, 28, 28)."""
    from netspec.data.datasets import load_source
    from netspec.spec.config import DataSpec

    return load_source(DataSpec(dataset=dataset), root, download=False)


def mnist_data(root, input_shape=(784,), validation=100, seed=0, limit=None, **data):
    """Training, validation and test splits of the synthetic MNIST, as a run prepares them."""
    from netspec.data.splits import prepare
    from netspec.spec.config import DataSpec

    spec = DataSpec(input_shape=tuple(input_shape), validation=validation, **data)
    return prepare(mnist_source(root), spec, seed=seed, limit=limit)


NETSPEC = [sys.executable, "-m", "netspec"]  # the command, as a user runs it
QUICK = ("train.epochs=2", "data.validation=200", "train.batch_size=64")  # a shipped spec trained briefly


def check_file(path, *, imposed=(), overrides=(), draft: bool = False):
    """A spec file checked through the public entry point, `netspec.load` (its `Checked`)."""
    import netspec

    return netspec.load(Path(path), rules=list(imposed), overrides=list(overrides), draft=draft).checked


def quick_mlp(*extra, rules=()):
    """specs/mlp.yaml for 2 short epochs (QUICK), with more --set overrides and imposed rules, checked."""
    return check_file(SPECS / "mlp.yaml", overrides=QUICK + extra, imposed=rules)


def netspec_process(*args, **kw) -> subprocess.Popen:
    """`netspec ARGS` started in the project folder, its output (stdout and stderr together) piped."""
    return subprocess.Popen(NETSPEC + list(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def ctrl_c() -> None:
    """Ctrl-C, as the terminal sends it: SIGINT to this process."""
    import signal

    signal.raise_signal(signal.SIGINT)
