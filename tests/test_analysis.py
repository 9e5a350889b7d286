"""Checking a spec needs no torch: shapes and parameter counts come from the layer table's own
rules and the ViT's formula. These tests hold those rules equal to what torch's modules do,
for random arguments of every layer and random ViTs, and check which heavy modules a command loads."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, SPECS
from netspec.check.analysis import analyze
from netspec.builder.model import build_model
from netspec.spec.layers import LAYERS, ShapeError

HEAVY = ("torch", "torchvision", "optuna", "matplotlib", "onnx", "numpy", "tensorboard", "mlflow")


def _random_case(rng: random.Random, name: str) -> tuple[tuple, dict]:
    """An input shape and arguments for layer `name`, within the schema, often near the edges."""
    size = lambda lo=1, hi=12: rng.randint(lo, hi)  # noqa: E731
    pair = lambda lo=1, hi=4: size(lo, hi) if rng.random() < 0.5 else [size(lo, hi), size(lo, hi)]  # noqa: E731
    if name == "Linear":
        return tuple(size() for _ in range(rng.randint(1, 3))), {"out_features": size(), "bias": rng.random() < 0.5}
    if name in ("Conv1d", "Conv2d"):
        n = 1 if name == "Conv1d" else 2
        groups = rng.choice([1, 1, 2, 3])
        shape = (groups * size(1, 3), *(size(3, 14) for _ in range(n)))
        one = (lambda lo=1, hi=4: size(lo, hi)) if n == 1 else pair
        args = {"out_channels": groups * size(1, 4), "kernel_size": one(1, 4), "stride": one(1, 3),
                "padding": one(0, 2), "dilation": one(1, 2), "groups": groups, "bias": rng.random() < 0.5}
        return shape, args
    if "Pool" in name:
        n = 1 if name.endswith("1d") else 2
        one = (lambda lo=1, hi=4: size(lo, hi)) if n == 1 else pair
        k = one(1, 4)
        args = {"kernel_size": k, "padding": 0 if rng.random() < 0.5 else one(0, 1)}
        if rng.random() < 0.5:
            args["stride"] = one(1, 3)
        return (size(1, 4), *(size(2, 14) for _ in range(n))), args
    if name == "BatchNorm1d":
        return tuple(size() for _ in range(rng.randint(1, 2))), {"affine": rng.random() < 0.5}
    if name == "BatchNorm2d":
        return (size(), size(), size()), {"affine": rng.random() < 0.5}
    if name == "LayerNorm":
        return tuple(size() for _ in range(rng.randint(1, 3))), {"affine": rng.random() < 0.5}
    if name == "Softmax":
        shape = tuple(size() for _ in range(rng.randint(1, 3)))
        return shape, {"dim": -rng.randint(1, len(shape))}
    return tuple(size() for _ in range(rng.randint(1, 3))), {}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layers_shape_and_parameter_rules_equal_torchs(name):
    entry = LAYERS[name]
    rng = random.Random(name)
    built = 0
    for _ in range(60):
        shape, args = _random_case(rng, name)
        args = entry.with_defaults(args)
        try:
            out = entry.shape(shape, args)
        except ShapeError:
            continue  # the rule refuses it: torch is never asked
        with torch.device("meta"):
            module = entry.make(shape, args)
            real = tuple(module(torch.empty(2, *shape)).shape[1:])
        assert real == out, (shape, args)
        assert entry.params(shape, args) == sum(p.numel() for p in module.parameters()), (shape, args)
        built += 1
    assert built >= 20  # most random cases are valid, so the comparison is not vacuous


@pytest.mark.parametrize("attention", ["batched", "per_head"])
def test_the_vit_formula_equals_the_module(attention, tmp_path):
    import netspec

    rng = random.Random(attention)
    for _ in range(8):
        patch = rng.choice([2, 4, 7])
        spec = netspec.load({"name": "v", "data": {"dataset": "none", "input_shape": [rng.choice([1, 3]), 28, 28],
                                                   "classes": rng.randint(2, 12)},
                             "model": {"vit": {"patch_size": patch, "dim": rng.randint(4, 24), "depth": rng.randint(1, 3),
                                               "heads": rng.randint(1, 4), "dim_head": rng.randint(2, 8),
                                               "mlp_dim": rng.randint(4, 32), "attention": attention,
                                               "pool": rng.choice(["cls", "mean"])}}})
        model = build_model(spec.config, "meta")
        rows = analyze(spec.config).rows
        assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
        by_name = {r.name: r.params for r in rows}
        for name in ("to_patch_embedding", "norm", "mlp_head", "layers.0"):
            assert by_name[name] == sum(p.numel() for p in model.get_submodule(name).parameters())


@pytest.mark.parametrize("spec", sorted(p for p in SPECS.glob("**/*.yaml") if "inputs" not in p.parts),
                         ids=lambda p: p.stem)
def test_shipped_specs_count_as_torch_does(spec):
    import netspec

    loaded = netspec.load(spec)
    model = build_model(loaded.config, "meta")
    assert loaded.params == sum(p.numel() for p in model.parameters() if p.requires_grad)


def _heavy_modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(sorted(m for m in %r if m in sys.modules))"
                          % (HEAVY,)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


CLI = "from netspec.cli import app\ntry:\n    app(%r)\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["validate", "specs/cnn.yaml", "specs/vit.yaml"],
                                  ["validate", "--help"], ["run", "--help"], ["sweep", "--help"],
                                  ["summary", "specs/cnn.yaml"], ["summary", "--format", "json", "specs/vit.yaml"],
                                  ["validate", "--format", "sarif", "specs/resnet20-cifar10.yaml"],
                                  ["grade", "--help"], ["validate", "--rubric", "rubrics/hw2-cnn.yaml", "specs/cnn.yaml"]],
                         ids=" ".join)
def test_checking_and_help_import_no_torch(args):
    assert _heavy_modules_after(CLI % (args,)) == []


def test_making_a_gradescope_autograder_imports_no_torch(tmp_path):
    """Writing the autograder zip trains and measures nothing: no torch (nor matplotlib) in that process."""
    code = CLI % (["grade", "--rubric", "rubrics/hw2-cnn.yaml", "--make-autograder", str(tmp_path / "a.zip")],)
    assert [m for m in _heavy_modules_after(code) if m not in ("optuna", "numpy")] == []  # the class study's
    assert (tmp_path / "a.zip").is_file()


def test_shell_completion_imports_no_torch():
    code = ("import os\nos.environ.update(_NETSPEC_COMPLETE='complete_bash', COMP_WORDS='netspec validate --rules ', "
            "COMP_CWORD='3')\nfrom netspec.cli import app\ntry:\n    app(prog_name='netspec')\nexcept SystemExit:\n    pass")
    assert _heavy_modules_after(code) == []


def test_import_netspec_and_load_import_no_torch_until_a_model_is_built():
    assert _heavy_modules_after("import netspec\nnetspec.load('specs/mlp.yaml').summary()") == []
    assert "torch" in _heavy_modules_after("import netspec\nnetspec.load('specs/mlp.yaml').build()")
