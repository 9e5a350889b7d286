"""Messages, the linter and the CLI's manners (issue 13): exact texts a user reads."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from conftest import check_file
from netspec.cli import app
from netspec.errors import SpecError

from conftest import SPECS

cli = CliRunner()


def problems(path, **kw):
    with pytest.raises(SpecError) as e:
        check_file(path, **kw)
    return e.value.problems


# --- validation messages ---------------------------------------------------------

def test_set_quotes_what_the_user_typed_and_takes_1e_3():
    checked = check_file(SPECS / "mlp.yaml", overrides=("train.optimizer.lr=1e-3",))
    assert checked.spec.train.optimizer.lr == 0.001
    [p] = problems(SPECS / "mlp.yaml", overrides=("train.epochs=ten",))
    assert p.file == "--set train.epochs=ten" and p.message == "'ten' is not a whole number"
    [p] = problems(SPECS / "mlp.yaml", overrides=("train.optimizer.lr=fast",))
    assert p.message == "'fast' is not a number"


def test_every_unknown_key_of_one_mapping_is_reported(write_spec):
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 10}}]\n"
                      "train: {epoch: 3, learning_rate: 0.01}\n")
    got = {(p.path, p.line, p.col, p.message, p.hint.split(";")[0].split(" known")[0]) for p in problems(path)}
    assert got == {("train.epoch", 5, 9, "unknown key 'epoch'", "did you mean 'epochs'?"),
                   ("train.learning_rate", 5, 19, "unknown key 'learning_rate'", "it is written train.optimizer.lr")}


def test_missing_required_layer_is_a_sentence(tmp_path):
    rules = tmp_path / "tight.yaml"
    rules.write_text("required_layers: [Dropout]\n")  # no name: the file's name is used
    [p] = problems(SPECS / "mlp.yaml", imposed=(str(rules),),
                   overrides=("model.layers=[{Linear: {out_features: 10}}]",))
    assert p.message == "rules 'tight' require a Dropout layer, and the model has none"
    assert p.hint == "add - Dropout to model.layers where it belongs"


def test_arguments_indented_beside_their_layer_are_one_clear_problem(write_spec):
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n    - Linear:\n      out_features: 32\n"
                      "    - ReLU\n    - Linear: {out_features: 10}\n")
    [p] = problems(path)
    assert (p.line, p.path) == (6, "model.layers[0].out_features")
    assert p.message == "out_features is an argument of Linear but is written beside it, not under it"
    assert p.hint.startswith("indent out_features under Linear")


def test_summary_of_a_spec_over_budget_shows_the_table_and_the_failing_rule():
    r = cli.invoke(app, ["summary", str(SPECS / "cnn.yaml"), "--set", "model.layers.0.Conv2d.out_channels=64"])
    assert r.exit_code == 1
    assert "conv2d_0" in r.output and "Trainable params: 63,674" in r.output  # the table, to find what to cut
    assert re.search(r"params\s+│\s+63,674\s+│\s+< 50,000\s+│\s+✗", r.output)
    assert "rules 'mnist-cnn' require < 50,000" in r.output
    j = cli.invoke(app, ["summary", str(SPECS / "cnn.yaml"), "--set", "model.layers.0.Conv2d.out_channels=64",
                         "--format", "json"])
    [data] = json.loads(j.stdout)
    assert j.exit_code == 1 and data["valid"] is False and data["params"] == 63_674 and data["trainable_params"] == 63_674 and data["errors"]


# --- the linter ------------------------------------------------------------------

LINT_CASES = {
    "activation-after-output": ("[Flatten, {Linear: {out_features: 32}}, ReLU, {Linear: {out_features: 10}}, ReLU, Softmax]", 4),
    "linear-after-linear": ("[Flatten, {Linear: {out_features: 32}}, {Linear: {out_features: 10}}]", 2),
    "dropout-after-output": ("[Flatten, {Linear: {out_features: 32}}, ReLU, {Linear: {out_features: 10}}, {Dropout: {p: 0.5}}]", 4),
    "batchnorm-after-output": ("[Flatten, {Linear: {out_features: 32}}, ReLU, {Linear: {out_features: 10}}, BatchNorm1d]", 4),
    "pool-to-1x1": ("[{Conv2d: {out_channels: 4, kernel_size: 3}}, {MaxPool2d: {kernel_size: 26}}, "
                    "{Conv2d: {out_channels: 4, kernel_size: 1}}, Flatten, {Linear: {out_features: 10}}]", 1),
    "small-receptive-field": ("[{Conv2d: {out_channels: 4, kernel_size: 3}}, ReLU, Flatten, {Linear: {out_features: 10}}]", 2),
    "inferred-argument": ("[Flatten, {Linear: {in_features: 784, out_features: 10}}]", 1),
}

STANDARD_CNNS = {  # small CNNs as courses and framework examples write them: none should be warned about
    "keras-mnist": "[{Conv2d: {out_channels: 32, kernel_size: 3}}, ReLU, {Conv2d: {out_channels: 64, kernel_size: 3}}, "
                   "ReLU, {MaxPool2d: {kernel_size: 2}}, Flatten, {Linear: {out_features: 10}}]",
    "two-conv-two-pool": "[{Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}}, ReLU, {MaxPool2d: {kernel_size: 2}}, "
                         "{Conv2d: {out_channels: 16, kernel_size: 3, padding: 1}}, ReLU, {MaxPool2d: {kernel_size: 2}}, "
                         "Flatten, {Linear: {out_features: 10}}]",
    "lenet-5": "[{Conv2d: {out_channels: 6, kernel_size: 5, padding: 2}}, Tanh, {AvgPool2d: {kernel_size: 2}}, "
               "{Conv2d: {out_channels: 16, kernel_size: 5}}, Tanh, {AvgPool2d: {kernel_size: 2}}, Flatten, "
               "{Linear: {out_features: 120}}, Tanh, {Linear: {out_features: 84}}, Tanh, {Linear: {out_features: 10}}]",
    "one-conv5-pool": "[{Conv2d: {out_channels: 16, kernel_size: 5}}, ReLU, {MaxPool2d: {kernel_size: 2}}, Flatten, "
                      "{Linear: {out_features: 10}}]",
    "conv-conv-no-pool": "[{Conv2d: {out_channels: 8, kernel_size: 3}}, ReLU, {Conv2d: {out_channels: 8, kernel_size: 3}}, "
                         "ReLU, Flatten, {Linear: {out_features: 10}}]",
}


@pytest.mark.parametrize("name", list(STANDARD_CNNS))
def test_ordinary_small_cnns_get_no_receptive_field_warning(write_spec, name):
    text = f"name: t\ndata: {{input_shape: [1, 28, 28]}}\nmodel:\n  layers: {STANDARD_CNNS[name]}\n"
    assert check_file(write_spec(text)).warnings == ()


@pytest.mark.parametrize("name", list(LINT_CASES))
def test_each_lint_warning(write_spec, name):
    layers, index = LINT_CASES[name]
    text = f"name: t\ndata: {{input_shape: [1, 28, 28]}}\nmodel:\n  layers: {layers}\n"
    checked = check_file(write_spec(text))
    assert [(w.path, w.message.rsplit(" [", 1)[1]) for w in checked.warnings] == [(f"model.layers[{index}]", name + "]")]
    assert checked.warnings[0].line == 4
    # silenced by name
    silenced = check_file(write_spec(text + f"lint: {{ignore: [{name}]}}\n", "quiet.yaml"))
    assert silenced.warnings == ()
    # validate shows it with its line; --format json carries it
    r = cli.invoke(app, ["validate", str(write_spec(text, "again.yaml"))])
    assert r.exit_code == 0 and "warning:" in r.output and f"[{name}]" in r.output and "again.yaml:4:" in r.output
    [j] = json.loads(cli.invoke(app, ["validate", str(write_spec(text, "j.yaml")), "--format", "json"]).stdout)
    assert [(w["path"], w["code"]) for w in j["warnings"]] == [(f"model.layers[{index}]", f"lint/{name}")]


def test_shipped_specs_produce_no_warning():
    for path in list(SPECS.glob("*.yaml")) + list((SPECS / "fundamentals").glob("*.yaml")):
        assert check_file(path).warnings == (), path.name


# --- the CLI's manners -------------------------------------------------------------

COMMANDS = ["validate", "summary", "schema", "run", "eval", "attention", "data", "forward", "sweep", "compare", "export",
            "predict"]


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_has_no_stray_labels(command):
    args = ([command] if command else []) + ["-h"]
    r = cli.invoke(app, args, terminal_width=100, prog_name="netspec")
    assert r.exit_code == 0 and "Usage: netspec" in r.output
    assert "<bool>" not in r.output and "<list[" not in r.output and "<int>" not in r.output
    assert not re.search(r"\{\w+\}", r.output)  # no parameter name in braces, e.g. {specs}
    assert r.output == cli.invoke(app, args[:-1] + ["--help"], terminal_width=100, prog_name="netspec").output


def test_version_and_completion():
    from netspec import __version__

    r = cli.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"netspec {__version__}"
    assert "--install-completion" in cli.invoke(app, ["-h"]).output


def test_data_writes_nothing_unasked(fake_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli.invoke(app, ["data", "--data-dir", str(fake_data), "--validation", "200"])
    assert r.exit_code == 0 and "1,200 images" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    r = cli.invoke(app, ["data", "--data-dir", str(fake_data), "--validation", "200", "--samples", "grid.png"])
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


# --- figures ------------------------------------------------------------------------

def test_figures_keep_legends_off_the_data_and_label_their_axes():
    import torch

    from netspec.families.vit import ViTSpec
    from netspec.families.vit_torch import ViT, record_attention
    from netspec.report import plots
    from netspec.runner.trainer import EpochStats

    fig = plots.loss_figure([EpochStats(1, 0.5, 0.8, 0.4, 0.85, 1.0, 0.001)], "one epoch")
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1  # the legend sits below the axes
    assert all(line.get_marker() not in (None, "None", "") for a in fig.axes for line in a.get_lines())  # one epoch shows
    torch.manual_seed(0)
    vit = ViT(ViTSpec(patch_size=7, dim=16, depth=1, heads=2, dim_head=4, mlp_dim=8, dropout=0.0),
              image_shape=(1, 28, 28), num_classes=10).eval()
    with torch.no_grad(), record_attention(vit) as maps:
        vit(torch.randn(1, 1, 28, 28))
    fig = plots.attention_figure(torch.zeros(28, 28).numpy(), maps[0][0].numpy(), "t", grid=(4, 4))
    labelled = [a for a in fig.axes if a.get_ylabel() == "query token"]
    assert labelled and [t.get_text() for t in labelled[0].get_yticklabels()] == ["CLS", "r0", "r1", "r2", "r3"]
    assert any(a.get_xlabel() == "key token (of 17)" for a in fig.axes)
    rows = [{"trial": i, "state": "complete", "val_accuracy": 0.98 + i / 1000, "test_accuracy": None, "settings": {}}
            for i in range(3)]
    fig = plots.trials_figure(rows)
    lo, hi = fig.axes[0].get_ylim()
    assert lo <= 0.98 and hi >= 0.982 and fig.axes[0].get_title().startswith("sweep:") and fig.axes[0].get_legend() is None


def test_one_round_reports_rule_findings_with_schema_errors_and_names_in_any_case(write_spec):
    """A spec with a typo, a fixed setting broken and a required layer missing: all three in the
    first round (the rules need no valid spec to see them); `Adam` reads as adam."""
    from netspec.errors import SpecError

    text = ("name: t\nrules: mnist-cnn\ndata: {input_shape: [1, 28, 28]}\nmodel:\n  layers:\n"
            "    - Conv2d: {out_channels: 8, kernel_size: 3}\n    - Relu\n    - Flatten\n    - Dropout\n"
            "    - Linear: {out_features: 10}\ntrain:\n  optimizer: {name: Adam}\n  epochs: 5\n")
    with pytest.raises(SpecError) as e:
        check_file(write_spec(text))
    found = {(p.line, p.code) for p in e.value.problems}
    assert found == {(7, "schema/unknown-layer"), (13, "rule/fixed"), (5, "rule/required-layers")}, e.value.problems
    fixed = check_file(write_spec(text.replace("- Relu", "- MaxPool2d: {kernel_size: 2}\n    - BatchNorm2d").replace("epochs: 5", "epochs: 10"), "ok.yaml"))
    assert fixed.spec.train.optimizer.name == "adam"


@pytest.mark.parametrize("text, line, message, hint", [
    ("name: t\nmodel:\n  layers:\n    - Flatten\n   - Linear: {out_features: 10}\n", 5,
     "this line is indented 3 spaces; the list items above it use 4", "same column"),
    ("name: t\nmodel:\n  layers:\n    - Flatten\n     - Linear: {out_features: 10}\n", 5,
     "this line is indented 5 spaces; the list items above it use 4", "same column"),
    ("name: t\nmodel:\n  layers:\n    - Flatten\n\t- ReLU\n", 5,
     "a tab in the indentation: YAML indents with spaces only", "replace the tab with spaces"),
    ("name: t\ntrain:\n  epochs: 3\nbatch_size: 32\nmodel:\n  layers: [Flatten]\n", 4,
     "unknown key 'batch_size'", "'batch_size' is a key of train: move it under train:"),
    ("name: t\nmodel:\n  layers: [Flatten]\ntrain:\n  shift: 2\n", 5,
     "unknown key 'shift'", "'shift' is a key of train.augment: move it under augment:"),
])
def test_indentation_slips_are_said_as_what_happened(write_spec, text, line, message, hint):
    from netspec.errors import SpecError

    with pytest.raises(SpecError) as e:
        check_file(write_spec(text))
    [p] = [q for q in e.value.problems if q.line == line]  # the checks past the schema's answer too
    assert (p.line, p.message) == (line, message) and hint in p.hint, p


def test_pytorch_sizes_are_accepted_when_right_and_explained_when_wrong(write_spec):
    from netspec.errors import SpecError

    text = ("name: t\ndata: {input_shape: [1, 28, 28]}\nmodel:\n  layers:\n"
            "    - Conv2d: {in_channels: 1, out_channels: 8, kernel_size: 3}\n    - BatchNorm2d: {num_features: 8}\n"
            "    - Flatten\n    - Linear: {in_features: 5408, out_features: 10}\n")
    checked = check_file(write_spec(text))
    assert sorted(w.line for w in checked.warnings if w.code == "lint/inferred-argument") == [5, 6, 8]
    assert checked.analysis.params == 80 + 16 + 5408 * 10 + 10
    with pytest.raises(SpecError) as e:
        check_file(write_spec(text.replace("in_features: 5408", "in_features: 1568"), "bad.yaml"))
    [p] = e.value.problems
    assert p.line == 8 and p.path == "model.layers[3].Linear.in_features"
    assert "netspec infers in_features = 5408 from the layer before" in p.message
    assert p.hint == "remove in_features (netspec fills it in) or make it 5408"


def test_a_wrong_output_size_points_at_the_last_linear_with_the_fix(write_spec):
    from netspec.errors import SpecError

    with pytest.raises(SpecError) as e:
        check_file(write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n    - Linear: {out_features: 64}\n"
                              "    - ReLU\n    - Linear: {out_features: 9}\n    - Softmax\n"))
    [p] = e.value.problems
    assert p.line == 7 and p.hint == "make the last Linear's out_features 10" and p.code == "output-size"
