"""Residual, Concat and Repeat blocks in the layer list (issue 19): shapes, shortcuts, errors at the
inner layer's line, budgets, rules and lints through blocks, sweeps into blocks, state_dict names,
ONNX and torchinfo agreeing with netspec's numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import netspec
from netspec.check.analysis import module_names
from conftest import check_file
from netspec.builder.model import build_model
from netspec.cli import app
from netspec.errors import SpecError
from test_validate import assert_rows_match_module

from conftest import SPECS
from conftest import ctrl_c

cli = CliRunner()
BLOCK_SPECS = ["resnet-mnist.yaml", "resnet20-cifar10.yaml", "inception-mnist.yaml"]

HEAD = """name: t
data: {dataset: none, input_shape: [1, 28, 28], classes: 10}
model:
  layers:
"""


def spec_text(body: str, head: str = HEAD) -> str:
    return head + body


def problems(write_spec, text):
    with pytest.raises(SpecError) as e:
        check_file(write_spec(text))
    return e.value.problems


def test_residual_shortcuts_identity_and_projection(write_spec):
    checked = check_file(write_spec(spec_text("""\
    - Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
    - Residual:
        layers:
          - Conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
    - Residual:
        layers:
          - Conv2d: {out_channels: 16, kernel_size: 3, padding: 1, stride: 2}
          - BatchNorm2d
    - Flatten
    - Linear: {out_features: 10}
""")))
    rows = checked.analysis.rows
    first, second = [r for r in rows if r.kind == "Residual"]
    assert first.shape == (8, 28, 28) and first.params == 8 * 8 * 9 + 8  # identity: no shortcut parameters
    assert second.shape == (16, 14, 14)
    shortcut = next(r for r in rows if r.kind == "shortcut")
    assert shortcut.layer == "Conv2d(1x1, stride=2) + BatchNorm2d" and shortcut.params == 8 * 16 + 2 * 16
    assert second.params == (8 * 16 * 9 + 16) + 2 * 16 + shortcut.params
    model = build_model(checked.spec)
    assert isinstance(model.residual_1.shortcut, torch.nn.Identity)
    assert model.residual_2.shortcut.conv.stride == (2, 2)
    assert checked.analysis.params == sum(p.numel() for p in model.parameters())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():  # output = layers(x) + shortcut(x)
        h = model.conv2d_0(x)
        assert torch.allclose(model.residual_1(h), model.residual_1.layers(h) + h)
    assert_rows_match_module(checked, model)


def test_feature_residual_uses_a_linear_projection(write_spec):
    checked = check_file(write_spec(spec_text("""\
    - Flatten
    - Residual: {layers: [{Linear: {out_features: 32}}, ReLU]}
    - Linear: {out_features: 10}
""")))
    model = build_model(checked.spec)
    assert isinstance(model.residual_1.shortcut, torch.nn.Linear) and model.residual_1.shortcut.bias is None
    assert checked.analysis.params == sum(p.numel() for p in model.parameters())
    assert checked.analysis.hidden_units == 32


def test_a_stated_identity_shortcut_with_other_shapes_is_an_error_at_the_block(write_spec):
    [p] = problems(write_spec, spec_text("""\
    - Residual:
        shortcut: identity
        layers:
          - Conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
    - Flatten
    - Linear: {out_features: 10}
"""))
    assert p.line == 6 and "(1, 28, 28)" in p.message and "(4, 28, 28)" in p.message
    assert p.path == "model.layers[0].Residual.shortcut"


def test_a_shortcut_no_projection_can_make_names_both_shapes(write_spec):
    [p] = problems(write_spec, spec_text("""\
    - Residual:
        layers:
          - Conv2d: {out_channels: 4, kernel_size: 3, stride: 2}
    - Flatten
    - Linear: {out_features: 10}
"""))  # 28 -> 13 by a 3x3 stride-2 convolution without padding: no 1x1 stride gives 13
    assert "(1, 28, 28)" in p.message and "(4, 13, 13)" in p.message and p.line == 5


def test_concat_joins_channels_and_names_each_branch_shape_and_line(write_spec):
    checked = check_file(write_spec(spec_text("""\
    - Concat:
        branches:
          - [{Conv2d: {out_channels: 4, kernel_size: 1}}]
          - [{Conv2d: {out_channels: 6, kernel_size: 3, padding: 1}}, ReLU]
    - Flatten
    - Linear: {out_features: 10}
""")))
    concat = checked.analysis.rows[0]
    assert concat.shape == (10, 28, 28) and concat.params == (4 + 4) + (6 * 9 + 6)
    model = build_model(checked.spec)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        joined = model.concat_0(x)
        assert torch.equal(joined[:, :4], model.concat_0.branches[0](x))
    [p] = problems(write_spec, spec_text("""\
    - Concat:
        branches:
          - - Conv2d: {out_channels: 4, kernel_size: 1}
          - - MaxPool2d: {kernel_size: 2}
    - Flatten
    - Linear: {out_features: 10}
