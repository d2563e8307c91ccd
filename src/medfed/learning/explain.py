"""Where a classifier looks: Grad-CAM heat maps (captum) and the test images worth showing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medfed.models.scatter import ScatterNet

MIN_MAP_SIZE = 6  # the deepest layer whose maps are at least this wide is explained
BINARY_KINDS = ("true positive", "false positive", "false negative", "true negative")


@dataclass(frozen=True)
class Pick:
    """A test image chosen for explanation: its row, kind and the class explained."""

    index: int
    kind: str
    target: int


def candidate_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose activations Grad-CAM may use, shallow to deep: the normalisation of each
    block of the small CNN, a ResNet's four stages, a ScatterNet's trained body on its fixed
    scattering features, else every Conv2d."""
    if isinstance(model, ScatterNet):
        return [model.body]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and all(len(block) > 1 for block in features):
        return [block[1] for block in features]
    stages = [getattr(model, f"layer{k}", None) for k in range(1, 5)]
    if all(stage is not None for stage in stages):
        return stages
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def target_layer(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """The deepest candidate layer whose maps are at least MIN_MAP_SIZE wide for this input
    (the coarsest maps of a small image say little about where the model looks)."""
    layers = candidate_layers(model)
    sizes: dict[int, int] = {}
    hooks = [
        layer.register_forward_hook(
            lambda module, _inputs, output: sizes.__setitem__(id(module), output.shape[-1])
        )
        for layer in layers
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    wide = [layer for layer in layers if sizes.get(id(layer), 0) >= MIN_MAP_SIZE]
    return wide[-1] if wide else layers[0]


def grad_cam(model: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    """Grad-CAM heat maps of ``model`` for each image of the float batch ``x`` and its target
    class: float32 (N, H, W) in 0..1 at the input's size (0 everywhere when no evidence)."""
    from captum.attr import LayerAttribution, LayerGradCam

    was_training = model.training
    model.eval()
    try:
        layer = target_layer(model, tuple(x.shape[1:]))
        cam = LayerGradCam(model, layer).attribute(
            x, target=torch.as_tensor(targets), relu_attributions=True
        )
        cam = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), "bilinear")
    finally:
        model.train(was_training)
    maps = cam[:, 0].clamp(min=0).numpy().astype(np.float32)
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peaks > 0, peaks, 1.0)[:, None, None]


def pick_examples(
    y_true: np.ndarray, y_prob: np.ndarray, per_kind: int = 4, threshold: float = 0.5
) -> list[Pick]:
    """Test images to explain: the most confident true and false positives and negatives of a
    binary task (at ``threshold`` on the positive class), or the most confident right and
    wrong predictions with more classes; each explained for its predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    picks: list[Pick] = []
    if y_prob.shape[1] == 2:
        positive = y_prob[:, 1]
        predicted = (positive >= threshold).astype(np.int64)
        groups = {
            "true positive": (predicted == 1) & (y_true == 1),
            "false positive": (predicted == 1) & (y_true == 0),
            "false negative": (predicted == 0) & (y_true == 1),
            "true negative": (predicted == 0) & (y_true == 0),
        }
        confidence = np.where(predicted == 1, positive, 1.0 - positive)
    else:
        predicted = y_prob.argmax(axis=1)
        groups = {"correct": predicted == y_true, "misclassified": predicted != y_true}
        confidence = y_prob.max(axis=1)
    for kind, members in groups.items():
        rows = np.flatnonzero(members)
        rows = rows[np.argsort(-confidence[rows], kind="stable")][:per_kind]
        picks.extend(Pick(int(row), kind, int(predicted[row])) for row in rows)
    return picks
