"""The platform's own evaluation of the global model: its held-out test set and the metrics of
each round's model on it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from torch.utils.data import DataLoader, TensorDataset

from medfed.config import MedfedConfig
from medfed.data.datasets import ImageSet, load_image_set, resolve_test_path
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform
from medfed.errors import FederationError
from medfed.federation.recorder import plain
from medfed.learning.device import measuring_pass
from medfed.learning.trainer import evaluate
from medfed.models.scatter import ScatterHead, ScatterNet


def evaluation_data(cfg: MedfedConfig, home: Path) -> tuple[ImageSet | None, list[str]]:
    """The held-out test set on the platform host (if any) and the class names."""
    cache = cfg.data.cache_dir or home / "cache"
    test_path = resolve_test_path(cfg.data)
    test_set = None
    if test_path is not None:
        test_set = load_image_set(test_path, cfg.data, cache, class_names=cfg.data.class_names)
    if cfg.data.class_names:
        return test_set, list(cfg.data.class_names)
    if test_set is not None:
        return test_set, list(test_set.class_names)
    if Path(cfg.data.path).exists():
        return None, list(load_image_set(cfg.data.path, cfg.data, cache).class_names)
    raise FederationError(
        "the server has no test set to learn the classes from: "
        "set data.class_names (e.g. [no, yes]) or data.test_path"
    )


@dataclass
class CentralEvaluation:
    """A run's model evaluated on the platform's test set (none: no metrics)."""

    cfg: MedfedConfig
    model: torch.nn.Module
    test_set: ImageSet | None
    test_features: TensorDataset | None = field(default=None, init=False)

    def __call__(self, arrays: ArrayRecord, exact: bool) -> dict[str, Any]:
        """The metrics of ``arrays``: in float32 when ``exact`` (the last round's, which become
        the run's final metrics), else as the hospitals measure (see :func:`measuring_pass`:
        bfloat16 where native, within one image of 600 of float32)."""
        if self.test_set is None:
            return {}
        self.model.load_state_dict(arrays.to_torch_state_dict())
        loader = ArrayLoader(
            self.test_set.images,
            self.test_set.labels,
            batch_size=128,
            transform=eval_transform(self.cfg.data),
        )
        if not isinstance(self.model, ScatterNet):
            with contextlib.nullcontext() if exact else measuring_pass(self.model):
                return plain(evaluate(self.model, loader))
        if self.test_features is None:  # fixed: computed in the first round, kept for the run
            self.test_features = TensorDataset(
                self.model.features_of(loader), torch.as_tensor(self.test_set.labels)
            )
        return plain(evaluate(ScatterHead(self.model), DataLoader(self.test_features, 128)))