"""))
    assert p.line == 5 and "branch 0 (line 7) ends in (4, 28, 28)" in p.message
    assert "branch 1 (line 8) ends in (1, 14, 14)" in p.message


def test_repeat_makes_copies_with_their_own_weights(write_spec):
    checked = check_file(write_spec(spec_text("""\
    - Conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
    - Repeat:
        times: 3
        layers:
          - Residual: {layers: [{Conv2d: {out_channels: 4, kernel_size: 3, padding: 1}}, BatchNorm2d]}
          - ReLU
    - Flatten
    - Linear: {out_features: 10}
""")))
    repeat = checked.analysis.rows[1]
    assert repeat.kind == "Repeat" and repeat.params == 3 * (4 * 4 * 9 + 4 + 8)
    model = build_model(checked.spec)
    keys = list(model.state_dict())
    assert "repeat_1.0.residual_0.layers.conv2d_0.weight" in keys
    assert "repeat_1.2.residual_0.layers.batchnorm2d_1.running_mean" in keys
    w0, w2 = model.repeat_1[0].residual_0.layers.conv2d_0.weight, model.repeat_1[2].residual_0.layers.conv2d_0.weight
    assert w0.data_ptr() != w2.data_ptr() and not torch.equal(w0, w2)  # separate, separately initialised
    assert_rows_match_module(checked, model)
    # a copy that cannot take what the previous copy outputs is named
    [p] = problems(write_spec, spec_text("""\
    - Repeat:
        times: 3
        layers:
          - Conv2d: {out_channels: 2, kernel_size: 13}
    - Flatten
    - Linear: {out_features: 10}
"""))
    assert "in copy 3 of 3: Conv2d kernel 13" in p.message and p.line == 8


def test_errors_inside_blocks_are_at_the_inner_layers_line(write_spec):
    text = spec_text("""\
    - Residual:
        layers:
          - Conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
          - Relu
          - Concat:
              branches:
                - [{Conv2d: {out_channels: four, kernel_size: 1}}]
                - [Identity]
    - Flatten
    - Linear: {out_features: 10}
""")
    probs = problems(write_spec, text)
    by_line = {p.line: p for p in probs}
    assert "unknown layer 'Relu'" in by_line[8].message and "did you mean 'ReLU'" in by_line[8].hint
    assert by_line[8].path == "model.layers[0].Residual.layers[1]"
    assert "'four' is not a whole number" in by_line[11].message
    assert by_line[11].path == "model.layers[0].Residual.layers[2].Concat.branches[1][0].Conv2d.out_channels".replace(
        "branches[1]", "branches[0]")


def test_a_bare_block_name_and_a_misindented_argument_inside_a_block(write_spec):
    probs = problems(write_spec, spec_text("""\
    - Residual
    - Repeat:
        times: 2
        layers:
          - Linear:
            out_features: 10
"""))
    assert any("block 'Residual' needs its layers" in p.message and p.line == 5 for p in probs)
    assert any("is an argument of Linear but is written beside it" in p.message and p.line == 10 for p in probs)


def test_budgets_hidden_units_and_rules_count_through_blocks(write_spec, tmp_path):
    (tmp_path / "rules.yaml").write_text("params_below: 1000\nmax_hidden_units: 40\nrequired_layers: [Dropout]\n"
                                         "allowed_layers: [Linear, ReLU, Flatten, Dropout]\n")
    spec = HEAD.replace("name: t", "name: t\nrules: rules.yaml") + """\
    - Flatten
    - Residual:
        layers:
          - Linear: {out_features: 50}
          - ReLU
          - Dropout
          - Linear: {out_features: 784}
    - Linear: {out_features: 10}
"""
    probs = problems(write_spec, spec.replace("- ReLU", "- Tanh"))
    messages = " | ".join(p.message for p in probs)
    assert "layer 'Tanh' is not allowed by the rules" in messages  # the whitelist applies inside blocks
    assert next(p for p in probs if "Tanh" in p.message).line == 10
    probs = problems(write_spec, spec)
    messages = " | ".join(p.message for p in probs)
    # 784*50+50 + 50*784+784 + 784*10+10 = 87,084 parameters; 50 + 784 hidden units; Dropout found inside
    assert "params is 87,084" in messages and "hidden units is 834" in messages and "Dropout" not in messages
    (tmp_path / "rules.yaml").write_text("allowed_blocks: [Concat]\n")
    [p] = problems(write_spec, spec)
    assert "block 'Residual' is not allowed by the rules" in p.message and p.line == 7


def test_a_rule_set_without_blocks_keeps_a_plain_chain(write_spec, tmp_path):
    (tmp_path / "chain.yaml").write_text("allowed_blocks: []\n")
    [p] = problems(write_spec, HEAD.replace("name: t", "name: t\nrules: chain.yaml") + """\
    - Flatten
    - Repeat: {times: 2, layers: [{Linear: {out_features: 10}}]}
