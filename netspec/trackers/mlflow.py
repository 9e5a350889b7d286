"""--log mlflow: the run as an MLflow run, through MLflow's own client.

Where: MLFLOW_TRACKING_URI (MLflow's own default otherwise), in the experiment
MLFLOW_EXPERIMENT_NAME or else the spec's name. Params: the resolved spec with dotted keys;
metrics: the training loss by step, each epoch's numbers by epoch, the test accuracy; tags: the
rule sets, draft, precision and device; artifacts at the end: spec.yaml, report.md, the figures,
the ONNX file. The MLflow run id is kept in RUN_DIR/mlflow.json, so `--resume` continues the same
MLflow run; a sweep is a parent run (its id in SWEEP_DIR/mlflow.json) with a nested run per trial.
"""
from __future__ import annotations

import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from netspec.errors import first_line, RunError
from netspec.runner.metrics import Status
from netspec.runner.rundir import RunDir
from netspec.trackers.base import Tracker, epoch_scalars, figures, flat_settings

RECORD = "mlflow.json"  # in the run (or sweep) folder: which MLflow run it is
ARTIFACTS = ("spec.yaml", "report.md", "model.safetensors", "model.onnx", "model.onnx.json")  # with the figures, when present
STATUS = {Status.FINISHED: "FINISHED", Status.INTERRUPTED: "KILLED", Status.STOPPED: "KILLED", Status.FAILED: "FAILED"}

