"""Validation: schema errors with places, exact rule checks, shipped specs and rule sets."""
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from netspec.builder.model import build_model
from netspec.cli import app
from netspec.errors import SpecError
from netspec.spec.schema import SCHEMA_FILE, schema_text
from conftest import check_file

from conftest import SPECS

runner = CliRunner()
SHIPPED = sorted(SPECS.glob("*.yaml")) + sorted((SPECS / "fundamentals").glob("*.yaml"))

CNN_HEAD = """name: t
rules: mnist-cnn
data: {input_shape: [1, 28, 28]}
model:
  layers:
"""


def errors(path, **kw):
    with pytest.raises(SpecError) as e:
        check_file(path, **kw)
    return e.value.problems


def test_shipped_schema_equals_generated():
    assert SCHEMA_FILE.read_text() == schema_text()


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.name)
def test_shipped_specs_validate_and_summary_matches_real_module(spec):
    checked = check_file(spec)
    model = build_model(checked.spec)
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert checked.analysis.params == real
    assert_rows_match_module(checked, model)


def assert_rows_match_module(checked, model):
    """Every summary row that names a module (blocks and their layers included) has that module's
    output shape and parameter count; the model's output has the analysed shape."""
    from netspec.check.analysis import module_names

    x = torch.zeros(2, *checked.spec.data.input_shape)
    model.eval()
    modules, names = dict(model.named_modules()), module_names(checked.analysis)
    seen, hooks = {}, []
    for row in checked.analysis.rows:
        module = modules.get(names[id(row)])
        if module is None:
            assert row.name == "tokens", row  # the ViT's class token and positions are parameters, not a module
            continue
        assert sum(p.numel() for p in module.parameters()) == row.params + row.frozen, names[id(row)]
        hooks.append(module.register_forward_hook(
            lambda m, i, o, key=names[id(row)]: seen.setdefault(key, tuple(o.shape[1:])) and None))
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    assert tuple(out.shape[1:]) == checked.analysis.output_shape
    for row in checked.analysis.rows:
        if names[id(row)] in seen:
            assert seen[names[id(row)]] == row.shape, names[id(row)]


def test_shipped_specs_point_editors_at_the_schema():
    for spec in SHIPPED:
        first = spec.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=")
        target = (spec.parent / first.split("=", 1)[1]).resolve()
        assert target == SCHEMA_FILE.resolve()


def test_three_mistakes_reported_at_their_lines(write_spec):
    path = write_spec(CNN_HEAD + """    - Conv2d: {out_channels: 8, kernel_size: 3}
    - BatchNorm2d
    - Lambda
    - Dropout: {p: 0.1}
    - Flatten
    - Linear: {out_features: -4}
train:
  epochs: "ten"
""")
    probs = errors(path)
    assert [(p.line, p.path) for p in probs] == [
        (8, "model.layers[2]"), (11, "model.layers[5].Linear.out_features"), (13, "train.epochs")]
    assert "-4 is less than the minimum of 1" in probs[1].message
    assert "did you mean" not in probs[0].hint and "allowed:" in probs[0].hint


@pytest.mark.parametrize("name", ["os.system", "torch.nn.Module", "Lambda", "__import__"])
def test_unregistered_layer_names_refused(write_spec, name):
    path = write_spec(f"name: t\ndata: {{input_shape: [784]}}\nmodel:\n  layers:\n    - {name}\n    - Linear: {{out_features: 10}}\n")
    [p] = errors(path)
    assert p.line == 5 and f"unknown layer '{name}'" in p.message


def test_mapping_form_of_unknown_layer(write_spec):
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n    - Linaer: {out_features: 10}\n")
    [p] = errors(path)
    assert "unknown layer 'Linaer'" in p.message and "did you mean 'Linear'" in p.hint


@pytest.mark.parametrize("value,hint", [('"ten"', ""), ("768.0", "write 768"), ("true", "")])
def test_wrong_types(write_spec, value, hint):
    path = write_spec(f"name: t\ndata: {{input_shape: [784]}}\nmodel:\n  layers:\n    - Linear: {{out_features: {value}}}\n")
    [p] = errors(path)
    assert p.path == "model.layers[0].Linear.out_features" and "not a whole number" in p.message
    assert hint in p.hint


