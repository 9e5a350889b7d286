"""Models you can take away (issue 12, part 2): ONNX export equal to PyTorch, predict on files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import netspec
from netspec.cli import app

from conftest import SPECS

cli = CliRunner()
QUICK = {"train.epochs": 1, "data.validation": 200}


def trained(name, fake_data, tmp_path, **extra):
    text = (SPECS / f"{name}.yaml").read_text().split("\nsweep:")[0]
    for rules in ("mnist-cnn", "mnist-vit", "mnist-mlp"):
        text = text.replace(f"rules: {rules}\n", "")
    spec = netspec.load(text, overrides={**QUICK, "train.schedule.name": "none", **extra})
    return netspec.train(spec, data_dir=fake_data, out=tmp_path / name, limit=300, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [("mlp", {}), ("cnn", {}), ("vit", {"model.vit.depth": 2})])
def test_onnx_export_gives_the_pytorch_outputs(fake_data, tmp_path, name, extra):
    import onnxruntime

    run = trained(name, fake_data, tmp_path, **extra)
    path = run.export()
    meta = json.loads(path.with_name("model.onnx.json").read_text())
    assert path == run.path / "model.onnx" and meta["classes"] == [str(i) for i in range(10)]
    # the shipped layer specs end in Softmax; a ViT outputs logits
    assert meta["output_is"].startswith("logits" if name == "vit" else "probabilities")
    session = onnxruntime.InferenceSession(str(path))
    for batch in (1, 7):  # a dynamic batch dimension
        x = torch.randn(batch, *run.spec.config.data.input_shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = run.model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)  # stated tolerance: float32 rounding


def test_predict_on_png_files_and_a_folder(fake_data, tmp_path):
    run = trained("mlp", fake_data, tmp_path)
    from conftest import mnist_source
    raw = mnist_source(fake_data)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(raw.test.images[i, 0].numpy(), mode="L").save(folder / f"{i}.png")
    Image.fromarray(raw.test.images[4, 0].numpy(), mode="L").resize((56, 56)).convert("RGB").save(tmp_path / "big.png")
    r = cli.invoke(app, ["predict", str(run.path), str(folder), str(tmp_path / "big.png"), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["file"].rsplit("/", 1)[1] for row in rows] == ["0.png", "1.png", "2.png", "3.png", "big.png"]
    expected = run.predict(raw.test.images[:4, 0])
    assert [row["label"] for row in rows[:4]] == expected.labels
    assert all(0 <= row["probability"] <= 1 for row in rows)
    assert [row["label"] for row in rows[:4]] == raw.test.labels[:4].tolist()  # the synthetic digits are easy
    text = cli.invoke(app, ["predict", str(run.path), str(folder / "0.png")])
    assert text.exit_code == 0 and "0.png" in text.output
    bad = cli.invoke(app, ["predict", str(run.path), str(tmp_path / "missing.png")])
    assert bad.exit_code == 1 and "does not exist" in bad.output and "Traceback" not in bad.output


def test_predict_warns_about_an_inverted_photo_and_invert_reads_it(fake_data, tmp_path):
    from conftest import mnist_source

    run = trained("mlp", fake_data, tmp_path)
    raw = mnist_source(fake_data)
    digit = raw.test.images[0, 0].numpy()
    Image.fromarray(digit, mode="L").save(tmp_path / "light-on-dark.png")
    Image.fromarray(255 - digit, mode="L").save(tmp_path / "dark-on-light.png")  # ink on paper
    r = cli.invoke(app, ["predict", str(run.path), str(tmp_path / "light-on-dark.png"), str(tmp_path / "dark-on-light.png"),
                         "--format", "json"])
    assert r.exit_code == 0
    plain, photo = json.loads(r.stdout)
    assert not plain["looks_inverted"] and photo["looks_inverted"]
    assert "1 image(s) look inverted" in r.stderr and "try --invert" in r.stderr
    fixed = json.loads(cli.invoke(app, ["predict", str(run.path), str(tmp_path / "dark-on-light.png"), "--invert",
                                        "--format", "json"]).stdout)
    assert fixed[0]["label"] == plain["label"] and not fixed[0]["looks_inverted"]
