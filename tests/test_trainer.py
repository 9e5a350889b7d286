"""The one training loop (issue 32): every check of a run made once, at planning; the step
strategies registered in one place; `netspec.train` returning the run it trained without reading
its folder back; no status or limit decoded from its text."""
from __future__ import annotations

import ast
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import run

import netspec
from netspec.check.checker import check_document
from conftest import check_file
from netspec.runner import run as run_module
from netspec.runner.rundir import RunDir
from netspec.runner.speed import resolve
from netspec.runner.steps import STRATEGIES, graph_problem

SPECS = Path(__file__).resolve().parents[1] / "specs"
PACKAGE = Path(netspec.__file__).resolve().parent
QUICK = ("train.epochs=1", "train.device=cpu", "data.validation=100", "train.batch_size=64")


@contextmanager
def counting(*functions):
    """How often each function ran, however it was imported (counted by its code object)."""
    codes = {f.__code__: f.__qualname__ for f in functions}
    counts: Counter = Counter()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            counts[codes[frame.f_code]] += 1

    sys.setprofile(profile)
    try:
        yield counts
    finally:
        sys.setprofile(None)


def test_every_check_of_a_run_is_made_once(fake_data, tmp_path):
    """graph_problem, the speed and the process checks ran three, two and two times for one run;
    the spec is not checked again while it trains."""
    checked = check_file(SPECS / "mlp.yaml", overrides=(*QUICK, "train.compile=graph"))
    with counting(graph_problem, resolve, run_module.check_processes, check_document) as counts:
        result = run(checked, out=tmp_path / "r", data_dir=fake_data, limit=300)
    assert result.metrics.speed["compile"] == "graph"
    assert counts == {"graph_problem": 1, "resolve": 1, "check_processes": 1}


def test_netspec_train_returns_the_trained_run_without_reading_its_folder_back(fake_data, tmp_path):
    spec = netspec.load(SPECS / "mlp.yaml", overrides=list(QUICK))
    with counting(RunDir.open, check_document) as counts:
        trained = netspec.train(spec, out=tmp_path / "r", data_dir=fake_data, limit=300, progress=False)
    assert counts == {}  # the spec was checked by load(), before
    reopened = netspec.open_run(tmp_path / "r")
    assert trained.metrics == reopened.metrics
    weights, saved = trained.model.state_dict(), reopened.model.state_dict()
    assert all((weights[k] == saved[k]).all() for k in saved)


def test_every_compile_setting_has_one_step_strategy():
    """The strategies are one table: every value train.compile takes (the schema's) names one."""
    from netspec.spec.schema import spec_schema

    values = spec_schema()["properties"]["train"]["properties"]["compile"]["enum"]
    assert sorted(v for v in values if isinstance(v, str) and v != "auto") == sorted(STRATEGIES)  # YAML booleans are spellings of on and off


def _startswith_on(names: tuple[str, ...]) -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith"
                    and any(n in ast.unparse(node.func.value).lower() for n in names)):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_status_or_limit_is_read_back_from_its_text():
    assert _startswith_on(("status", "limit")) == []


@pytest.mark.parametrize("processes, precision, loading, why", [
    (2, "fp32", "memory", "one process"), (1, "fp16", "memory", "fp16's gradient scaler"),
    (1, "bf16", "stream", "in the device's memory"), (1, "bf16", "memory", None)])
def test_what_the_whole_step_graph_needs(processes, precision, loading, why):
    from netspec.runner.speed import Speed

    problem = graph_problem(Speed(precision, False, "graph", False, False), processes, loading)
    assert (problem is None) if why is None else why in problem
