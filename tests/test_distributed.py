"""Several processes (issue 23): DDP launched by torchrun on the CPU with gloo, `netspec run
--nproc N` as its shortcut, N=1 equal to a plain run, and resume under torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from conftest import NETSPEC

pytestmark = pytest.mark.slow  # real processes (README: the quick suite)

SPEC = """name: ddp
data: {validation: 200, input_shape: [784]}
model:
  layers:
    - Linear: {out_features: 32}
    - ReLU
    - Dropout: {p: 0.1}
    - Linear: {out_features: 10}
train: {epochs: 2, batch_size: 64, optimizer: {name: adam, lr: 0.002}}
"""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _run(args, tmp_path):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["state_dict"]


def test_two_processes_train_one_run_at_the_level_of_one(tmp_path, fake_data):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    common = ["--data-dir", str(fake_data), "--limit", "640"]
    two = _run(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "two"), "--nproc", "2"] + common, tmp_path)
    _run(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "one")] + common, tmp_path)
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert (m2["processes"], m2["backend"], m2["status"]) == (2, "gloo", "finished")
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2
    assert m1["test_accuracy"] > 0.9 and abs(m2["test_accuracy"] - m1["test_accuracy"]) < 0.05
    # the two processes trained different samples: not the one-process weights
    assert not all(torch.equal(a, b) for a, b in zip(_weights(tmp_path / "two").values(), _weights(tmp_path / "one").values()))
    assert two.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert not (tmp_path / "runs").exists()  # no second folder made by another rank


def test_one_process_under_torchrun_equals_a_plain_run(tmp_path, fake_data):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    common = ["--data-dir", str(fake_data), "--limit", "640"]
    _run(TORCHRUN + ["--nproc-per-node", "1", "-m", "netspec", "run", str(spec), "--out", str(tmp_path / "t")] + common, tmp_path)
    _run(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "p")] + common, tmp_path)
    a, b = _weights(tmp_path / "t"), _weights(tmp_path / "p")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "t" / "history.csv").read_text().splitlines()[1].split(",")[:5] == \
        (tmp_path / "p" / "history.csv").read_text().splitlines()[1].split(",")[:5]


def test_an_interrupted_run_resumes_under_torchrun(tmp_path, fake_data):
    from conftest import ctrl_c, run as run_with_reports

    from conftest import check_file
    from netspec.errors import Interrupted
    from netspec.runner.observer import Observer

    class StopInEpoch2(Observer):
        def step(self, *, epoch, step, loss):
            if epoch == 2:
                ctrl_c()

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    with pytest.raises(Interrupted):
        run_with_reports(check_file(spec), out=tmp_path / "r", data_dir=fake_data, limit=640, observer=StopInEpoch2())
    _run(NETSPEC + ["run", "--resume", str(tmp_path / "r"), "--nproc", "2", "--data-dir", str(fake_data)], tmp_path)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (m["status"], m["epochs_completed"], m["processes"]) == ("finished", 2, 2)


def test_a_batch_that_does_not_divide_among_the_processes_is_refused(tmp_path, fake_data):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace("batch_size: 64", "batch_size: 63"))
    proc = subprocess.run(NETSPEC + ["run", str(spec), "--nproc", "2", "--data-dir", str(fake_data), "--out",
                                     str(tmp_path / "x")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "train.batch_size 63 is the batch of all 2 processes together" in proc.stdout + proc.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.parametrize("limit", [642, 643])
def test_a_last_batch_that_leaves_a_process_one_sample_is_dropped(tmp_path, fake_data, limit):
    """A last batch of 2 or 3 samples gives one process a share of one, which BatchNorm cannot
    train on (91 lines of '[rank1]: ... Expected more than 1 value per channel' had ended the
    epoch); it is dropped, as a plain run drops a last batch of one."""
    spec = tmp_path / "bn.yaml"
    spec.write_text(SPEC.replace("    - ReLU\n", "    - BatchNorm1d\n    - ReLU\n").replace("epochs: 2", "epochs: 1"))
    proc = _run(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "bn"), "--data-dir", str(fake_data), "--limit",
                           str(limit), "--nproc", "2"], tmp_path)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "bn" / "metrics.json").read_text())["status"] == "finished"


def test_batchnorm_under_several_processes_is_said_and_sync_is_refused_on_the_cpu(tmp_path, fake_data):
    """DDP leaves each process's BatchNorm to its own share of the batch: the record and the
    report say so; SyncBatchNorm (GPUs only) asked for on CPU processes is refused before any folder."""
    spec = tmp_path / "bn.yaml"
    spec.write_text(SPEC.replace("    - ReLU\n", "    - BatchNorm1d\n    - ReLU\n"))
    common = ["--data-dir", str(fake_data), "--limit", "640", "--nproc", "2"]
    _run(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "bn")] + common, tmp_path)
    m = json.loads((tmp_path / "bn" / "metrics.json").read_text())
    assert (m["processes"], m["batchnorm"], m["status"]) == (2, "per process", "finished") and m["test_accuracy"] > 0.8
    report = (tmp_path / "bn" / "report.md").read_text()
    assert "- Processes: 2 (gloo, DDP), the batch size in the spec split among them; BatchNorm statistics per process" in report
    assert "`train.sync_batchnorm` | False" in report
    refused = subprocess.run(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "sync"), "--set",
                                        "train.sync_batchnorm=true"] + common, capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stdout + refused.stderr
    assert "train.sync_batchnorm: torch's SyncBatchNorm runs on GPUs" in refused.stdout + refused.stderr
    assert not (tmp_path / "sync").exists()
    assert "sync_batchnorm: false" in (tmp_path / "bn" / "spec.yaml").read_text()  # the setting written out


def _start(tmp_path, fake_data, epochs: int, **popen) -> tuple[subprocess.Popen, str]:
    """`netspec run --nproc 2` of a long run, marked in its environment so that its processes can be found."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace("epochs: 2", f"epochs: {epochs}"))
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(NETSPEC + ["run", str(spec), "--out", str(tmp_path / "r"), "--nproc", "2", "--data-dir",
                                       str(fake_data), "--limit", "640"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "NETSPEC_TEST_MARK": marker}, **popen)
    start = time.monotonic()
    while not (tmp_path / "r" / "checkpoint.pt").exists():  # an epoch finished
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() - start < 120
        time.sleep(0.05)
    return proc, marker


