"""Batch transforms: uint8 (B, C, H, W) in, normalised float32 out, the whole batch at once.

``(x / 255 - mean) / std``; the training variant first flips and rotates each sample with its
own random draw from a seeded ``torch.Generator``, so a seed gives the same batches every run.
Rotation uses one ``affine_grid`` / ``grid_sample`` call per batch (bilinear, zero padding).
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
        if seed is not None:
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
        if self.hflip:
            x = _flip_some(x, self._coin(size), dim=3)
        if self.vflip:
            x = _flip_some(x, self._coin(size), dim=2)
        if self.rotation > 0:
            angles = (torch.rand(size, generator=self.generator) * 2 - 1) * self.rotation
            x = rotate(x, angles)
        return x

    def _coin(self, size: int) -> torch.Tensor:
        return torch.rand(size, generator=self.generator) < 0.5


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of a float batch by its angle (degrees) about its centre."""
    radians = degrees.to(x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip_some(x: torch.Tensor, chosen: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(chosen.view(-1, 1, 1, 1), x.flip(dim), x)


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
