"""A trained model on disk: its weights plus what is needed to rebuild and use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfed.errors import ModelError
from medfed.models.registry import build_model

FORMAT = "medfed-model/1"


@dataclass
class Checkpoint:
    """A rebuilt model with its class names and the settings it was trained with."""

    model: nn.Module
    class_names: list[str]
    model_name: str
    norm: str
    in_channels: int
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    *,
    model_name: str,
    norm: str,
    in_channels: int,
    class_names: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict and how to rebuild it to ``path`` (``torch.save``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "state_dict": model.state_dict(),
            "model": {"name": model_name, "norm": norm, "in_channels": in_channels},
            "class_names": list(class_names),
            "extra": extra or {},
        },
        path,
    )
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild the model saved by :func:`save_checkpoint` at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model checkpoint {path} not found: check the path")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: not a readable model checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ModelError(
            f"{path}: not a medfed model checkpoint (no format {FORMAT!r}); for bare weights "
            "use model.pretrained_path instead"
        )
    spec, class_names = content["model"], content["class_names"]
    model = build_model(spec["name"], spec["in_channels"], len(class_names), spec["norm"])
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{path}: weights do not fit {spec['name']} ({first})") from None
    return Checkpoint(
        model=model,
        class_names=list(class_names),
        model_name=spec["name"],
        norm=spec["norm"],
        in_channels=spec["in_channels"],
        extra=content.get("extra", {}),
    )
