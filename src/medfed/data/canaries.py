"""Canaries for privacy audits: training images given a wrong label on purpose.

A model that memorises its training set learns these labels it could not have inferred, so a
membership attack tells the planted canaries from canaries held out of training far more easily
than it tells ordinary images apart: the worst case that differential privacy bounds. Half of
the chosen images are planted (they stay in training, mislabelled), half are held out (removed
from training, mislabelled the same way) as the attack's non-members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfed.errors import DataError


@dataclass(frozen=True)
class Canaries:
    """Labels with the canaries' changed, and which canaries are planted or held out."""

    labels: np.ndarray
    planted: np.ndarray
    held_out: np.ndarray

    @classmethod
    def none(cls, labels: np.ndarray) -> Canaries:
        """No canaries: the labels as they are."""
        empty = np.zeros(0, np.int64)
        return cls(np.asarray(labels), empty, empty)


def plant_canaries(labels: np.ndarray, count: int, num_classes: int, seed: int) -> Canaries:
    """Pick ``2 * count`` images (seeded), give each another class; plant half, hold out half,
    with as many of each wrong label on both sides (one more at most)."""
    labels = np.asarray(labels)
    if count == 0:
        return Canaries.none(labels)
    limit = len(labels) // 4
    if count > limit:
        raise DataError(
            f"privacy.canaries={count}: the training set has {len(labels)} images, so at most "
            f"{limit} canaries can be planted (and as many held out); lower privacy.canaries"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=2 * count, replace=False)
    shift = rng.integers(1, num_classes, size=2 * count)
    changed = labels.copy()
    changed[chosen] = (labels[chosen] + shift) % num_classes
    # alternate within each wrong label, so planted and held-out canaries carry the same labels:
    # a model that leans to one class must not look like one that remembers
    paired = chosen[np.argsort(changed[chosen], kind="stable")]
    return Canaries(changed, np.sort(paired[0::2]), np.sort(paired[1::2]))