def test_yaml11_boolean_hint_and_yaml12_numbers(write_spec):
    path = write_spec("name: no\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 10}}]\n"
                      "train:\n  optimizer: {lr: 1e-3}\n")
    [p] = errors(path)
    assert p.path == "name" and "boolean" in p.hint  # lr: 1e-3 is a number, as YAML 1.2 (and --set) read it
    ok = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 10}}]\n"
                    "train:\n  optimizer: {lr: 1e-3, weight_decay: 5E-4}\n", "ok.yaml")
    opt = check_file(ok).spec.train.optimizer
    assert opt.lr == 0.001 and opt.weight_decay == 0.0005
    quoted = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 10}}]\n"
                        "train:\n  optimizer: {lr: '1e-3'}\n", "quoted.yaml")
    [p] = errors(quoted)  # quoted, it is text, as the writer said
    assert p.path == "train.optimizer.lr" and "not a number" in p.message


def test_non_finite_lr_as_text(write_spec):
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 10}}]\n"
                      "train:\n  optimizer: {lr: 1e999}\n")
    [p] = errors(path)  # read as the number it says (YAML 1.2), which is not finite
    assert p.line == 6 and "non-finite number '1e999'" in p.message


def test_shape_mismatch_conv_after_flatten(write_spec):
    path = write_spec(CNN_HEAD + "    - Flatten\n    - Conv2d: {out_channels: 4, kernel_size: 3}\n")
    [p] = [q for q in errors(path) if q.code == "shape"]  # the required layers are reported in the same round
    assert p.line == 7 and "Conv2d expects a 3-d input" in p.message and "(784)" in p.hint


def test_kernel_larger_than_input(write_spec):
    path = write_spec("name: t\ndata: {dataset: none, input_shape: [1, 3, 3]}\nmodel:\n  layers:\n"
                      "    - Conv2d: {out_channels: 1, kernel_size: 5}\n")
    [p] = errors(path)
    assert "does not fit" in p.message


def test_wrong_number_of_outputs(write_spec):
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 7}}]\n")
    [p] = errors(path)
    assert "10 classes" in p.message


def test_budget_overrun_names_the_big_layers(write_spec):
    path = write_spec(CNN_HEAD + """    - Conv2d: {out_channels: 8, kernel_size: 3}
    - BatchNorm2d
    - Dropout
    - Flatten
    - Linear: {out_features: 10}
""")
    [p] = errors(path)
    assert "params is 54,186" in p.message and "< 50,000" in p.message
    assert "linear_4" in p.hint


def test_required_layers_and_whitelist(write_spec):
    path = write_spec(CNN_HEAD + "    - Flatten\n    - Tanh\n    - Linear: {out_features: 10}\n")
    probs = errors(path)  # the forbidden layer, and (the same round) the two required ones missing
    assert sorted(p.code for p in probs) == ["rule/layers", "rule/required-layers", "rule/required-layers"]
    assert any("'Tanh' is not allowed" in p.message for p in probs)
    path = write_spec(CNN_HEAD + "    - Flatten\n    - Linear: {out_features: 10}\n", "b.yaml")
    msgs = " ".join(p.message for p in errors(path))
    assert "require a Dropout layer" in msgs and "require a BatchNorm2d layer" in msgs


def test_hidden_unit_budget(write_spec):
    path = write_spec("name: t\nrules: mnist-mlp\ndata: {input_shape: [784]}\nmodel:\n  layers:\n"
                      "    - Linear: {out_features: 150}\n    - ReLU\n    - Linear: {out_features: 51}\n"
                      "    - ReLU\n    - Linear: {out_features: 10}\n")
    [p] = errors(path)
    assert "hidden units is 201" in p.message


def test_fixed_settings_cannot_be_overridden():
    probs = errors(SPECS / "cnn.yaml", overrides=("train.epochs=5",))
    assert [p.file for p in probs] == ["--set train.epochs=5"]
    assert "fixed at 10" in probs[0].message


