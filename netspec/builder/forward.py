"""Apply a spec's layers to inputs given in a file (pooling and convolution by hand)."""
from __future__ import annotations

from pathlib import Path

import torch

from netspec.builder.model import build_model
from netspec.errors import SpecError
from netspec.spec.loader import load_file
from netspec.check.checker import Checked


def forward(checked: Checked, inputs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    model = build_model(checked.spec).eval()
    with torch.no_grad():
        return model(inputs)


def forward_file(checked: Checked, path: str | Path, seed: int = 0) -> torch.Tensor:
    doc = load_file(path)
    shape = tuple(checked.spec.data.input_shape)
    try:
        x = torch.tensor(doc.data, dtype=torch.float32)
    except (TypeError, ValueError) as e:
        raise SpecError([doc.problem((), f"inputs must be a list of numeric arrays: {e}")]) from None
    per_input = torch.Size(shape).numel()
    if x.numel() == 0 or x.numel() % per_input:
        raise SpecError([doc.problem((), f"each input must have the spec's input shape {list(shape)}")])
    return forward(checked, x.reshape(-1, *shape), seed)
