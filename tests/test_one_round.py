"""Issue 34: every mistake of a spec in one round, hints that respect the rules in force, and
the messages a new student meets (each test fails on 5ae2471)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import check_file
from netspec.errors import SpecError

ALLOWED_MLP = "allowed: Concat, Dropout, Linear, ReLU, Repeat, Residual, Softmax"

MLP = """name: mlp
rules: mnist-mlp
data:
  dataset: mnist
  input_shape: [784]
model:
  layers:
    - Linear: {out_features: 250}
    - Tanh
    - Lineer: {out_features: 100}
    - Softmax
    - Linear: {out_features: 100}
    - ReLU
    - Linear: {out_features: 20}
train:
  optimizer: {name: rmsprop, lr: 0.001}
  epochs: 5
  shuffle: true
"""

BLOCKS = """name: blocks
rules: mnist-cnn
data:
  dataset: mnist
  input_shape: [1, 28, 28]
model:
  layers:
    - Conv2d: {out_channels: 16, kernel_size: 3, padding: 1}
    - BatchNorm2d
    - Residual:
        shortcut: auto
        layers:
          - Conv2d: {out_channels: 32, kernel_size: 3}
          - BatchNorm2d
          - ReLU
    - Concat:
        branches:
          - - Conv2d: {out_channels: 8, kernel_size: 1}
          - - Conv2d: {out_channels: 8, kernel_size: 3}
    - Residual:
        layers:
          - Conv2d: {out_channels: 16, kernel_size: 3, padding: 1, in_channels: 8}
    - MaxPool2d: {kernel_size: 2}
    - Concat:
        branches:
          - - Conv2d: {out_channels: 8, kernel_size: 1}
          - - MaxPool2d: {kernel_size: 16}
    - Flatten
    - Dropout: {p: 0.2}
    - Linear: {out_features: 10}
