"""One sweep study in a real PostgreSQL server, shared by two worker processes that each keep
their own sweep folder, as two machines would (issue 10). The test starts and stops its own
server (Debian's postgresql package: initdb and pg_ctl), on a Unix socket of its own; the
server refuses to run as root, so as root it runs as the `postgres` system user."""
from __future__ import annotations

import collections
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # real processes or servers (README: the quick suite)

SPEC = """name: shared
data: {validation: 100, input_shape: [784]}
model:
  layers: [{Linear: {out_features: 16}}, ReLU, {Linear: {out_features: 10}}]
train: {epochs: 4, batch_size: 64}  # long enough that both workers start before the queue drains
sweep:
  grid:
    train.batch_size: [32, 64]
    train.optimizer.lr: [0.001, 0.003, 0.01]
"""


def _server_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent  # the real folder, with createdb beside it
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = _server_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine: install Debian's postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres system user to run the server as")
    home = Path(tempfile.mkdtemp(prefix="netspec-pg-"))
    home.chmod(0o755)
    data, sock = home / "data", home / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:  # a free port number (the server listens on the Unix socket only)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(home / "log"), "-o",
                                    f"-p {port} -k {sock} -c listen_addresses=''", "start"]), check=True,
                   capture_output=True)
    try:
        subprocess.run(_as_server_user([str(bin_dir / "createdb"), "-h", str(sock), "-p", str(port), "-U", "postgres",
                                        "netspec"]), check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@/netspec?host={sock}&port={port}"
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_on_one_postgresql_study_divide_the_trials(postgres_url, fake_data, tmp_path):
    import optuna
    from optuna.trial import TrialState

    spec = tmp_path / "shared.yaml"
    spec.write_text(SPEC)
    procs = [subprocess.Popen([sys.executable, "-m", "netspec", "sweep", str(spec), "--storage", postgres_url,
                               "--out", str(tmp_path / f"machine-{i}"), "--data-dir", str(fake_data), "--limit", "800"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    from netspec.sweeps.study import counted

    trials = [t for t in study.get_trials() if counted(t)]  # neither a grid duplicate nor over the budget
    done = collections.Counter(tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE)
    assert len(done) == 6 and set(done.values()) == {1}, done  # every trial exactly once, none lost
    assert not [t for t in trials if t.state != TrialState.COMPLETE]
    # each worker kept its own run folders, the study knows where each trial's folder is
    folders = {Path(t.user_attrs["run_dir"]).parent.name for t in trials}
    assert folders == {"machine-0", "machine-1"}
    for t in trials:
        assert (Path(t.user_attrs["run_dir"]) / "metrics.json").is_file()


GRADE_RUBRIC = "name: hw-pg\nmode: evaluate\npoints: {valid: 10, accuracy: [{at_least: 0.0, points: 5}]}\n"
GRADE_SPEC = """name: {name}
data: {{validation: 100}}
model: {{layers: [Flatten, {{Linear: {{out_features: 10}}}}]}}
train: {{precision: fp32}}
"""


def test_two_graders_on_one_postgresql_class_grade_each_student_once(postgres_url, fake_data, tmp_path):
    """Two `netspec grade` processes (two machines, each with its own --out) share one class."""
    import optuna
    import torch

    import netspec

    (tmp_path / "rubric.yaml").write_text(GRADE_RUBRIC)
    subs = tmp_path / "subs"
    names = [f"st{i}" for i in range(6)]
    record = {"classes": [str(i) for i in range(10)], "image_shape": [1, 28, 28], "mean": [0.2], "std": [0.3]}
    for name in names:
        (subs / name).mkdir(parents=True)
        (subs / name / "spec.yaml").write_text(GRADE_SPEC.format(name=name))
        model = netspec.load(GRADE_SPEC.format(name=name)).build(seed=0)
        torch.save({"data": record, "state_dict": model.state_dict()}, subs / name / "model.pt")
    procs = [subprocess.Popen([sys.executable, "-m", "netspec", "grade", str(subs), "--rubric", str(tmp_path / "rubric.yaml"),
                               "--storage", postgres_url, "--out", str(tmp_path / f"machine-{i}"), "--data-dir", str(fake_data)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    study = optuna.load_study(study_name="grade-hw-pg", storage=postgres_url)
    graded = collections.Counter(t.user_attrs["student"] for t in study.get_trials()
                                 if t.state.name == "COMPLETE" and "row" in t.user_attrs)
    assert sorted(graded) == names and set(graded.values()) == {1}, graded  # each exactly once, by one of the two
    lines = [o.splitlines() for o in outputs]
    assert sum(1 for ls in lines for line in ls if line.startswith("st") and " graded " in line) == 6
    # the grader that finished last wrote the whole class
    books = [(tmp_path / f"machine-{i}" / "gradebook.csv").read_text() for i in range(2)]
    assert any(b.count(",graded,") == 6 for b in books), books
