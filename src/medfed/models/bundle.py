"""A model file as a hospital uses it: the weights, the classes, and the preprocessing the model
was trained with (image size, channels, normalisation), all read from the file itself.

Two files are understood: the model a run hands out (``medfed runs``/dashboard download:
``{"state_dict", "meta": {"run_id", "round", "config"}}``, the run's own definition in
``config``) and the ``model.pt`` of ``medfed train-central`` (format ``medfed-model/1``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfed.errors import ModelError
from medfed.models.checkpoint import FORMAT as CENTRAL_FORMAT
from medfed.models.registry import build_model


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input: resized to ``image_size`` square, ``channels`` 1 (grey)
    or 3 (RGB), then ``(x / 255 - mean) / std``."""

    image_size: int
    channels: int
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelBundle:
    """A rebuilt model (in eval mode) and everything needed to use it."""

    model: nn.Module
    model_name: str
    norm: str
    class_names: list[str]
    preprocessing: Preprocessing
    source: str  # e.g. "run 1a2b3c4d round 5" or "centralized training"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_model_file(path: Path) -> ModelBundle:
    """Read a model file (see the module); one ModelError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found: check the path (or give a run id)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign content
        raise ModelError(
            f"{path}: not a readable model file ({type(exc).__name__}); download the model "
            "again from the dashboard or `medfed runs`"
        ) from None
    if not isinstance(content, dict) or "state_dict" not in content:
        raise ModelError(f"{path}: not a medfed model file (no state_dict)")
    return bundle_from_content(content, str(path))


def bundle_from_content(content: dict[str, Any], where: str) -> ModelBundle:
    """A :class:`ModelBundle` from a loaded model file's dict (``where`` names it in errors)."""
    if content.get("format") == CENTRAL_FORMAT:
        spec = content.get("model", {})
        data = (content.get("extra") or {}).get("data") or {}
        names = content.get("class_names")
        model_name, norm, source = spec.get("name"), spec.get("norm", "batch"), "centralized"
        data = {**data, "channels": data.get("channels", spec.get("in_channels"))}
    else:
        meta = content.get("meta") or {}
        config = meta.get("config") or {}
        data = config.get("data") or {}
        names = data.get("class_names")
        model = config.get("model") or {}
        model_name, norm = model.get("name"), model.get("norm", "batch")
        source = f"run {str(meta.get('run_id', '?'))[:8]} round {meta.get('round', '?')}"
    preprocessing = _preprocessing(data, where)
    state = content["state_dict"]
    if not isinstance(model_name, str):
        raise ModelError(f"{where}: the model file does not name its model (model.name)")
    if not names:
        names = [str(k) for k in range(_output_count(state, where))]
    model = build_model(model_name, preprocessing.channels, len(names), norm)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(
            f"{where}: the weights do not fit {model_name} with {preprocessing.channels} "
            f"channel(s) and {len(names)} classes ({first})"
        ) from None
    model.eval()
    return ModelBundle(model, model_name, norm, [str(n) for n in names], preprocessing, source)


def _preprocessing(data: dict[str, Any], where: str) -> Preprocessing:
    missing = [
        key
        for key in ("image_size", "channels", "normalize_mean", "normalize_std")
        if not isinstance(data.get(key), int | float) or isinstance(data.get(key), bool)
    ]
    if missing:
        raise ModelError(
            f"{where}: the model file does not record its preprocessing (data."
            f"{', data.'.join(missing)}), so it cannot be run safely; download it again from "
            "the platform"
        )
    size, channels = int(data["image_size"]), int(data["channels"])
    mean, std = float(data["normalize_mean"]), float(data["normalize_std"])
    if size < 8 or channels not in (1, 3) or not math.isfinite(mean) or not std > 0:
        raise ModelError(
            f"{where}: the recorded preprocessing is not usable (image_size {size}, "
            f"channels {channels}, normalize_mean {mean}, normalize_std {std})"
        )
    return Preprocessing(size, channels, mean, std)


def _output_count(state: dict[str, Any], where: str) -> int:
    """Classes of a classifier whose file names none: the rows of its last 2-D weight."""
    weights = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    if not weights:
        raise ModelError(f"{where}: the model file names no classes and has no linear head")
    return int(weights[-1].shape[0])


def with_class_names(content: dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """A run's model file with ``class_names`` filled into its config when it has none."""
    meta = dict(content.get("meta") or {})
    config = dict(meta.get("config") or {})
    data = dict(config.get("data") or {})
    if data.get("class_names") or not class_names:
        return content
    data["class_names"] = list(class_names)
    return {**content, "meta": {**meta, "config": {**config, "data": data}}}
