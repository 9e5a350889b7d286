"""The torch modules of the layer list's blocks (netspec/families/blocks.py decides their shapes)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class Residual(nn.Module):
    """layers(x) + shortcut(x); the shortcut is nn.Identity where the shapes already match."""

    def __init__(self, layers: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.layers = layers
        self.shortcut = shortcut

    def forward(self, x):  # (B, C, H, W) -> (B, C', H', W')
        return self.layers(x) + self.shortcut(x)


def projection(kind: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """ResNet's option B: a strided 1x1 convolution and BatchNorm (or a Linear for features)."""
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(c_in, c_out, bias=False)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
        norm=nn.BatchNorm2d(c_out),
    ))


class Concat(nn.Module):
    """Branches on the same input, joined on channels (dimension 1 of a batch)."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)