train: {epochs: 10, batch_size: 32}
"""

ASSUMED = " (found taking the block at line 10 to output (32, 26, 26), as its layers do; check again once it is fixed)"


def problems(tmp_path: Path, text: str, name: str = "s.yaml", **kw) -> list:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        check_file(path, **kw)
    return e.value.problems


def test_an_mlp_spec_with_schema_rule_and_shape_mistakes_is_reported_in_one_round(tmp_path):
    got = [(p.line, p.col, p.message, p.hint) for p in problems(tmp_path, MLP)]
    assert got == [
        (7, 3, "hidden units is at least 350; rules 'mnist-mlp' require <= 200",
         "hidden units: out_features of every Linear but the last"),
        (9, 7, "layer 'Tanh' is not allowed by the rules", ALLOWED_MLP),
        (10, 7, "unknown layer 'Lineer'", f"did you mean 'Linear'? {ALLOWED_MLP}; once the shapes are known, "
                                          "netspec checks the parameter and memory limits"),
        (11, 7, "Softmax between layers turns the features into probabilities that sum to 1 before the Linear "
                "after it: a hidden layer wants an activation", "use ReLU here; Softmax belongs at the end, if anywhere"),
        (14, 7, "the last Linear outputs 20 features but mnist has 10 classes", "make the last Linear's out_features 10"),
        (16, 21, "'rmsprop' is not one of adam, adamw, sgd", ""),
        (18, 3, "unknown key 'shuffle'", "did you mean 'schedule'? known keys: optimizer, schedule, epochs, batch_size, "
                "eval_batch_size, seed, device, label_smoothing, augment, precision, channels_last, compile, "
                "fused_attention, deterministic, sync_batchnorm"),
    ]


def test_the_same_mlp_once_the_schema_is_satisfied_has_nothing_new(tmp_path):
    fixed = (MLP.replace("    - Tanh\n", "    - ReLU\n").replace("Lineer", "Linear")
             .replace("rmsprop", "adam").replace("  shuffle: true\n", ""))
    got = [(p.line, p.message) for p in problems(tmp_path, fixed)]
    assert got == [(7, "hidden units is 450; rules 'mnist-mlp' require <= 200"),
                   (11, "Softmax between layers turns the features into probabilities that sum to 1 before the Linear "
                        "after it: a hidden layer wants an activation"),
                   (14, "the model outputs shape (20) but mnist has 10 classes")]


def test_a_spec_with_residual_and_concat_blocks_shows_every_shape_error_in_one_round(tmp_path):
    got = [(p.line, p.col, p.message, p.hint) for p in problems(tmp_path, BLOCKS)]
    assert got == [
        (10, 7, "Residual: no 1x1 projection turns (16, 28, 28) into (32, 26, 26): the Conv2d at line 13 "
                "(kernel_size 3, padding 0) shrinks 28x28 to 26x26",
         "give that Conv2d padding: 1 so it keeps 28x28; once the shapes are known, netspec checks "
         "params < 50,000 (rules 'mnist-cnn'), the parameter and memory limits"),
        (16, 7, "Concat joins its branches on channels, so the rest of their shapes must agree: branch 0 (line 18) "
                "ends in (8, 26, 26), branch 1 (line 19) ends in (8, 24, 24)" + ASSUMED,
         "make every branch end in the same height and width (pooling, stride or padding)"),
        (22, 81, "netspec infers in_channels = 16 from the layer before (it outputs (16, 26, 26)); 8 is stated" + ASSUMED,
         "remove in_channels (netspec fills it in) or make it 16"),
        (27, 15, "in branch 1: MaxPool2d kernel 16 (dilation 1) does not fit input size 13 with padding 0" + ASSUMED,
         "the block's input is (16, 13, 13)"),
    ]


def test_a_residual_whose_convolution_shrinks_the_map_names_that_layer_and_its_padding(tmp_path):
    text = BLOCKS.split("    - Concat:")[0] + "    - MaxPool2d: {kernel_size: 4}\n    - Flatten\n    - Dropout\n" \
        "    - Linear: {out_features: 10}\n" \
        "train: {epochs: 10, batch_size: 32}\n"
    [p] = problems(tmp_path, text)
    assert (p.line, p.message) == (10, "Residual: no 1x1 projection turns (16, 28, 28) into (32, 26, 26): the Conv2d "
                                       "at line 13 (kernel_size 3, padding 0) shrinks 28x28 to 26x26")
    assert p.hint.startswith("give that Conv2d padding: 1 so it keeps 28x28;") and "shortcut: auto" not in p.hint
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(text.replace("{out_channels: 32, kernel_size: 3}", "{out_channels: 32, kernel_size: 3, padding: 1}"))
    check_file(fixed)  # padding: 1 is the whole fix: shortcut: auto projects 16 -> 32 channels


def test_hints_respect_the_rules_in_force_a_flat_input_rather_than_a_refused_flatten(tmp_path):
    text = ("name: flat\nrules: mnist-mlp\ndata:\n  dataset: mnist\n  input_shape: [28, 28]\nmodel:\n  layers:\n"
            "    - Linear: {out_features: 100}\n    - ReLU\n    - Linear: {out_features: 10}\n")
    [p] = problems(tmp_path, text)
    assert (p.line, p.message, p.hint) == (
        10, "the model outputs shape (28, 10) but mnist has 10 classes",
        "the rules allow no Flatten: give the model flat vectors, data.input_shape: [784] (not [28, 28])")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(text.replace("[28, 28]", "[784]"))
    check_file(fixed)


def test_a_fixed_setting_says_what_draft_waives(tmp_path):
    text = ("name: t\nrules: mnist-cnn\nmodel:\n  layers: [Conv2d: {out_channels: 4, kernel_size: 3}, BatchNorm2d, "
            "ReLU, MaxPool2d: {kernel_size: 2}, Flatten, Dropout, Linear: {out_features: 10}]\ntrain:\n  epochs: 1\n")
    [p] = problems(tmp_path, text)
    assert (p.line, p.message, p.hint) == (
        6, "train.epochs is 1, but it is fixed at 10 by rules 'mnist-cnn'",
        "the rules fix train.epochs at 10; for a quick try, `netspec run --draft` waives the rules' fixed settings "
        "(train.optimizer.name, train.epochs, train.batch_size), in the file or from --set: every other rule still "
        "applies, and the run is marked 'draft: not gradable'")
    assert check_file(tmp_path / "s.yaml", draft=True).draft


def test_pytorch_habits_get_the_netspec_spelling(tmp_path):
    text = ("name: five\ndata:\n  dataset: mnist\nmodel:\n  layers:\n    - Conv2d: {out_channels: 8, kernel_size: 3}\n"
            "    - AdaptiveAvgPool2d: {output_size: 1}\n    - Flatten\n    - Dropout: 0.1\n"
            "    - Linear: {out_features: 10}\ntrain:\n  device: gpu\n")
    got = [(p.line, p.message, p.hint) for p in problems(tmp_path, text)]
    assert got == [
        (9, "'0.1' is not a mapping", "arguments go in a mapping: write {Dropout: {p: 0.1}}"),
        (12, "'gpu' is not a device: use auto, cpu, cuda, cuda:N (the GPU with index N) or mps",
         "for an NVIDIA GPU write cuda (or cuda:1 for the second)"),
    ]
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(text.replace("Dropout: 0.1", "Dropout: {p: 0.1}").replace("gpu", "cuda"))
    assert check_file(fixed).analysis.output_shape == (10,)  # AdaptiveAvgPool2d(output_size=1), PyTorch's call
    [p] = problems(tmp_path, text.replace("output_size: 1", "output_size: 2").replace("0.1", "{p: 0.1}")
                   .replace("gpu", "cpu"))
    assert (p.line, p.message) == (7, "2 is not one of 1") and "global average pooling" in p.hint


def test_the_rubric_reports_a_forbidden_layer_at_its_own_line(tmp_path):
    from netspec.grading.rubric import load_rubric
    from netspec.grading.verdict import Entry, judge

    (tmp_path / "rubric.yaml").write_text("name: hw\nrules: [mnist-mlp]\npoints:\n  valid: 10\n  rules: 5\n")
    spec = tmp_path / "tanh.yaml"
    spec.write_text("name: tanh\ndata:\n  dataset: mnist\n  input_shape: [784]\nmodel:\n  layers:\n"
                    "    - Linear: {out_features: 100}\n    - Tanh\n    - Linear: {out_features: 50}\n"
                    "    - Sigmoid\n    - Linear: {out_features: 10}\n")
    verdict = judge(Entry("tanh", str(spec), spec=str(spec)), load_rubric(tmp_path / "rubric.yaml"))
    got = [(p.line, p.col, p.message, p.hint) for p in verdict.problems if p.code == "rule/layers"]
    allowed = "allowed: Linear, ReLU, Softmax, Dropout"
    assert got == [(8, 7, "layer 'Tanh' is not allowed by rules 'mnist-mlp'", allowed),
                   (10, 7, "layer 'Sigmoid' is not allowed by rules 'mnist-mlp'", allowed)]


def test_a_draft_run_is_named_a_draft_not_refused_by_todays_rules(fake_data, tmp_path):
    from conftest import SPECS, run
    from netspec.runner.reopen import load_run

    spec = tmp_path / "cnn.yaml"
    spec.write_text((SPECS / "cnn-small.yaml").read_text())
    checked = check_file(spec, overrides=("train.epochs=1", "data.validation=200"), draft=True)
    run(checked, out=tmp_path / "r", data_dir=fake_data, limit=300)
    _, _, _, notes = load_run(tmp_path / "r")
    assert notes == ["a draft run (`--draft`: not gradable); it waived train.epochs (1; fixed at 10 by 'mnist-cnn')"]