def test_imposed_rules_cannot_be_loosened(tmp_path):
    # the MLP spec has no budget on parameters; an instructor's rules add one
    rules = tmp_path / "course.yaml"
    rules.write_text("name: course\nmax_params: 1000\n")
    probs = errors(SPECS / "mlp.yaml", imposed=(str(rules),))
    assert "rules 'course' require <= 1,000" in probs[0].message
    # and the spec's own rule set still applies alongside: 300 hidden units break mnist-mlp's 200,
    # while the imposed budget is broken too; both are reported, each naming its rule set
    probs = errors(SPECS / "mlp.yaml", imposed=(str(rules),), overrides=("model.layers.0.Linear.out_features=300",))
    messages = sorted(p.message for p in probs)
    assert len(messages) == 2
    assert "hidden units is 300; rules 'mnist-mlp' require <= 200" in messages[0]
    assert "rules 'course' require <= 1,000" in messages[1]


def test_missing_rules_file(write_spec):
    path = write_spec("name: t\nrules: nowhere.yaml\ndata: {input_shape: [784]}\nmodel:\n  layers: [{Linear: {out_features: 10}}]\n")
    [p] = errors(path)
    assert p.line == 2 and "not found" in p.message


def test_set_overrides_validate_again():
    checked = check_file(SPECS / "mlp.yaml", overrides=("train.epochs=3", "model.layers.2.Dropout.p=0.3"))
    assert checked.spec.train.epochs == 3
    assert checked.spec.model[2].kwargs["p"] == 0.3
    probs = errors(SPECS / "mlp.yaml", overrides=("train.bogus=1",))
    assert probs[0].file == "--set train.bogus=1" and "unknown key 'bogus'" in probs[0].message
    with pytest.raises(SpecError, match="key=value"):
        check_file(SPECS / "mlp.yaml", overrides=("novalue",))


