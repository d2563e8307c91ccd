"""Partition schemes: disjoint, covering, non-empty, seeded; skew where the scheme promises it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medfed.data.partition import SCHEMES, partition_counts, partition_indices, plot_partition
from medfed.errors import DataError


@st.composite
def split_requests(draw: st.DrawFn) -> tuple[np.ndarray, int, str, float, int, int]:
    num_classes = draw(st.integers(1, 6))
    size = draw(st.integers(1, 300))
    labels = np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=size, max_size=size)))
    scheme = draw(st.sampled_from(SCHEMES))
    classes_per_client = draw(st.integers(1, 3))
    limit = size // classes_per_client if scheme == "shards" else size
    clients = draw(st.integers(1, max(1, min(limit, 20))))
    alpha = draw(st.floats(0.01, 100.0))
    seed = draw(st.integers(0, 2**31))
    return labels, clients, scheme, alpha, classes_per_client, seed


@settings(max_examples=150, deadline=None)
@given(split_requests())
def test_parts_are_disjoint_covering_nonempty_and_seeded(request: tuple) -> None:
    labels, clients, scheme, alpha, classes_per_client, seed = request
    if scheme == "shards" and clients * classes_per_client > len(labels):
        return
    parts = partition_indices(labels, clients, scheme, alpha, classes_per_client, seed)
    assert len(parts) == clients
    assert all(len(part) > 0 for part in parts)
    assert all(part.dtype == np.int64 for part in parts)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels)  # disjoint (no index twice) ...
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))  # ... and covering
    again = partition_indices(labels, clients, scheme, alpha, classes_per_client, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _labels(per_class: int = 200, num_classes: int = 4) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _dominant_share(counts: np.ndarray) -> float:
    """Mean share of each hospital's most common class."""
    return float(np.mean(counts.max(axis=1) / counts.sum(axis=1)))


def test_iid_is_balanced() -> None:
    labels = _labels()
    parts = partition_indices(labels, 4, "iid", seed=1)
    assert sorted(len(part) for part in parts) == [200, 200, 200, 200]
    assert _dominant_share(partition_counts(labels, parts, 4)) < 0.4


def test_small_alpha_dirichlet_is_skewed_large_alpha_is_not() -> None:
    """Balanced classes would give a dominant share of 0.25; small alpha pushes it up."""
    labels = _labels()

    def mean_dominant_share(alpha: float) -> float:
        shares = []
        for seed in range(10):
            parts = partition_indices(labels, 5, "dirichlet", alpha, seed=seed)
            shares.append(_dominant_share(partition_counts(labels, parts, 4)))
        return float(np.mean(shares))

    assert mean_dominant_share(0.05) > 0.7
    assert mean_dominant_share(100) < 0.35


def test_dirichlet_avoids_tiny_hospitals() -> None:
    labels = _labels(per_class=500, num_classes=2)
    for seed in range(5):
        parts = partition_indices(labels, 5, "dirichlet", alpha=0.3, seed=seed)
        assert min(len(part) for part in parts) >= 10


def test_different_seeds_differ() -> None:
    labels = _labels()
    for scheme in SCHEMES:
        a = partition_indices(labels, 4, scheme, seed=1)
        b = partition_indices(labels, 4, scheme, seed=2)
        assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True)), scheme


@pytest.mark.parametrize("classes_per_client", [1, 2])
def test_shards_give_each_hospital_few_classes(classes_per_client: int) -> None:
    labels = _labels(per_class=100, num_classes=10)
    parts = partition_indices(labels, 10, "shards", classes_per_client=classes_per_client, seed=0)
    counts = partition_counts(labels, parts, 10)
    assert ((counts > 0).sum(axis=1) <= classes_per_client).all()
    assert counts.sum(axis=1).tolist() == [100] * 10


def test_quantity_skews_sizes_not_labels() -> None:
    labels = _labels(per_class=500)
    parts = partition_indices(labels, 5, "quantity", alpha=0.3, seed=4)
    sizes = sorted(len(part) for part in parts)
    assert sizes[-1] > 4 * sizes[0]
    counts = partition_counts(labels, parts, 4)
    big = counts[np.argmax(counts.sum(axis=1))]
    assert big.min() / big.max() > 0.7  # the largest hospital still sees every class evenly


def test_impossible_requests_are_clear_errors() -> None:
    with pytest.raises(DataError, match="cannot split 3 images across 5 hospitals"):
        partition_indices(np.array([0, 1, 0]), 5)
    with pytest.raises(DataError, match="unknown partition scheme 'random'"):
        partition_indices(_labels(), 2, "random")
    with pytest.raises(DataError, match="shards: 4 hospitals x 3 classes need at least 12"):
        partition_indices(np.arange(10) % 2, 4, "shards", classes_per_client=3)
    with pytest.raises(DataError, match="at least 1"):
        partition_indices(_labels(), 0)


def test_plot_partition_writes_a_png(tmp_path: Path) -> None:
    labels = _labels()
    counts = partition_counts(labels, partition_indices(labels, 6, "dirichlet", 0.5), 4)
    assert counts.shape == (6, 4) and counts.sum() == len(labels)
    out = plot_partition(counts, ["a", "b", "c", "d"], tmp_path / "charts" / "split.png", "test")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 300
