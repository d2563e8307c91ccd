"""Batch transforms: uint8 (B, C, H, W) in, normalised float32 out, the whole batch at once.

``(x / 255 - mean) / std``; the training variant first flips and rotates each sample with its
own random draw from a seeded ``torch.Generator``, so a seed gives the same batches every run.
Flips and rotation take one ``grid_sample`` call per batch (bilinear, zero padding). A batch
on a GPU is transformed there; the random draws always come from the CPU generator, so a seed
gives the same augmentation on every device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from medfed.config import DataConfig


class BatchTransform:
    """Normalise a uint8 batch, optionally after random flips and rotations per sample."""

    def __init__(
        self,
        mean: float,
        std: float,
        rotation: float = 0.0,
        hflip: bool = False,
        vflip: bool = False,
        seed: int | None = None,
    ) -> None:
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std
        self.rotation = float(rotation)
        self.hflip = hflip
        self.vflip = vflip
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()  # fresh entropy: not reproducible
        else:
            self.generator.manual_seed(seed)

    @property
    def is_random(self) -> bool:
        return self.rotation > 0 or self.hflip or self.vflip

    def __call__(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(batch).to(torch.float32, copy=True)
        if self.is_random and len(x):
            x = self._augment(x)
        return x.mul_(self.scale).sub_(self.shift)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        size = len(x)
        x_sign = self._flip_signs(size) if self.hflip else None
        y_sign = self._flip_signs(size) if self.vflip else None
        if self.rotation > 0:
            angles = (torch.rand(size, generator=self.generator) * 2 - 1) * self.rotation
            return rotate(x, angles, x_sign, y_sign)
        if x_sign is not None:
            x = _flip_some(x, x_sign < 0, dim=3)
        if y_sign is not None:
            x = _flip_some(x, y_sign < 0, dim=2)
        return x

    def _flip_signs(self, size: int) -> torch.Tensor:
        """-1 (flip) or +1 (keep) for each sample, with even odds."""
        return torch.where(torch.rand(size, generator=self.generator) < 0.5, -1.0, 1.0)


def rotate(
    x: torch.Tensor,
    degrees: torch.Tensor,
    x_sign: torch.Tensor | None = None,
    y_sign: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate each image of a float batch counter-clockwise by its angle about its centre.

    ``x_sign`` / ``y_sign`` (+1 or -1 per sample) mirror the image first, in the same pass.
    The sampling grid is built directly (``affine_grid`` is much slower on CPU), at pixel
    centres as with ``align_corners=False``.
    """
    size, _, height, width = x.shape
    on = {"device": x.device, "dtype": x.dtype}  # random draws may come from the CPU
    radians = degrees.to(**on).view(-1, 1, 1) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    cols = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, **on).view(1, 1, -1)
    rows = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, **on).view(1, -1, 1)
    if x_sign is not None:
        cols = cols * x_sign.to(**on).view(-1, 1, 1)
    if y_sign is not None:
        rows = rows * y_sign.to(**on).view(-1, 1, 1)
    grid = torch.stack((cos * cols - sin * rows, sin * cols + cos * rows), dim=-1)
    grid = grid.expand(size, height, width, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip_some(x: torch.Tensor, chosen: torch.Tensor, dim: int) -> torch.Tensor:
    chosen = chosen.to(x.device)
    x[chosen] = x[chosen].flip(dim)
    return x


def train_transform(cfg: DataConfig, seed: int) -> BatchTransform:
    """Random flips / rotation as configured, then normalisation; deterministic per ``seed``."""
    return BatchTransform(
        cfg.normalize_mean,
        cfg.normalize_std,
        rotation=cfg.rotation,
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        seed=seed,
    )


def eval_transform(cfg: DataConfig) -> BatchTransform:
    """Normalisation only."""
    return BatchTransform(cfg.normalize_mean, cfg.normalize_std)