""")
    assert "block 'Repeat' is not allowed" in p.message
    from netspec.spec.rules import load_rules, rules_from_dict, rules_to_dict

    rules = load_rules(tmp_path / "chain.yaml")
    assert rules_from_dict(rules_to_dict(rules)).allowed_blocks == ()  # a run folder keeps the "none"


def test_nesting_depth_and_module_count_are_bounded(write_spec):
    nested = "[{Conv2d: {out_channels: 1, kernel_size: 1}}]"
    for _ in range(5):
        nested = f"[{{Residual: {{layers: {nested}}}}}]"
    [p] = problems(write_spec, spec_text(f"    - Residual: {{layers: {nested}}}\n    - Flatten\n    - Linear: {{out_features: 10}}\n"))
    assert "blocks nest 5 deep here; netspec allows 4" in p.message
    huge = "{Repeat: {times: 100, layers: [{Repeat: {times: 100, layers: [ReLU]}}]}}"
    [p] = problems(write_spec, spec_text(f"    - {huge}\n    - Flatten\n    - Linear: {{out_features: 10}}\n"))
    assert "more than 5,000 modules" in p.message


def test_lints_look_inside_blocks(write_spec):
    checked = check_file(write_spec(spec_text("""\
    - Flatten
    - Residual:
        layers:
          - Linear: {out_features: 64}
          - Linear: {out_features: 784}
    - Linear: {out_features: 10}
    - Repeat: {times: 1, layers: [ReLU]}
""")))
    lines = {}
    for w in checked.warnings:
        lines.setdefault(w.message.split("[")[-1].rstrip("]"), []).append(w.line)
    # inside the block, and from the block's last Linear to the next (a sum with x is still linear)
    assert lines["linear-after-linear"] == [9, 10]
    assert lines["activation-after-output"] == [11]


def test_softmax_inside_a_block_and_batch_norm_with_batch_one_are_errors(write_spec):
    probs = problems(write_spec, spec_text("""\
    - Flatten
    - Residual: {layers: [{Linear: {out_features: 784}}, Softmax]}
    - Linear: {out_features: 10}
""") + "train: {batch_size: 1}\n")
    assert any("Softmax between layers turns the features into probabilities" in p.message and p.line == 6 for p in probs)
    probs = problems(write_spec, spec_text("""\
    - Residual: {layers: [{Conv2d: {out_channels: 1, kernel_size: 1}}, BatchNorm2d]}
    - Flatten
    - Linear: {out_features: 10}
