"""Clipping a hospital's update before it is encoded (client-level DP, clipping at the client)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT, get_norm

from medfed.privacy.clipping import (
    CLIPPING_NORM_KEY,
    NORM_BIT_KEY,
    clip_update,
    update_norm,
)


def update(scale: float) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.normal(0, scale, (8, 3, 3)).astype(np.float32),
        rng.normal(0, scale, (8,)).astype(np.float32),
        np.array(12, dtype=np.int64),
    ]


def test_large_update_is_scaled_to_the_clipping_norm() -> None:
    original = update(1.0)
    clipped, was_clipped = clip_update(original, 0.5)
    assert was_clipped
    assert update_norm(clipped) == pytest.approx(0.5, rel=1e-5)
    ratio = clipped[0] / original[0]
    assert np.allclose(ratio, ratio.flat[0])  # same direction, one factor
    assert clipped[2] == 12 and clipped[2].dtype == np.int64


def test_small_update_is_unchanged() -> None:
    original = update(1e-3)
    clipped, was_clipped = clip_update(original, 10.0)
    assert not was_clipped
    assert all(np.array_equal(a, b) for a, b in zip(original, clipped, strict=True))
    assert clipped[0] is not original[0]


def test_norm_matches_flower_on_float_tensors_and_keys_match_flower() -> None:
    floats = update(0.3)[:2]
    assert update_norm(floats) == pytest.approx(get_norm(floats), rel=1e-6)
    assert (CLIPPING_NORM_KEY, NORM_BIT_KEY) == (KEY_CLIPPING_NORM, KEY_NORM_BIT)


def test_zero_update_and_bad_norm() -> None:
    zeros = [np.zeros(4, np.float32)]
    assert clip_update(zeros, 1.0)[1] is False
    with pytest.raises(ValueError, match="positive"):
        clip_update(zeros, 0.0)
