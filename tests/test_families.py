"""The model-family seam (issue 19, part 1): a family registered here, in the test, is checked,
summarised, trained and exported with no other edit; and no code outside the family modules asks
which family it holds."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import netspec
from netspec.cli import app
from netspec.spec.family import FAMILIES, Family, register_family, unregister_family
from netspec.spec.family import Analysis, BuildProblem, Row, num_classes

cli = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Toy:
    hidden: int  # width of the one hidden layer
    scale: float = 1.0  # multiplies the input (so the ONNX graph has an op of its own)


class ToyFamily(Family):
    key = "toy"
    config = Toy
    doc = "flatten, one hidden layer, a head"

    def schema(self, allowed):
        return {"type": "object", "additionalProperties": False, "required": ["hidden"],
                "properties": {"hidden": {"type": "integer", "minimum": 1, "maximum": 4096},
                               "scale": {"type": "number", "default": 1.0}}}, {}

    def parse(self, raw):
        return Toy(**raw)

    def to_dict(self, config):
        return asdict(config)

    def analyze(self, spec, analysis: Analysis):
        n = int(np.prod(analysis.input_shape))
        if spec.model.hidden > n:
            analysis.problems.append(BuildProblem(("model", "toy", "hidden"), f"hidden {spec.model.hidden} is wider "
                                                                              f"than the {n} input values"))
            return
        classes = num_classes(spec)
        analysis.rows += [Row(0, "hidden", f"Linear({spec.model.hidden})", (spec.model.hidden,), n * spec.model.hidden + spec.model.hidden),
                          Row(1, "head", f"Linear({classes})", (classes,), spec.model.hidden * classes + classes)]
        analysis.output_shape = (classes,)
        analysis.output_path = ("model", "toy")

    def build(self, spec):
        n, h = int(np.prod(spec.data.input_shape)), spec.model.hidden

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.hidden = torch.nn.Linear(n, h)
                self.head = torch.nn.Linear(h, num_classes(spec))

            def forward(self, x):
                return self.head(torch.relu(self.hidden(x.flatten(1) * spec.model.scale)))

        return Net()


@pytest.fixture
def toy():
    register_family(ToyFamily())
    yield
    unregister_family("toy")


TOY = "name: toy\ndata: {validation: 100}\nmodel:\n  toy: {hidden: 24}\ntrain: {epochs: 1}\n"


def test_a_family_registered_in_a_test_is_checked_summarised_trained_and_exported(toy, tmp_path, fake_data):
    import onnxruntime

    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    r = cli.invoke(app, ["validate", str(path)])
    assert r.exit_code == 0 and "19,090 params" in r.output, r.output  # 784*24+24 + 24*10+10
    r = cli.invoke(app, ["summary", str(path), "--format", "json"])
    assert [row["name"] for row in json.loads(r.stdout)[0]["layers"]] == ["hidden", "head"]
    path.write_text(TOY.replace("hidden: 24", "hidden: 2000"))
    r = cli.invoke(app, ["validate", str(path)])
    assert r.exit_code == 1 and ":4:" in r.output and "wider than the 784 input values" in r.output
    path.write_text(TOY)
    run = netspec.train(netspec.load(path), data_dir=fake_data, out=tmp_path / "run", limit=300, progress=False)
    assert run.metrics.status == "finished" and run.metrics.params == 19_090
    assert netspec.open_run(run.path).spec.config.model == Toy(hidden=24)  # the run folder reads back
    session = onnxruntime.InferenceSession(str(run.export()))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], run.model(x).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_the_schema_offers_each_registered_family(toy):
    from netspec.spec.schema import spec_schema

    assert set(spec_schema()["properties"]["model"]["properties"]) == {"layers", "vit", "toy"}
    assert "toy" not in FAMILIES or FAMILIES["toy"].key == "toy"
    with pytest.raises(ValueError, match="already registered"):
        register_family(ToyFamily())


def test_no_code_outside_the_family_modules_asks_which_family_it_holds():
    """Family and layer names belong to their own modules: elsewhere, code asks the family
    (spec.family.has_conv, .attention, .layer_names) and the layer table's roles."""
    allowed = {"netspec/families", "netspec/spec/layers.py"}
    pattern = re.compile(r"is_vit|ViTSpec|LayerList|LayerSpec|isinstance\([^)]*(ViT|Layer|Block)\w*\)|[\"'](vit|layers)[\"'] in |"
                         r"== [\"'](vit|Linear|Conv[12]d|Softmax|ReLU|Flatten|Dropout|BatchNorm[12]d|MaxPool2d)[\"']|"
                         r"\([\"'](ReLU|GELU|Tanh|Sigmoid|MaxPool2d|BatchNorm1d)[\"'],")
    found = []
    for path in sorted((ROOT / "netspec").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if any(rel == a or rel.startswith(a + "/") for a in allowed):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
