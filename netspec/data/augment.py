"""Light augmentation on whole batches, on the training device.

One random affine transform per image (rotation, shift, zoom) applied with
`affine_grid` + `grid_sample`: a handful of tensor ops per batch, no per-sample
Python, and reproducible from a seeded generator.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from netspec.spec.config import AugmentSpec


def augment(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator,
            image_shape: tuple[int, int, int] = (1, 28, 28)) -> torch.Tensor:
    """x: (B, *input_shape) normalised batch; returns the same shape.

    The warp acts on the stored image (`image_shape`, e.g. 1x28x28), whatever
    shape the spec reads it in ([784], [4, 196], ...): input_shape is a
    row-major reshape of the same values, so reshaping back is exact.
    """
    shape = x.shape
    c, h, w = image_shape
    imgs = x.reshape(shape[0], c, h, w)
    b = imgs.shape[0]

    def uniform(limit: float) -> torch.Tensor:  # (B,) in [-limit, limit]
        return (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(spec.rotate))
    zoom = 1 + uniform(spec.scale)
    tx, ty = uniform(2 * spec.shift / w), uniform(2 * spec.shift / h)  # grid coordinates span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(imgs.shape), align_corners=False)
    out = F.grid_sample(imgs, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(shape)
