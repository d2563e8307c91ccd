"""Shared fixtures: tiny learnable synthetic TIFF datasets written into each test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfed.data.synthetic import write_synthetic_dataset


@pytest.fixture
def kaggle_dataset(tmp_path: Path) -> Path:
    """Kaggle layout: 2 classes x 16 grey 32 px TIFFs, plus a held-out test/ of 6 per class."""
    return write_synthetic_dataset(
        tmp_path / "kaggle",
        layout="kaggle",
        n_per_class=16,
        num_classes=2,
        size=32,
        test_per_class=6,
    )


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """Class-folder layout: 2 classes x 16 grey 32 px TIFFs, plus test/ with 6 per class."""
    return write_synthetic_dataset(
        tmp_path / "folders",
        layout="folders",
        n_per_class=16,
        num_classes=2,
        size=32,
        test_per_class=6,
    )
