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

from conftest import check_file, run

import netspec
from netspec.check.checker import check_document
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


def test_ctrl_c_while_netspec_train_loads_its_data_ends_the_run_and_leaves_the_process_usable(fake_data, tmp_path,
                                                                                             monkeypatch):
    """Found by attacking the loop: in a notebook (no command listening), Ctrl-C before training
    was raised inside whatever was importing (matplotlib left half imported) and the next run in
    that process failed. The API holds the whole call: the stop is recorded, the run ends at its
    first step, and the next run trains."""
    from conftest import ctrl_c
    from netspec.errors import Interrupted
    from netspec.runner import stop

    real = run_module.load_data

    def interrupted_while_loading(*args, **kw):
        ctrl_c()
        return real(*args, **kw)

    monkeypatch.setattr(run_module, "load_data", interrupted_while_loading)
    spec = netspec.load(SPECS / "mlp.yaml", overrides=list(QUICK))
    with pytest.raises(Interrupted, match="before the first epoch"):
        netspec.train(spec, out=tmp_path / "cut", data_dir=fake_data, limit=300, progress=False)
    monkeypatch.undo()
    assert stop.requested() is None
    again = netspec.train(spec, out=tmp_path / "next", data_dir=fake_data, limit=300, progress=False)
    assert again.metrics.finished


def test_ctrl_c_pressed_twice_while_the_folder_is_written_lets_it_finish(fake_data, tmp_path, monkeypatch):
    """Found by attacking the loop: the second Ctrl-C was raised while the run folder was written,
    inside a weakref callback where Python prints it and goes on. The last writing takes seconds
    and is never cut: the folder is complete."""
    from conftest import ctrl_c
    from netspec.runner import stop

    real = run_module.evaluate

    def tested_while_pressed_twice(*args, **kw):  # the test pass, the first of the last writing
        ctrl_c()
        ctrl_c()
        return real(*args, **kw)

    monkeypatch.setattr(run_module, "evaluate", tested_while_pressed_twice)
    with stop.listening(hold=False):
        result = run(check_file(SPECS / "mlp.yaml", overrides=QUICK), out=tmp_path / "r", data_dir=fake_data,
                     limit=300)
    assert result.metrics.finished and (tmp_path / "r" / "report.md").is_file()


def test_a_run_resumed_on_another_number_of_processes_says_so(fake_data, tmp_path):
    """Found by attacking the loop: a `--nproc 2` run resumed without --nproc went on in one process
    without a word (its batches then shared out differently)."""
    import json

    from conftest import ctrl_c
    from netspec.errors import Interrupted
    from netspec.runner.observer import Observer

    class StopInEpoch2(Observer):
        def step(self, *, epoch, step, loss):
            if epoch == 2:
                ctrl_c()

    checked = check_file(SPECS / "mlp.yaml", overrides=("train.epochs=2", "train.device=cpu", "data.validation=100"))
    with pytest.raises(Interrupted):
        run(checked, out=tmp_path / "r", data_dir=fake_data, limit=300, observer=StopInEpoch2())
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    (tmp_path / "r" / "run.json").write_text(json.dumps({**record, "processes": 2, "backend": "gloo"}))
    notes = []

    class Notes(Observer):
        def note(self, text):
            notes.append(text)

    run(checked, out=tmp_path / "r", data_dir=fake_data, resume=True, observer=Notes())
    assert any("trained on 2 process(es) and resumes on 1" in n and "--nproc 2" in n for n in notes), notes


def _split(n=200, shape=(784,)):
    import torch

    from netspec.data.splits import Split

    g = torch.Generator().manual_seed(1)
    return Split(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.mark.parametrize("part", [(0, 1), (0, 2), (1, 2)])
def test_batches_gathered_a_chunk_at_a_time_are_the_batches_one_at_a_time(part):
    import torch

    from netspec.data.augment import Augment
    from netspec.data.splits import share
    from netspec.spec.config import AugmentSpec

    split, order = _split(), torch.randperm(200, generator=torch.Generator().manual_seed(2))
    augment = Augment(AugmentSpec(shift=2, rotate=10, scale=0.1), (1, 28, 28))
    size = 32  # 6 full batches and one of 8, in chunks of 4: 4 + 2 + 1
    single, one_gen = list(split.batches(size, order, 7, part=part)), torch.Generator().manual_seed(3)
    singles = [(augment(x, one_gen), y) for x, y in single]
    chunked, gen = [], torch.Generator().manual_seed(3)
    for x, y in split.batches(size, order, 7, part=part, chunk=4):
        chunked += zip(augment(x, gen, batch=share(size, part)).split(share(size, part)), y.split(share(size, part)))
    assert [len(y) for _, y in chunked] == [len(y) for _, y in singles] == [16 if part[1] == 2 else 32] * 6 + [8 // part[1]]
    for (x1, y1), (x2, y2) in zip(singles, chunked):  # the same images, warped by the same numbers
        assert torch.equal(y1, y2)
        torch.testing.assert_close(x1, x2, rtol=0, atol=1e-6)  # bit for bit on the Xeon it was measured on


def test_the_eager_step_trains_alike_whatever_its_chunk(fake_data, monkeypatch):
    """Chunks only regroup the gathering and the augmentation: the weights after an epoch are equal (bit
    for bit on the Xeon it was measured on; the grid's matrix product may round otherwise elsewhere)."""
    import torch

    from netspec.builder.model import build_model
    from netspec.runner import steps
    from netspec.runner.trainer import Trainer

    checked = check_file(SPECS / "mlp.yaml", overrides=("train.device=cpu", "data.validation=0", "train.batch_size=32"))
    data = run_module.load_data(checked, torch.device("cpu"), fake_data, limit=330)
    weights = []
    for chunk in (1, 16):
        monkeypatch.setattr(steps, "CHUNK", chunk)
        torch.manual_seed(0)
        trainer = Trainer(checked.spec, build_model(checked.spec, "cpu"), data, torch.device("cpu"),
                          softmax_head=checked.analysis.softmax_head)
        assert trainer.train_epoch(1) and trainer.steps_per_epoch == 11
        weights.append([p.detach().clone() for p in trainer.model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_too_few_images_for_one_step_is_a_clear_error_and_leaves_no_folder(fake_data, tmp_path):
    """Found by attacking the loop: --limit 1 (a last batch of one is dropped: no step at all) raised
    AttributeError from the Trainer and left a half-written run folder."""
    from netspec.errors import RunError

    checked = check_file(SPECS / "mlp.yaml", overrides=QUICK)
    with pytest.raises(RunError, match=r"^1 training image\(s\) make no step of train.batch_size 64 on 1 process"):
        run(checked, out=tmp_path / "run", data_dir=fake_data, limit=1)
    assert not (tmp_path / "run").exists()
