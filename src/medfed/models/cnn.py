"""A small convolutional classifier in the spirit of the original project's CancerModel."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def _block(in_channels: int, out_channels: int, norm: NormFactory) -> nn.Sequential:
    """conv 3x3 -> norm -> ReLU -> 2x2 max-pool: halves the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        norm(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class CancerCNN(nn.Module):
    """Four conv blocks (32-64-128-256 channels), global average pooling and a linear head.

    Adaptive pooling makes it accept any input size of at least 16x16 pixels.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        norm: NormFactory,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        dropout: float = 0.25,
    ):
        super().__init__()
        inputs = (in_channels, *widths[:-1])
        self.features = nn.Sequential(
            *(_block(c_in, c_out, norm) for c_in, c_out in zip(inputs, widths, strict=True))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
