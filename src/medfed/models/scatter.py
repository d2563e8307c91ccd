"""ScatterNet classifiers: a fixed wavelet scattering front end and a small trained head.

The 2-D scattering transform (kymatio; J=2, 8 angles, second order: 81 channels per image
channel at a quarter of the image's side) has no trained weights: its features are good before
any training, which is what differentially private training needs (Tramer & Boneh, 2021).
Its output is normalised by a GroupNorm (data-independent, so DP-SGD can train it) and pooled
to 8x8, so the head's size does not depend on the image size:

- ``scatter_linear``: a linear classifier on the 81 x 8 x 8 features per image channel;
- ``scatter_cnn``: two 3x3 convolutions (64 channels, GroupNorm, Tanh) before the linear head.

The front end is built per input size on first use and kept out of the state dict (it has
nothing to learn and is rebuilt identically everywhere), so only the head travels.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

SCATTER_J = 2
SCATTER_ANGLES = 8
SCATTER_CHANNELS = 81  # 1 + J*L + L^2 * J*(J-1)/2 for J=2, L=8
POOLED = 8


class ScatterFront(nn.Module):
    """The scattering transform of a (B, C, H, W) batch as (B, 81*C, H/4, W/4)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_shape: dict[tuple[int, int, str], nn.Module] = {}

    def _transform(self, height: int, width: int, device: torch.device) -> nn.Module:
        key = (height, width, str(device))
        if key not in self._by_shape:
            from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

            transform = ScatteringTorch2D(J=SCATTER_J, shape=(height, width), L=SCATTER_ANGLES)
            self._by_shape[key] = transform.to(device)
        return self._by_shape[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if height % 4 or width % 4:
            raise ValueError(f"scatter models need an image side divisible by 4, got {height}")
        out = self._transform(height, width, x.device)(x.contiguous())
        return out.reshape(batch, channels * SCATTER_CHANNELS, height // 4, width // 4)


class ScatterNet(nn.Module):
    """Scattering front end, GroupNorm over its channels, 8x8 pooling, then ``body`` + linear."""

    def __init__(
        self, in_channels: int, num_classes: int, body: nn.Module, body_channels: int
    ) -> None:
        super().__init__()
        channels = in_channels * SCATTER_CHANNELS
        self.front = ScatterFront()
        self.norm = nn.GroupNorm(27 if channels % 27 == 0 else 1, channels, affine=False)
        self.pool = nn.AdaptiveAvgPool2d(POOLED)
        self.body = body
        self.classifier = nn.Linear(body_channels * POOLED * POOLED, num_classes)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed part: scattering, normalisation and pooling (nothing to learn)."""
        return self.pool(self.norm(self.front(x)))

    def features_of(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """:meth:`features` of every batch of (images, labels), on the CPU."""
        return torch.cat([self.features(x).cpu() for x, _ in batches])

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The trained part, on :meth:`features`."""
        return self.classifier(torch.flatten(self.body(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ScatterHead(nn.Module):
    """The trained part of a :class:`ScatterNet` as a module of its own, sharing its layers:
    trains on cached features (e.g. under DP-SGD) and leaves the ScatterNet trained."""

    def __init__(self, net: ScatterNet) -> None:
        super().__init__()
        self.body = net.body
        self.classifier = net.classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.body(features), 1))


def scatter_linear(in_channels: int, num_classes: int) -> nn.Module:
    channels = in_channels * SCATTER_CHANNELS
    return ScatterNet(in_channels, num_classes, nn.Identity(), channels)


def scatter_cnn(in_channels: int, num_classes: int, width: int = 64) -> nn.Module:
    channels = in_channels * SCATTER_CHANNELS
    body = nn.Sequential(
        nn.Conv2d(channels, width, kernel_size=3, padding=1),
        nn.GroupNorm(8, width),
        nn.Tanh(),
        nn.Conv2d(width, width, kernel_size=3, padding=1),
        nn.GroupNorm(8, width),
        nn.Tanh(),
    )
    return ScatterNet(in_channels, num_classes, body, width)
