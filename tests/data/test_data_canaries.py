"""Canaries: mislabelled training images planted for the privacy audit, and their held-out twins."""

from __future__ import annotations

import numpy as np
import pytest

from medfed.data.canaries import plant_canaries
from medfed.errors import DataError


def test_no_canaries_leave_the_labels_alone() -> None:
    labels = np.array([0, 1, 2, 0])
    canaries = plant_canaries(labels, 0, num_classes=3, seed=0)
    assert np.array_equal(canaries.labels, labels)
    assert canaries.planted.size == canaries.held_out.size == 0


def test_canaries_get_another_class_and_are_planted_or_held_out() -> None:
    labels = np.random.default_rng(0).integers(0, 3, 200)
    canaries = plant_canaries(labels, 20, num_classes=3, seed=5)
    changed = np.flatnonzero(canaries.labels != labels)
    chosen = np.concatenate([canaries.planted, canaries.held_out])
    assert len(canaries.planted) == len(canaries.held_out) == 20
    assert np.array_equal(np.sort(chosen), changed)  # every canary, and nothing else, changed
    assert set(np.unique(canaries.labels[changed])) <= {0, 1, 2}
    assert np.array_equal(labels, np.random.default_rng(0).integers(0, 3, 200))  # not in place
    again = plant_canaries(labels, 20, num_classes=3, seed=5)
    assert np.array_equal(again.planted, canaries.planted)
    assert np.array_equal(again.labels, canaries.labels)
    other = plant_canaries(labels, 20, num_classes=3, seed=6)
    assert not np.array_equal(other.planted, canaries.planted)


def test_too_many_canaries_name_the_key_and_the_limit() -> None:
    with pytest.raises(DataError, match=r"privacy.canaries=11.*40 images.*at most 10"):
        plant_canaries(np.zeros(40, np.int64), 11, num_classes=2, seed=0)


def test_planted_and_held_out_canaries_carry_the_same_wrong_labels() -> None:
    labels = np.random.default_rng(1).integers(0, 4, 400)
    canaries = plant_canaries(labels, 60, num_classes=4, seed=3)
    planted = np.bincount(canaries.labels[canaries.planted], minlength=4)
    held_out = np.bincount(canaries.labels[canaries.held_out], minlength=4)
    assert np.all(np.abs(planted - held_out) <= 1), (planted, held_out)
    assert planted.sum() == held_out.sum() == 60
