"""The ROC curve of a model on a held-out test set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.preprocessing import label_binarize

from medfed.config import config_from_dict, run_definition
from medfed.data.datasets import ImageSet, load_image_set, resolve_test_path
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import BatchTransform, eval_transform
from medfed.errors import DataError, ModelError, StoreError
from medfed.learning.trainer import BatchLoader, predict_proba
from medfed.models import build_model
from medfed.store.artifacts import ArtifactStore


@dataclass(frozen=True)
class RocData:
    """False/true positive rates at every threshold, and the area under the curve.

    Binary tasks use the probability of the last class; with more classes the curve is the
    micro-average of one-vs-rest curves (``averaged`` is then True).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    num_samples: int = 0
    class_names: list[str] = field(default_factory=list)
    averaged: bool = False

    @property
    def positive_class(self) -> str | None:
        """The class whose probability is scored, for a binary task."""
        return self.class_names[-1] if self.class_names and not self.averaged else None


def roc_from_predictions(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str] | None = None
) -> RocData:
    """ROC of class probabilities ``probs`` (N x C) against true labels ``y_true`` (N)."""
    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or len(probs) != len(y_true) or probs.shape[1] < 2:
        raise DataError(
            f"ROC needs N x C class probabilities for N labels, got {probs.shape} "
            f"for {len(y_true)} labels"
        )
    if len(np.unique(y_true)) < 2:
        raise DataError("the test set holds a single class: its ROC curve is not defined")
    num_classes = probs.shape[1]
    names = list(class_names or [str(k) for k in range(num_classes)])
    if num_classes == 2:
        fpr, tpr, _ = roc_curve(y_true, probs[:, 1])
        auc = roc_auc_score(y_true, probs[:, 1])
        return RocData(fpr, tpr, float(auc), len(y_true), names)
    onehot = label_binarize(y_true, classes=np.arange(num_classes))
    fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
    auc = roc_auc_score(onehot, probs, average="micro")
    return RocData(fpr, tpr, float(auc), len(y_true), names, averaged=True)


def compute_roc(
    model: torch.nn.Module, loader: BatchLoader, class_names: list[str] | None = None
) -> RocData:
    """ROC of ``model`` over every batch of ``loader`` (the held-out test set)."""
    y_true, probs = predict_proba(model, loader)
    return roc_from_predictions(y_true, probs, class_names)


@dataclass
class ScoredModel:
    """A stored model rebuilt and run over the held-out test set."""

    model: torch.nn.Module
    test_set: ImageSet
    transform: BatchTransform
    class_names: list[str]
    y_true: np.ndarray
    y_prob: np.ndarray

    @property
    def roc(self) -> RocData:
        return roc_from_predictions(self.y_true, self.y_prob, self.class_names)


def roc_of_checkpoint(
    config: dict[str, Any],
    checkpoint_path: Path,
    artifacts: ArtifactStore,
    *,
    cache_dir: Path | None = None,
    run_id: str | None = None,
    round: int | None = None,
) -> RocData:
    """ROC of a stored (encrypted) model on the held-out test set named by the run's config
    (see :func:`score_checkpoint`)."""
    return score_checkpoint(
        config, checkpoint_path, artifacts, cache_dir=cache_dir, run_id=run_id, round=round
    ).roc


def score_checkpoint(
    config: dict[str, Any],
    checkpoint_path: Path,
    artifacts: ArtifactStore,
    *,
    cache_dir: Path | None = None,
    run_id: str | None = None,
    round: int | None = None,
) -> ScoredModel:
    """A stored (encrypted) model's class probabilities on the held-out test set named by the
    run's config; the checkpoint must belong to ``run_id`` and ``round`` when they are given.
    Decoded test images are cached in the run's ``data.cache_dir``, else ``cache_dir``, else
    next to the artifacts."""
    cfg = config_from_dict(run_definition(config), "the run's stored config")
    test_path = resolve_test_path(cfg.data)
    if test_path is None:
        raise DataError(
            f"the run's config names no held-out test set: data.test_path is unset and "
            f"{Path(cfg.data.path) / 'test'} does not exist"
        )
    path = Path(checkpoint_path)
    if not path.is_absolute() and path.exists():
        path = path.resolve()
    if not artifacts.path_of(path).is_file():
        raise StoreError(f"checkpoint file {artifacts.path_of(path)} is missing")
    cache = cfg.data.cache_dir or cache_dir or artifacts.root.parent / "cache"
    test_set = load_image_set(test_path, cfg.data, cache, class_names=cfg.data.class_names)
    class_names = list(cfg.data.class_names or test_set.class_names)
    model = build_model(cfg.model.name, cfg.data.channels, len(class_names), cfg.model.norm)
    state_dict, _ = artifacts.load_state_dict(path, run_id=run_id, round=round)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise ModelError(
            f"checkpoint {path} does not fit model {cfg.model.name} with "
            f"{len(class_names)} classes: {first_line}"
        ) from None
    transform = eval_transform(cfg.data)
    loader = ArrayLoader(test_set.images, test_set.labels, batch_size=128, transform=transform)
    y_true, y_prob = predict_proba(model, loader)
    return ScoredModel(model, test_set, transform, class_names, y_true, y_prob)