# MLflow retries an unreachable server for minutes by default; a tracker asks once, briefly
# (set only while MLflow's client works for us, and never over a user's own setting)
CHECK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
LOG_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextmanager
def _http(settings: dict[str, str]):
    added = [k for k in settings if k not in os.environ]
    os.environ.update({k: settings[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _reason(e: Exception) -> str:
    """Why the store did not answer, short: MLflow's message holds the whole urllib3 chain."""
    text = first_line(e, type(e).__name__)
    if any(w in text for w in ("NewConnectionError", "Connection refused", "Failed to establish")):
        return "nothing answers there"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"no answer within {CHECK_HTTP['MLFLOW_HTTP_REQUEST_TIMEOUT']} s"
    return text[:200]


DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # a database store's default ports


def _check_database(uri: str) -> None:
    """A database store's server answers (a TCP connection, or its Unix socket is there): MLflow's
    own client would retry a silent one for over a minute, logging a warning at each try."""
    scheme = uri.split(":", 1)[0].split("+")[0]
    if scheme not in DATABASE_PORTS:
        return
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    host, port = url.host or url.query.get("host"), url.port or url.query.get("port") or DATABASE_PORTS[scheme]
    try:
        port = int(port)
    except (TypeError, ValueError):
        return  # written in a way this check does not read: MLflow's client says
    if not isinstance(host, (str, type(None))):
        return  # several hosts: MLflow's client says
    if isinstance(host, str) and host.startswith("/"):
        if scheme == "postgresql" and not (Path(host) / f".s.PGSQL.{port}").exists():
            raise _unusable(uri, f"no server socket in {host}")
        return
    try:
        socket.create_connection((host or "localhost", port), timeout=float(CHECK_HTTP["MLFLOW_HTTP_REQUEST_TIMEOUT"])).close()
    except OSError as e:
        raise _unusable(uri, f"nothing answers at {host or 'localhost'}:{port}: {e.strerror or type(e).__name__}") from None


def _client() -> MlflowClient:
    """MLflow's client of the tracking store (which it connects to as it is made)."""
    uri = mlflow.get_tracking_uri()
    _check_database(uri)
    try:
        return MlflowClient(uri)
    except Exception as e:  # noqa: BLE001 - a store MLflow cannot open (a missing database driver, ...)
        raise _unusable(uri, _reason(e)) from None


def _shown(uri: str) -> str:
    """A store's URI as said and recorded: a password in it is never printed or written down."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", str(uri))


def _where(client: MlflowClient) -> str:
    return _shown(client.tracking_uri)


def _unusable(uri: str, why: str) -> RunError:
    return RunError(f"--log mlflow: the MLflow tracking store {_shown(uri)} cannot be used ({why}); start it, "
                    f"or set MLFLOW_TRACKING_URI")


def _read_record(folder: Path, client: MlflowClient) -> str | None:
    """The MLflow run id kept in `folder`, when that run is in this tracking store."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        record = RunDir(folder).read_json(RECORD)
        run_id = record["run_id"] if record.get("tracking_uri") == _where(client) else None
        return run_id if run_id and client.get_run(run_id) else None
    except Exception:  # noqa: BLE001 - a damaged record, or a run the store no longer has: start another
        return None


def _experiment(client: MlflowClient, name: str) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another process created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _now() -> int:
    return int(time.time() * 1000)


class MlflowTracker(Tracker):
    title = "MLflow"

    run_id = None
    steps = 1  # per epoch
    epochs_done = 0

    def __init__(self, *, parent: str | None = None):
        super().__init__(parent=parent)
        self._client = None
        self.pending: list[Metric] = []  # the steps' losses, sent with their epoch's numbers

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = _client()
        return self._client

    def check(self) -> None:
        with _http(CHECK_HTTP):
            client = self.client
            try:
                client.search_experiments(max_results=1)
            except Exception as e:  # noqa: BLE001 - whatever the store's client raises: it cannot be used
                raise _unusable(client.tracking_uri, _reason(e)) from None

    def run_start(self, run):
        with _http(LOG_HTTP):
            self.run_id = _read_record(run.run_dir, self.client) if run.resumed else None
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                return
            experiment = (self.client.get_run(self.parent).info.experiment_id if self.parent
                          else _experiment(self.client, run.spec["name"]))
            tags = {"netspec.rules": ",".join(run.rules), "netspec.draft": str(run.draft),
                    "netspec.precision": str(run.spec.get("train", {}).get("precision")),
                    "netspec.device": run.device, "netspec.run_dir": str(Path(run.run_dir).resolve())}
            if self.parent:
                tags["mlflow.parentRunId"] = self.parent
            self.run_id = self.client.create_run(experiment, tags=tags, run_name=Path(run.run_dir).name).info.run_id
            RunDir(run.run_dir).write_json(RECORD, {"run_id": self.run_id, "experiment_id": experiment,
                                                    "tracking_uri": _where(self.client)})
            params = [Param(k[:250], str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in flat_settings(run.spec).items()]
            for chunk in _chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(self.run_id, params=chunk)

    def start(self, *, epochs, first_epoch, steps):
        self.steps, self.epochs_done = steps, first_epoch - 1

    def step(self, *, epoch, step, loss):
        self.pending.append(Metric("step/train_loss", loss, _now(), (epoch - 1) * self.steps + step))

    def epoch(self, stats):
        now = _now()
        self.pending += [Metric(k, v, now, stats.epoch) for k, v in epoch_scalars(stats).items()]
        self.epochs_done = stats.epoch
        self._send()

    def _send(self) -> None:
        with _http(LOG_HTTP):
            for chunk in _chunks(self.pending, MAX_METRICS_PER_BATCH):
                self.client.log_batch(self.run_id, metrics=chunk)
        self.pending = []

    def run_end(self, run, *, test_accuracy, status):
        if status == Status.INTERRUPTED:  # the unfinished epoch's steps: --resume trains that epoch again
            self.pending = [m for m in self.pending if m.step <= self.epochs_done * self.steps]
        if test_accuracy is not None:
            self.pending.append(Metric("test/accuracy", test_accuracy, _now(), self.epochs_done))
        self._send()
        with _http(LOG_HTTP):
            self.client.log_batch(self.run_id, tags=[RunTag("netspec.status", str(status))])
            for path in [Path(run.run_dir) / a for a in ARTIFACTS] + figures(run.run_dir):
                if path.is_file() and not path.is_symlink():
                    self.client.log_artifact(self.run_id, str(path))
            self.client.set_terminated(self.run_id, STATUS[status])

    @classmethod
    def open_sweep(cls, folder: Path, name: str) -> str | None:
        client = _client()
        with _http(LOG_HTTP):
            parent = _read_record(folder, client)
            if parent is not None:  # the sweep run again: its trials go on under the same parent
                client.update_run(parent, status="RUNNING")
                return parent
            experiment = _experiment(client, name)
            parent = client.create_run(experiment, run_name=Path(folder).name,
                                       tags={"netspec.sweep_dir": str(Path(folder).resolve())}).info.run_id
        RunDir(folder).write_json(RECORD, {"run_id": parent, "experiment_id": experiment, "tracking_uri": _where(client)})
        return parent

    @classmethod
    def close_sweep(cls, parent: str, status: Status) -> None:
        with _http(LOG_HTTP):
            _client().set_terminated(parent, STATUS[status])
