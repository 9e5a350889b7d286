"""A sweep's study opened by the real optuna-dashboard (issue 33): its journal file (or database
URL) served as the dashboard serves it, and its HTTP API read back: the study, every trial's
parameters, values and netspec's own attributes, with nothing of netspec's breaking it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

pytest.importorskip("optuna_dashboard")

from netspec.sweeps.sweep import sweep  # noqa: E402
from conftest import TINY_SWEEP  # noqa: E402
from test_postgres import postgres_url  # noqa: E402,F401 - the fixture: a PostgreSQL server of the test's own


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # no line per request in the test output
        pass


@contextmanager
def serving(storage: str):
    """optuna-dashboard's WSGI app for `storage` (a path or URL, as its command line takes it),
    served on 127.0.0.1 at a free port in a thread; yields the base URL."""
    from optuna_dashboard import wsgi

    server = make_server("127.0.0.1", 0, wsgi(storage), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def _expected(study) -> list[dict]:
    return [{"number": t.number, "state": t.state.name.capitalize(), "values": t.values,
             "params": {k: str(v) for k, v in t.params.items()}} for t in study.get_trials(deepcopy=False)]


def _shown(detail: dict) -> list[dict]:
    return [{"number": t["number"], "state": t["state"], "values": t.get("values"),
             "params": {p["name"]: p["param_external_value"] for p in t["params"]}} for t in detail["trials"]]


def _check(base: str, study) -> None:
    listed = get(f"{base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in listed] == [study.study_name]
    (summary,) = listed
    assert summary["directions"] == ["maximize"]
    detail = get(f"{base}/api/studies/{summary['study_id']}?after=0")
    assert detail["name"] == study.study_name
    assert _shown(detail) == _expected(study)
    assert [t["values"] for t in detail["best_trials"]] == [[study.best_value]]
    # netspec's own attributes are shown (as JSON text; the dashboard cuts long ones at 1024 characters)
    study_attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert {"space", "base", "limit", "draft"} <= set(study_attrs)
    assert json.loads(study_attrs["space"]) == study.user_attrs["space"]
    for shown, trial in zip(detail["trials"], study.get_trials(deepcopy=False)):
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert set(attrs) == set(trial.user_attrs)
        assert attrs["run_dir"] == trial.user_attrs["run_dir"]
        assert float(attrs["test_accuracy"]) == trial.user_attrs["test_accuracy"]
    assert {p["name"] for p in detail["union_search_space"]} == set(study.trials[0].params)
    # the page itself and its CSV export
    with urllib.request.urlopen(f"{base}/dashboard", timeout=30) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
    with urllib.request.urlopen(f"{base}/csv/{summary['study_id']}", timeout=30) as r:
        rows = r.read().decode().splitlines()
    assert len(rows) == 1 + len(study.trials)


@pytest.fixture(scope="module")
def journal_sweep(tmp_path_factory, fake_data):
    """The sweep tests' 2-trial grid, in its default storage: study.journal in the sweep folder."""
    root = tmp_path_factory.mktemp("dash")
    (root / "tiny.yaml").write_text(TINY_SWEEP)
    result = sweep(root / "tiny.yaml", out=root / "sweep", data_dir=fake_data)
    assert len(result.study.trials) == 2
    return root / "sweep", result.study


def test_a_sweep_journal_opens_in_optuna_dashboard(journal_sweep):
    folder, study = journal_sweep
    assert (folder / "study.journal").is_file()
    with serving(str(folder / "study.journal")) as base:  # the path, as `optuna-dashboard PATH` takes it
        _check(base, study)


def test_a_sweep_in_a_database_opens_in_optuna_dashboard(tmp_path, fake_data):
    """--storage URL (here SQLite; PostgreSQL is the same RDBStorage): `optuna-dashboard URL`."""
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    result = sweep(tmp_path / "tiny.yaml", out=tmp_path / "sweep", data_dir=fake_data, storage=url)
    with serving(url) as base:
        _check(base, result.study)


@pytest.mark.slow
def test_a_sweep_in_postgresql_opens_in_optuna_dashboard(postgres_url, tmp_path, fake_data):  # noqa: F811
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    result = sweep(tmp_path / "tiny.yaml", out=tmp_path / "sweep", data_dir=fake_data, storage=postgres_url)
    with serving(postgres_url) as base:
        _check(base, result.study)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_optuna_dashboard_command_opens_the_journal_file_as_the_readme_says(journal_sweep):
    """`optuna-dashboard <sweep folder>/study.journal`, the real command in its own process."""
    folder, study = journal_sweep
    port = _free_port()
    command = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(command), str(folder / "study.journal"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"{base}/api/meta")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.2)
        _check(base, study)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
