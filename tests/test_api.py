"""The Python API (issue 11): the documented names, the layering, and no global side effects."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
import torch

import netspec
from netspec.errors import SpecError

from conftest import ROOT, SPECS

LAYERS = ["errors", "spec", "builder", "data", "runner", "report", "grading", "api", "cli"]  # each may import only leftwards


def test_documented_names_are_exported():
    public = {n for n in dir(netspec) if not n.startswith("_")}
    assert {"load", "train", "resume", "open_run", "sweep", "compare", "data_facts", "grade", "Spec", "Run", "Sweep",
            "Metrics", "Prediction", "NetspecError", "SpecError"} <= public


def test_load_from_path_text_and_dict_with_overrides():
    a = netspec.load(SPECS / "cnn.yaml")
    b = netspec.load((SPECS / "cnn.yaml").read_text().replace("rules: mnist-cnn\n", ""), overrides={"train.seed": 3})
    c = netspec.load(a.to_dict(), overrides=["train.epochs=10"])
    assert a.params == b.params == c.params == 49_274
    assert b.config.train.seed == 3 and a.config.rules == "mnist-cnn"
    assert str(netspec.load(str(SPECS / "mlp.yaml")).config.data.input_shape) == "(784,)"


def test_load_raises_one_error_with_every_problem_and_its_line():
    text = "name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n    - Linear: {out_features: -4}\n    - Lambda\ntrain: {epochs: ten}\n"
    with pytest.raises(SpecError) as e:
        netspec.load(text)
    assert [(p.line, p.path) for p in e.value.problems] == [
        (5, "model.layers[0].Linear.out_features"), (6, "model.layers[1]"), (7, "train.epochs")]
    assert isinstance(e.value, netspec.NetspecError)
    with pytest.raises(SpecError, match="train.epochs is 5, but it is fixed at 10 by rules 'mnist-cnn'"):
        netspec.load(SPECS / "cnn.yaml", overrides={"train.epochs": 5})


def test_build_keeps_the_softmax_head_and_logits_drops_it():
    spec = netspec.load(SPECS / "cnn.yaml")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model, net = spec.build(), spec.build(logits=True)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    assert type(model[-1]).__name__ == "Softmax" and type(net[-1]).__name__ == "Linear"
    x = torch.randn(4, 1, 28, 28)
    model.eval(), net.eval()
    assert torch.allclose(model(x), torch.softmax(net(x), 1), atol=1e-6)
    # the same seed gives the same weights; another seed other weights
    w = lambda m: next(m.parameters())  # noqa: E731
    assert torch.equal(w(spec.build()), w(model)) and not torch.equal(w(spec.build(seed=1)), w(model))


def test_summary_as_text_and_html():
    s = netspec.load(SPECS / "cnn.yaml").summary()
    assert "Trainable params: 49,274" in str(s)
    html = s._repr_html_()
    assert "<table>" in html and "49,274" in html and "conv2d_0" in html


def test_train_open_and_predict_on_tensors(fake_data, tmp_path, capsys):
    spec = netspec.load(SPECS / "mlp.yaml", overrides={"train.epochs": 2, "data.validation": 200})
    run = netspec.train(spec, data_dir=fake_data, out=tmp_path / "r", limit=600)
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "epoch   2" in printed
    assert [h.epoch for h in run.history] == [1, 2] and run.metrics.test_size == 300
    again = netspec.open_run(tmp_path / "r")
    assert again.metrics == run.metrics and again.spec.params == 159_010
    from conftest import mnist_source
    raw = mnist_source(fake_data)
    images = raw.test.images[:50, 0]
    pred = again.predict(images)
    pre = again.preprocessing
    assert pre.stats_from == "training split" and len(pre.mean) == 1
    x = ((images.float() / 255 - pre.mean[0]) / pre.std[0]).reshape(50, 784)
    with torch.no_grad():
        expected = again.logits_model(x).argmax(1)
    assert pred.labels == expected.tolist() and pred.probabilities.shape == (50, 10)
    assert isinstance(pred.labels, list) and all(type(label) is int for label in pred.labels)
    assert torch.allclose(pred.probabilities.sum(1), torch.ones(50))
    labels, probs = again.predict(images.float() / 255)  # floats in [0, 1] give the same
    assert labels == pred.labels
    assert (torch.tensor(pred.labels) == raw.test.labels[:50]).float().mean() > 0.5
    with pytest.raises(netspec.NetspecError, match="784 values each"):
        again.predict(torch.zeros(2, 27, 27))


def test_layers_import_one_way():
    """spec <- builder <- data <- runner <- report <- grading <- api <- cli: no package imports one to its right."""
    bad = []
    for path in (ROOT / "netspec").rglob("*.py"):
        rel = path.relative_to(ROOT / "netspec")
        here = rel.parts[0].removesuffix(".py")
        here = "cli" if here.startswith("cli") else here  # cli.py and the command modules beside it (cli_grade.py)
        if here not in LAYERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netspec."):
                there = node.module.split(".")[1]
                if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                    bad.append(f"{rel} imports {node.module}")
            elif isinstance(node, ast.Import) and any(a.name == "netspec" for a in node.names) and here != "cli":
                bad.append(f"{rel} imports netspec (the whole API)")
    assert bad == []


CHECK_GLOBALS = r"""
import json, os, pkgutil, importlib, sys
import torch, matplotlib
mask = os.umask(0o022); os.umask(mask)
torch.manual_seed(7)
before = {"backend": repr(dict.__getitem__(matplotlib.rcParams, "backend")), "umask": mask,
          "rng": torch.random.get_rng_state().tolist()[:64]}
import netspec
for m in [m for m in pkgutil.walk_packages(netspec.__path__, "netspec.") if m.name != "netspec.__main__"]:
    importlib.import_module(m.name)
