"""Load local pretrained weights into a model, adapting the stem and head where they differ."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medfed.errors import ModelError

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
SHOWN = 3


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with each tensor of the file."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped_statistics: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded) + len(self.adapted)} tensors"]
        if self.adapted:
            parts.append(f"adapted the input channels of {', '.join(self.adapted)}")
        if self.skipped:
            parts.append(f"skipped {', '.join(self.skipped)} (kept freshly initialised)")
        if self.dropped_statistics:
            parts.append(f"dropped {len(self.dropped_statistics)} BatchNorm statistics")
        return "; ".join(parts)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt``/``.pth`` file: a bare state dict or one wrapped in a checkpoint."""
    if not path.is_file():
        raise ModelError(
            f"pretrained weights {path} not found: put a PyTorch state dict (.pt/.pth) there "
            "or remove model.pretrained_path"
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: not a readable PyTorch state dict ({exc.__class__.__name__}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from None
    for key in WRAPPER_KEYS:
        if isinstance(content, Mapping) and isinstance(content.get(key), Mapping):
            content = content[key]
            break
    if not isinstance(content, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in content.values()
    ):
        raise ModelError(
            f"{path}: holds no state dict of tensors; save one with "
            "torch.save(model.state_dict(), path)"
        )
    return {key.removeprefix("module."): value for key, value in content.items()}


def _first_and_last(model: nn.Module) -> tuple[str | None, set[str]]:
    """The stem convolution's weight key and the classifier head's keys."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    stem = f"{convs[0]}.weight" if convs else None
    head = {f"{linears[-1]}.weight", f"{linears[-1]}.bias"} if linears else set()
    return stem, head


def _adapt_stem(weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``weight`` with ``target``'s input channels, or None when more than those differ.

    RGB -> grey sums over input channels (a grey image repeated 3x gives the same response);
    grey -> RGB spreads the kernel evenly over the three channels.
    """
    if (
        weight.dim() != 4
        or weight.shape[:1] + weight.shape[2:] != target.shape[:1] + target.shape[2:]
    ):
        return None
    if weight.shape[1] == 3 and target.shape[1] == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1 and target.shape[1] == 3:
        return weight.repeat(1, 3, 1, 1) / 3
    return None


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def load_pretrained(model: nn.Module, path: Path) -> LoadReport:
    """Copy the weights at ``path`` into ``model``.

    The stem convolution is adapted between 1 and 3 input channels, a head of another shape
    (e.g. ImageNet's 1000 classes) is skipped, and BatchNorm running statistics are dropped for
    a GroupNorm model. Anything else that does not fit raises :class:`ModelError`.
    """
    source = read_state_dict(path)
    target = model.state_dict()
    stem, head = _first_and_last(model)
    report, problems, new_state = LoadReport(), [], {}
    for key, tensor in target.items():
        given = source.get(key)
        if given is None:
            if key in head:
                report.skipped.append(key)
            elif key.endswith("num_batches_tracked"):
                report.dropped_statistics.append(key)
            else:
                problems.append(f"{key} missing")
        elif given.shape == tensor.shape:
            new_state[key] = given
            report.loaded.append(key)
        elif key == stem and (adapted := _adapt_stem(given, tensor)) is not None:
            new_state[key] = adapted
            report.adapted.append(key)
        elif key in head:
            report.skipped.append(key)
        else:
            problems.append(f"{key} is {_shape(given)}, model needs {_shape(tensor)}")
    for key in source.keys() - target.keys():
        if key.endswith(BN_BUFFERS):
            report.dropped_statistics.append(key)
        else:
            problems.append(f"{key} not in the model")
    if problems:
        more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise ModelError(
            f"{path}: weights do not fit this model ({'; '.join(problems[:SHOWN])}{more}); "
            "check model.name and model.norm match the file, or remove model.pretrained_path"
        )
    model.load_state_dict(new_state, strict=False)
    return report
