"""Problem 1: parameter counts, output shapes and pooled matrices, with the published answers."""

import torch
from typer.testing import CliRunner

from netspec.builder.forward import forward, forward_file
from netspec.cli import app
from conftest import check_file

from conftest import SPECS

FUND = SPECS / "fundamentals"


def test_conv1d_40_params_shape_8_by_99():
    a = check_file(FUND / "conv1d.yaml").analysis
    assert a.params == (4 * 1 + 1) * 8 == 40
    assert a.output_shape == (8, 99)


def test_conv2d_392_params_shape_8_13_13():
    a = check_file(FUND / "conv2d.yaml").analysis
    assert a.params == (4 * 4 * 3 + 1) * 8 == 392
    assert a.output_shape == (8, 13, 13)


def test_pooling_matches_published_matrices():
    avg = forward_file(check_file(FUND / "avgpool.yaml"), FUND / "inputs" / "matrices.yaml")
    expected_avg = torch.tensor([[[8 / 9, 2 / 3], [2 / 3, 2 / 3]], [[1 / 3, 1 / 3], [1 / 3, 1 / 3]]])
    assert torch.allclose(avg[:, 0], expected_avg, atol=1e-6)
    mx = forward_file(check_file(FUND / "maxpool.yaml"), FUND / "inputs" / "matrices.yaml")
    assert torch.equal(mx[:, 0], torch.ones(2, 2, 2))


def test_cli_forward_prints_fractions():
    r = CliRunner().invoke(app, ["forward", str(FUND / "avgpool.yaml"), "--input", str(FUND / "inputs" / "matrices.yaml")])
    assert r.exit_code == 0, r.output
    assert "8/9" in r.output and "2/3" in r.output and "1/3" in r.output


def test_conv1d_forward_shape_on_real_input():
    checked = check_file(FUND / "conv1d.yaml")
    y = forward(checked, torch.randn(3, 1, 200))
    assert y.shape == (3, 8, 99)
