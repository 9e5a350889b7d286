"""Turn a checked spec into a torch module. Shapes and sizes were settled by
`netspec.builder.analysis` (without torch) before this runs; building is the layer
table's `make` for each layer, or the ViT class.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from netspec.builder.analysis import analyze, layer_name, num_classes
from netspec.builder.vit import ViT
from netspec.spec.config import Spec
from netspec.spec.layers import LAYERS


def _sequential(spec: Spec) -> nn.Module:
    children: OrderedDict[str, nn.Module] = OrderedDict()
    shape = tuple(spec.data.input_shape)
    for i, layer in enumerate(spec.model):
        entry = LAYERS[layer.name]
        children[layer_name(i, layer)] = entry.make(shape, layer.kwargs)
        shape = entry.shape(shape, layer.kwargs)
    return nn.Sequential(children)


def _vit(spec: Spec) -> nn.Module:
    v = spec.model
    return ViT(image_shape=tuple(spec.data.input_shape), patch_size=v.patch_size, num_classes=num_classes(spec),
               dim=v.dim, depth=v.depth, heads=v.heads, dim_head=v.dim_head, mlp_dim=v.mlp_dim,
               dropout=v.dropout, attention_dropout=v.attention_dropout, emb_dropout=v.emb_dropout,
               pool=v.pool, per_head=v.attention == "per_head")


def build_model(spec: Spec, device: str | torch.device = "cpu") -> nn.Module:
    """The real module (weights initialised by torch's defaults under the current seed)."""
    analysis = analyze(spec)
    if analysis.problems:  # validation runs first; reaching this is a bug
        raise AssertionError(f"spec {spec.name} does not build: {analysis.problems}")
    with torch.device(device):
        return _vit(spec) if spec.is_vit else _sequential(spec)