spec = netspec.load(sys.argv[1], overrides={"train.epochs": 1, "data.validation": 200})
spec.build()
netspec.train(spec, data_dir=sys.argv[2], out=sys.argv[3], limit=300, progress=False)
mask2 = os.umask(0o022); os.umask(mask2)
after = {"backend": repr(dict.__getitem__(matplotlib.rcParams, "backend")), "umask": mask2,
         "rng": torch.random.get_rng_state().tolist()[:64]}
print(json.dumps({"same": before == after, "pyplot": "matplotlib.pyplot" in sys.modules,
                  "before": before["backend"], "after": after["backend"]}))
"""


@pytest.mark.slow
def test_importing_and_using_netspec_changes_nothing_global(fake_data, tmp_path):
    done = subprocess.run([sys.executable, "-c", CHECK_GLOBALS, str(SPECS / "mlp.yaml"), str(fake_data), str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MPLBACKEND": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"], result
    assert not result["pyplot"]  # figures come from matplotlib.figure.Figure, never pyplot


@pytest.mark.slow
def test_the_notebook_runs_end_to_end_in_a_real_kernel(tmp_path):
    import nbclient  # pinned in the dev extra: CI runs this notebook through a real kernel
    import nbformat

    nb = nbformat.read(ROOT / "docs" / "netspec.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    def output_of(marker: str) -> str:
        [cell] = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
        return "".join(o.get("text", "") + "".join(o.get("data", {}).values()) for o in cell.outputs)

    assert output_of("build(logits=True)").split() == ["Softmax", "Linear", "True"]  # build() vs build(logits=True)
    assert "<table>" in output_of("spec.summary()")
    assert "epoch   3" in output_of("netspec.train(spec")
    assert "model.layers[1]: unknown layer 'Lambda'" in output_of("except netspec.SpecError")
    assert output_of("again.predict(").startswith("[0, 4, 7]")  # predictions on the drawn digits
    own = output_of("dataset\": \"imagefolder")  # a folder of PNGs: classes and shape from the folder, then predictions
    assert own.startswith("3 classes; (3, 16, 16)") and "['blue', 'green', 'red']" in own  # sorted folder names
    assert own.count("'blue')") == 3  # the blue squares predicted blue


def test_a_reopened_run_evaluates_on_the_data_it_used(fake_data, tmp_path, monkeypatch):
    """No data folder given: the run's own (recorded in run.json), never a download into ~/.cache."""
    monkeypatch.delenv("NETSPEC_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty default cache: a download would be tried there
    spec = netspec.load((SPECS / "mlp.yaml").read_text().replace("rules: mnist-mlp\n", "").split("\nsweep:")[0],
                        overrides={"train.epochs": 1, "data.validation": 100, "train.schedule.name": "none"})
    run = netspec.train(spec, data_dir=fake_data, out=tmp_path / "r", limit=200, progress=False)
    again = netspec.open_run(run.path).evaluate()
    assert again.test_accuracy == run.metrics.test_accuracy
    assert not (tmp_path / "home" / ".cache" / "netspec").exists()


def test_sweep_compare_data_and_forward_in_a_notebook_equal_the_commands(fake_data, tmp_path, write_spec, capsys):
    """The calls the CLI makes are the API's: a notebook gets the same sweep folder, comparison,
    dataset facts and layer outputs as the terminal."""
    from typer.testing import CliRunner

    from netspec.cli import app
    from conftest import TINY_SWEEP

    spec = write_spec(TINY_SWEEP)
    done = netspec.sweep(spec, out=tmp_path / "s", data_dir=fake_data)
    assert [r["state"] for r in done.rows] == ["complete", "complete"] and not done.draft
    assert {r["settings"]["train.batch_size"] for r in done.rows} == {32, 64}
    assert done.rows[0]["val_accuracy"] >= done.rows[1]["val_accuracy"]  # the best first
    best = done.best()
    assert best.metrics.final_val_accuracy == done.rows[0]["val_accuracy"]
    printed = capsys.readouterr().out
    assert "trial 0: train.batch_size=" in printed and "trial 1 complete: val acc" in printed
    for name in ("sweep.md", "leaderboard.csv", "trials.png", "settings.png"):
        assert (tmp_path / "s" / name).is_file(), name
    assert len(netspec.sweep(spec, out=tmp_path / "s", data_dir=fake_data, progress=False).rows) == 2  # continued: done

    a, b = sorted((tmp_path / "s").glob("trial-*"))
    result = netspec.compare(a, b, figure=tmp_path / "c.png")
    assert list(result.settings) == ["train.batch_size"] and sorted(result.settings["train.batch_size"]) == [32, 64]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--format", "json"])
    assert json.loads(r.output) == {**result.to_dict(), "figure": None}

    facts = netspec.data_facts("mnist", data_dir=fake_data, validation=100, samples=tmp_path / "g.png")
    assert dict(facts["facts"])["training / validation"].startswith("1,100 / 100")  # 1,200 synthetic, 100 held out
    assert sum(train for _, train, _ in facts["class_counts"]) == 1200 and (tmp_path / "g.png").is_file()
    r = CliRunner().invoke(app, ["data", "mnist", "--data-dir", str(fake_data), "--validation", "100"])
    assert r.exit_code == 0 and "1,100 / 100" in r.output

    inputs = tmp_path / "x.yaml"
    inputs.write_text("- [[[1, 2], [3, 4]]]\n")
    pool = netspec.load("name: p\ndata: {input_shape: [1, 2, 2], dataset: none}\nmodel:\n  layers:\n    - AvgPool2d: {kernel_size: 2}\n")
    [out] = pool.forward(inputs)
    assert out.flatten().tolist() == [2.5]
