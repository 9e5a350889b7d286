"""Light augmentation on whole batches, on the training device.

One random affine transform per image (rotation, shift, zoom) applied by
sampling the image on a warped grid (`grid_sample`): a handful of tensor ops per
batch, no per-sample Python, and reproducible from a seeded generator.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from netspec.spec.config import AugmentSpec


class Augment:
    """The augmentation of one run: the spec's limits and the image grid, made once, so a batch
    costs one draw of random numbers, one small matrix product and `grid_sample`.

    The sampling grid is what `F.affine_grid` makes (its base grid of pixel centres, times each
    image's transform, in the same `bmm`), without building the base grid again for every batch."""

    def __init__(self, spec: AugmentSpec, image_shape: tuple[int, int, int], device: torch.device | str = "cpu"):
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        # uniform draws in [-1, 1] are scaled by these: rotation (radians), zoom, shift x and y (grid units: 2 per side)
        self.limits = torch.tensor([[math.radians(spec.rotate)], [spec.scale], [2 * spec.shift / w], [2 * spec.shift / h]],
                                   device=device)
        xs = torch.linspace(-1, 1, w, device=device) * (w - 1) / w  # pixel centres (align_corners=False)
        ys = torch.linspace(-1, 1, h, device=device) * (h - 1) / h
        base = torch.empty(1, h, w, 3, device=device)
        base[..., 0], base[..., 1], base[..., 2] = xs, ys[:, None], 1
        self.base = base.view(1, h * w, 3)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: (B, *input_shape) normalised batch; returns the same shape.

        The warp acts on the stored image (`image_shape`, e.g. 1x28x28), whatever shape the spec
        reads it in ([784], [4, 196], ...): input_shape is a row-major reshape of the same values,
        so reshaping back is exact."""
        shape, (c, h, w) = x.shape, self.image_shape
        b = shape[0]
        # one draw for the batch (on a CPU the same numbers as four draws of b, in the same order)
        angle, zoom, tx, ty = (torch.rand(4, b, generator=generator, device=x.device) * 2 - 1) * self.limits
        zoom = 1 + zoom
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([cos, -sin, tx, sin, cos, ty], 1).view(b, 2, 3)
        grid = self.base.expand(b, h * w, 3).bmm(theta.transpose(1, 2)).view(b, h, w, 2)
        out = F.grid_sample(x.reshape(b, c, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(shape)