""") + "train: {batch_size: 1}\n")
    assert any("batch size 1 with BatchNorm2d (model.layers[0].Residual.layers[1])" in p.message for p in probs)


def test_set_and_sweeps_reach_arguments_inside_blocks(tmp_path):
    from netspec.sweeps.sweep import sweep

    key = "model.layers.3.Residual.layers.0.Conv2d.out_channels"
    checked = check_file(SPECS / "resnet-mnist.yaml", overrides=(f"{key}=24",))
    assert checked.spec.model[3].bodies[0][0].kwargs["out_channels"] == 24
    with pytest.raises(SpecError) as e:
        sweep(SPECS / "resnet-mnist.yaml", grid=[f"{key}=16,64"], out=tmp_path / "s")
    [p] = e.value.problems
    assert f"{key}=64" in p.message and "< 50,000" in p.message


def test_state_dict_names_read_as_the_spec_nests(write_spec):
    checked = check_file(SPECS / "inception-mnist.yaml")
    model = build_model(checked.spec)
    keys = set(model.state_dict())
    assert "concat_4.branches.1.conv2d_2.weight" in keys and "concat_4.branches.3.conv2d_1.bias" in keys
    names = module_names(checked.analysis)
    modules = dict(model.named_modules())
    assert all(names[id(r)] in modules for r in checked.analysis.rows)


SHIPPED = sorted(SPECS.glob("*.yaml")) + sorted((SPECS / "fundamentals").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_torchinfo_counts_and_shapes_equal_netspecs(path):
    import torchinfo

    checked = check_file(path)
    model = build_model(checked.spec)
    stats = torchinfo.summary(model, input_size=(2, *checked.spec.data.input_shape), verbose=0, depth=20)
    assert stats.total_params == checked.analysis.params + checked.analysis.frozen
    assert stats.trainable_params == checked.analysis.params
    names = module_names(checked.analysis)
    by_name = {n: m for n, m in model.named_modules()}
    shapes = {id(info.module): tuple(info.output_size[1:]) for info in stats.summary_list}
    for row in checked.analysis.rows:
        if names[id(row)] in by_name:  # all but the ViT's class token and positions (parameters, not a module)
            assert shapes[id(by_name[names[id(row)]])] == row.shape, names[id(row)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet-mnist", "inception-mnist"])
def test_block_specs_train_and_export_to_onnx_with_pytorchs_outputs(fake_data, tmp_path, name):
    import onnxruntime

    text = (SPECS / f"{name}.yaml").read_text().replace("rules: mnist-cnn\n", "")
    spec = netspec.load(text, overrides={"train.epochs": 1, "data.validation": 100})
    run = netspec.train(spec, data_dir=fake_data, out=tmp_path / name, limit=200, progress=False)
    assert run.metrics.status == "finished"
    session = onnxruntime.InferenceSession(str(run.export()))
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = run.model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cifar_resnet_exports_and_trains_a_few_steps_on_cifar_files(tmp_path, monkeypatch):
    from test_datasets import write_cifar10

    root, _, _ = write_cifar10(tmp_path / "data", monkeypatch, n_train=80, n_test=32)
    spec = netspec.load(SPECS / "resnet20-cifar10.yaml",
                        overrides={"train.epochs": 1, "data.validation": 16, "train.batch_size": 16})
    run = netspec.train(spec, data_dir=root, out=tmp_path / "r", progress=False)
    assert run.metrics.status == "finished" and run.metrics.params == 272_474
    assert run.export().is_file()


def test_summary_json_nests_blocks_with_subtotals():
    r = cli.invoke(app, ["summary", str(SPECS / "resnet-mnist.yaml"), "--format", "json"])
    assert r.exit_code == 0, r.output
    layers = json.loads(r.stdout)[0]["layers"]
    block = layers[3]
    assert block["name"] == "residual_3" and [c["name"] for c in block["layers"]][:2] == ["conv2d_0", "batchnorm2d_1"]
    assert block["params"] == sum(c["params"] for c in block["layers"]) == 10_512
    text = cli.invoke(app, ["summary", str(SPECS / "resnet-mnist.yaml")]).stdout
    assert "residual_9" in text and "  shortcut" in text


class _InterruptAt:
    """Stops a run in its second epoch (Observer's step hook)."""

    def start(self, **kw): ...

    def epoch(self, stats): ...

    def note(self, text): ...

    def step(self, *, epoch, step, loss):
        if epoch == 2 and step >= 3:  # the first look at the loss after step 3 (every sync_every steps)
            ctrl_c()


def test_a_block_model_resumes_to_the_same_weights_and_predicts_from_its_folder(fake_data, tmp_path):
    from conftest import run
    from netspec.errors import Interrupted

    spec = tmp_path / "blocks.yaml"
    spec.write_text("""name: blocks
data: {validation: 100}
model:
  layers:
    - Conv2d: {out_channels: 4, kernel_size: 3, padding: 1, stride: 2}
    - Repeat: {times: 2, layers: [{Residual: {layers: [{Conv2d: {out_channels: 4, kernel_size: 3, padding: 1}}, BatchNorm2d]}}, ReLU]}
    - Concat: {branches: [[{Conv2d: {out_channels: 2, kernel_size: 1}}], [{MaxPool2d: {kernel_size: 3, stride: 1, padding: 1}}]]}
    - AdaptiveAvgPool2d
    - Flatten
    - Linear: {out_features: 10}
train: {epochs: 2, augment: {shift: 1}}
""")
    checked = check_file(spec)
    run(checked, out=tmp_path / "full", data_dir=fake_data, limit=300)
    with pytest.raises(Interrupted):
        run(checked, out=tmp_path / "cut", data_dir=fake_data, observer=_InterruptAt(), limit=300)
    run(checked, out=tmp_path / "cut", data_dir=fake_data, resume=True, limit=300)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert "repeat_1.1.residual_0.layers.batchnorm2d_1.running_var" in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    reopened = netspec.open_run(tmp_path / "cut")  # the run folder builds the block model again
    assert all(torch.equal(reopened.model.state_dict()[k], a[k]) for k in a)
    images = torch.rand(4, 1, 28, 28)
    pre = reopened.preprocessing
    x = (images - pre.mean[0]) / pre.std[0]
    with torch.no_grad():
        expected = reopened.model.eval()(x).argmax(1)
    assert reopened.predict(images).labels == expected.tolist()
