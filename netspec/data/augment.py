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
    costs one draw of random numbers, one matrix product and `grid_sample`. The sampling grid is
    what `F.affine_grid` makes, without building its base grid of pixel centres for every batch."""

    def __init__(self, spec: AugmentSpec, image_shape: tuple[int, int, int], device: torch.device | str = "cpu"):
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        # uniform draws in [-1, 1] are scaled by these: rotation (radians), zoom, shift x and y (grid units: 2 per side)
        self.limits = torch.tensor([[math.radians(spec.rotate)], [spec.scale], [2 * spec.shift / w], [2 * spec.shift / h]],
                                   device=device)
        xs = torch.linspace(-1, 1, w, device=device) * (w - 1) / w  # pixel centres (align_corners=False)
        ys = torch.linspace(-1, 1, h, device=device) * (h - 1) / h
        base = torch.zeros(2, 3, h, w, 2, device=device)  # (x or y of theta, its column; pixel; x or y of the grid)
        for j in range(2):
            base[j, 0, ..., j], base[j, 1, ..., j], base[j, 2, ..., j] = xs, ys[:, None], 1
        # theta (b, 6) @ base (6, h * w * 2): every image's grid in one matrix product that writes it in
        # grid_sample's layout, a third of the time of affine_grid's `bmm` (and equal to it, bit for bit)
        self.base = base.view(6, h * w * 2)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, batch: int | None = None) -> torch.Tensor:
        """x: (B, *input_shape) normalised images; returns the same shape. `batch`: x holds B / batch
        batches (Split.batches' chunks), whose random numbers are drawn as that many calls of one batch
        each would draw them, so on a CPU an image is warped alike whether its batch came alone or not.

        The warp acts on the stored image (`image_shape`, e.g. 1x28x28), whatever shape the spec
        reads it in ([784], [4, 196], ...): input_shape is a row-major reshape of the same values,
        so reshaping back is exact."""
        shape, (c, h, w) = x.shape, self.image_shape
        b = shape[0]
        k = b // batch if batch and b % batch == 0 else 1
        # per batch one draw (on a CPU the same numbers as four draws of its size, in the same order)
        draws = torch.rand(k, 4, b // k, generator=generator, device=x.device).transpose(0, 1).reshape(4, b)
        angle, zoom, tx, ty = (draws * 2 - 1) * self.limits
        zoom = 1 + zoom
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([cos, -sin, tx, sin, cos, ty], 1)  # (b, 6): each image's 2x3 matrix
        grid = (theta @ self.base).view(b, h, w, 2)
        out = F.grid_sample(x.reshape(b, c, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(shape)
