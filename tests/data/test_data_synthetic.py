"""The synthetic datasets the other tests build on."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medfed.data.synthetic import write_synthetic_dataset
from medfed.errors import DataError


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_kaggle_fixture_layout(kaggle_dataset: Path) -> None:
    rows = _rows(kaggle_dataset / "train_labels.csv")
    assert len(rows) == 32
    assert sorted(int(r["label"]) for r in rows) == [0] * 16 + [1] * 16
    assert all((kaggle_dataset / "train" / f"{r['id']}.tif").is_file() for r in rows)
    test_rows = _rows(kaggle_dataset / "test" / "train_labels.csv")
    assert len(test_rows) == 12
    assert not {r["id"] for r in rows} & {r["id"] for r in test_rows}


def test_folder_fixture_layout(folder_dataset: Path) -> None:
    assert len(list((folder_dataset / "class_0").glob("*.tif"))) == 16
    assert len(list((folder_dataset / "class_1").glob("*.tif"))) == 16
    assert len(list((folder_dataset / "test" / "class_1").glob("*.tif"))) == 6


@pytest.mark.parametrize(("channels", "dtype"), [(1, "uint8"), (3, "uint8"), (1, "uint16")])
def test_image_format(tmp_path: Path, channels: int, dtype: str) -> None:
    root = write_synthetic_dataset(tmp_path, n_per_class=2, size=24, channels=channels, dtype=dtype)
    image = tifffile.imread(next((root / "train").glob("*.tif")))
    assert image.dtype == np.dtype(dtype)
    assert image.shape == ((24, 24) if channels == 1 else (24, 24, 3))


def test_classes_differ_by_brightness(tmp_path: Path) -> None:
    """The disk grows with the class, so mean brightness separates the classes."""
    root = write_synthetic_dataset(tmp_path, n_per_class=10, num_classes=3)
    rows = _rows(root / "train_labels.csv")
    means = {0: [], 1: [], 2: []}
    for row in rows:
        means[int(row["label"])].append(tifffile.imread(root / "train" / f"{row['id']}.tif").mean())
    assert max(means[0]) < min(means[1]) and max(means[1]) < min(means[2])


def test_same_seed_same_data(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", n_per_class=3, seed=5)
    b = write_synthetic_dataset(tmp_path / "b", n_per_class=3, seed=5)
    for path in (a / "train").glob("*.tif"):
        assert np.array_equal(tifffile.imread(path), tifffile.imread(b / "train" / path.name))


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dtype"):
        write_synthetic_dataset(tmp_path, dtype="float32")