def _rank_pid(marker: str, rank: int) -> int:
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if f"NETSPEC_TEST_MARK={marker}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_failed_process_stops_the_others_in_one_line_and_the_run_is_written_and_resumes(tmp_path, fake_data):
    """Rank 1 killed: torchrun stops rank 0 (SIGTERM, taken as Ctrl-C), which writes the run of its
    finished epochs, report included; the command says which process ended, without torchrun's
    traceback; `--resume` finishes the run."""
    proc, marker = _start(tmp_path, fake_data, epochs=150)
    os.kill(_rank_pid(marker, 1), signal.SIGKILL)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    assert "error: process 1 of 2 was killed by SIGKILL; torchrun stopped the others" in output, output
    assert "Traceback" not in output and "ChildFailedError" not in output, output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and 1 <= m["epochs_completed"] < 150, m
    assert f"interrupted after {m['epochs_completed']} finished epoch(s)" in output
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "model.pt").is_file()
    _run(NETSPEC + ["run", "--resume", str(tmp_path / "r"), "--nproc", "2", "--data-dir", str(fake_data)], tmp_path)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (m["status"], m["epochs_completed"], m["processes"]) == ("finished", 150, 2)


def test_ctrl_c_under_nproc_is_one_line_and_exit_130(tmp_path, fake_data):
    """Ctrl-C reaches the launcher and both processes (the terminal's process group): one line from
    rank 0, exit 130 as a plain run's, no torchrun traceback."""
    proc, _ = _start(tmp_path, fake_data, epochs=150, start_new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert output.count("interrupted") == 1 and "Continue with: netspec run --resume" in output, output
    assert "Traceback" not in output and "SignalException" not in output, output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "interrupted"
