"""Build a classifier by name: the small CNN or a torchvision ResNet adapted to medical images."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torchvision
from torch import nn

from medfed.errors import ModelError
from medfed.models.cnn import CancerCNN, NormFactory
from medfed.models.scatter import scatter_cnn, scatter_linear
from medfed.models.weights import load_pretrained

logger = logging.getLogger(__name__)

NORMS = ("batch", "group")
MAX_GROUPS = 32


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups, the largest count that divides ``num_channels``."""
    return nn.GroupNorm(math.gcd(MAX_GROUPS, num_channels), num_channels)


def norm_factory(norm: str) -> NormFactory:
    """The normalisation layer constructor for ``norm`` ("batch" or "group")."""
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return group_norm
    raise ModelError(f"model.norm={norm!r} is not known: use one of {', '.join(NORMS)}")


def _cancer_cnn(in_channels: int, num_classes: int, norm: NormFactory) -> nn.Module:
    return CancerCNN(in_channels, num_classes, norm)


def _resnet(
    factory: Callable[..., torchvision.models.ResNet],
) -> Callable[[int, int, NormFactory], nn.Module]:
    """A builder for a torchvision ResNet whose stem takes ``in_channels`` (never downloads)."""

    def build(in_channels: int, num_classes: int, norm: NormFactory) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes, norm_layer=norm)
        stem = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels,
            stem.out_channels,
            kernel_size=stem.kernel_size,
            stride=stem.stride,
            padding=stem.padding,
            bias=False,
        )
        return model

    return build


BUILDERS: dict[str, Callable[[int, int, NormFactory], nn.Module]] = {
    "cancer_cnn": _cancer_cnn,
    "resnet18": _resnet(torchvision.models.resnet18),
    "resnet50": _resnet(torchvision.models.resnet50),
    # fixed scattering front end + GroupNorm; model.norm does not apply
    "scatter_linear": lambda in_channels, num_classes, _norm: scatter_linear(
        in_channels, num_classes
    ),
    "scatter_cnn": lambda in_channels, num_classes, _norm: scatter_cnn(in_channels, num_classes),
}
MODEL_NAMES: tuple[str, ...] = tuple(BUILDERS)


def build_model(
    name: str,
    in_channels: int,
    num_classes: int,
    norm: str = "batch",
    pretrained_path: Path | None = None,
) -> nn.Module:
    """A freshly initialised model, or one loaded from a local state dict at ``pretrained_path``.

    ResNets keep torchvision's 7x7 stride-2 stem and max-pool (fast on 64 px CPU training);
    only the stem's input channels and the head's outputs change.
    """
    if name not in BUILDERS:
        raise ModelError(f"model.name={name!r} is not known: use one of {', '.join(MODEL_NAMES)}")
    if in_channels not in (1, 3):
        raise ModelError(f"data.channels={in_channels} is not supported: use 1 or 3")
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
    model = BUILDERS[name](in_channels, num_classes, norm_factory(norm))
    if pretrained_path is not None:
        report = load_pretrained(model, Path(pretrained_path))
        logger.info("%s: %s", pretrained_path, report.summary())
    return model


def bn_state_keys(model: nn.Module) -> set[str]:
    """State-dict keys of every BatchNorm parameter and buffer (what FedBN keeps local)."""
    keys: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{module_name}." if module_name else ""
            keys.update(prefix + key for key in module.state_dict())
    return keys