def test_huge_layer_is_reported_not_allocated(write_spec):
    import tracemalloc

    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n"
                      "    - Linear: {out_features: 1000000}\n    - Linear: {out_features: 1000000}\n"
                      "    - Linear: {out_features: 10}\n")
    tracemalloc.start()
    probs = errors(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 784*10^6 + 10^6  +  10^12 + 10^6  +  10^7 + 10
    assert "1,000,796,000,010 parameters; netspec builds at most" in probs[0].message
    assert peak < 50 * 2**20


# --- the CLI ---------------------------------------------------------------

def test_cli_summary_json_fundamentals():
    r = runner.invoke(app, ["summary", str(SPECS / "fundamentals/conv1d.yaml"), "--format", "json"])
    assert r.exit_code == 0, r.output
    [data] = json.loads(r.output)
    assert data["params"] == 40 and data["output_shape"] == [8, 99]
    r = runner.invoke(app, ["summary", str(SPECS / "fundamentals/conv2d.yaml"), "--format", "json"])
    [data] = json.loads(r.output)
    assert data["params"] == 392 and data["output_shape"] == [8, 13, 13]


def test_cli_validate_exit_codes(write_spec):
    r = runner.invoke(app, ["validate", *map(str, sorted(SPECS.glob("*.yaml")))])
    assert r.exit_code == 0, r.output
    bad = write_spec("name: t\nmodel:\n  layers: [Lambda]\n")
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 1 and "Traceback" not in r.output and f"{bad}:3:" in r.output
    r = runner.invoke(app, ["validate", str(bad), "--format", "json"])
    [data] = json.loads(r.output)
    assert data["valid"] is False and data["errors"][0]["line"] == 3


@pytest.mark.parametrize("text", ["", "name: !!python/object/apply:os.system ['true']\n", "a: 1\na: 2\n",
                                  "[unclosed\n", "- just\n- a list\n"])
def test_cli_bad_input_is_one_clean_error(write_spec, text):
    path = write_spec(text)
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_cli_missing_and_directory(tmp_path):
    for target in (tmp_path / "missing.yaml", tmp_path):
        r = runner.invoke(app, ["summary", str(target)])
        assert r.exit_code == 1 and "Traceback" not in r.output


def test_registry_is_closed():
    from netspec.spec.layers import LAYERS, register

    with pytest.raises(ValueError, match="already registered"):
        register(LAYERS["ReLU"])
    # names from a spec are only keys into LAYERS: no dynamic lookup anywhere in the package
    import re

    banned = re.compile(r"getattr\([^,()]+,\s*[^\"' ]|(?<![.\w])(eval|exec)\(|__import__|import_module|globals\(\)\[")
    for path in (SPECS.parent / "netspec").rglob("*.py"):
        match = banned.search(path.read_text())
        assert match is None, f"{path.name} uses {match.group(0)}"
    assert banned.search("getattr(nn, name)") and banned.search("eval(text)") and not banned.search('model.eval()')


def test_cli_schema_prints_the_shipped_file():
    r = runner.invoke(app, ["schema"])
    assert r.exit_code == 0 and r.output == SCHEMA_FILE.read_text()


def test_schema_defaults_equal_the_config_defaults():
    """Each default is written twice (the schema editors read, the dataclass the code reads): they
    must agree, or an editor shows one value while netspec trains with another."""
    import dataclasses

    from netspec.families.vit import SCHEMA as VIT_SCHEMA, ViTSpec
    from netspec.spec import config
    from netspec.spec.schema import DATA, TRAIN

    def defaults(cls):
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
        return out

    pairs = [(DATA, config.DataSpec), (TRAIN, config.TrainSpec), (TRAIN["properties"]["optimizer"], config.OptimizerSpec),
             (TRAIN["properties"]["schedule"], config.ScheduleSpec), (TRAIN["properties"]["augment"], config.AugmentSpec),
             (VIT_SCHEMA, ViTSpec)]
    compared = 0
    for schema, cls in pairs:
        code = defaults(cls)
        for key, prop in schema["properties"].items():
            if "default" in prop and key in code:
                want = list(code[key]) if isinstance(code[key], tuple) else code[key]
                assert prop["default"] == want, (cls.__name__, key, prop["default"], code[key])
                compared += 1
    assert compared >= 30


def test_a_list_over_its_length_is_one_short_line_not_the_whole_list(write_spec):
    """jsonschema's own message quotes the whole value: 1,200 layers made a line of megabytes."""
    path = write_spec("name: t\ndata: {input_shape: [784]}\nmodel:\n  layers:\n" + "    - ReLU\n" * 1200)
    [p] = errors(path)
    assert p.message == "1,200 items; at most 1000 are allowed here" and p.line == 5


def test_paths_the_system_cannot_look_up_are_problems_in_place_not_tracebacks(write_spec, tmp_path):
    """Path.exists() and is_file() raise for a name longer than the system allows (and for a folder
    that may not be looked into), where a missing file returns False: a spec's `rules:`, --rules
    and the spec's own path of 300 characters each printed a traceback (found by the schema fuzz)."""
    long = "x" * 300
    cases = [
        ([str(write_spec(f"name: a\nrules: {long}\nmodel:\n  layers: [Flatten, {{Linear: {{out_features: 10}}}}]\n"))],
         ":2:8 rules: rules 'xxx"),
        ([str(SPECS / "mlp.yaml"), "--rules", long], f"{long} (top): rules '{long}' not found"),
        ([str(tmp_path / f"{long}.yaml")], "cannot read: File name too long"),
    ]
    for args, said in cases:
        r = runner.invoke(app, ["validate", *args])
        assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
        assert said in " ".join(r.output.split()), r.output  # the words, whatever the line breaks


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_spec_path_that_never_ends_is_refused_at_the_size_limit():
    """A device or pipe states no size: /dev/zero was read to the end of memory (under a 2 GiB
    limit, a MemoryError traceback). It is read up to the limit and refused, in under a second."""
    import subprocess
    import sys

    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from netspec.cli import app; sys.argv = ['netspec', 'validate', '/dev/zero']; app(prog_name='netspec')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "file is over 1,048,576 bytes; specs are limited to 1,048,576" in r.stdout, r.stdout
