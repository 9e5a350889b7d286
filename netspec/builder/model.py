"""Turn a checked spec into a torch module. Shapes and sizes were settled by
`netspec.check.analysis` (without torch) before this runs; building is the spec's model
family's own `build`.
"""
from __future__ import annotations

import torch
from torch import nn

from netspec.check.analysis import analyze
from netspec.spec.config import Spec


def build_model(spec: Spec, device: str | torch.device = "cpu") -> nn.Module:
    """The real module (weights initialised by torch's defaults under the current seed)."""
    analysis = analyze(spec)
    if analysis.problems:  # validation runs first; reaching this is a bug
        raise AssertionError(f"spec {spec.name} does not build: {analysis.problems}")
    with torch.device(device):
        return spec.family.build(spec)
