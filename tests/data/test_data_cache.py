"""The decoded-image cache and load_image_set: decode once, reuse, invalidate on change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import medfed.data.cache as cache
import medfed.data.readers as readers
from medfed.config import DataConfig
from medfed.data.cache import load_images
from medfed.data.datasets import load_image_set, resolve_test_path
from medfed.data.images import load_resized
from medfed.data.readers import scan_dataset
from medfed.errors import DataError


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every image the cache decodes."""
    calls: list[Path] = []

    def counting(path: Path, size: int, channels: int) -> np.ndarray:
        calls.append(path)
        return load_resized(path, size, channels)

    monkeypatch.setattr(cache, "load_resized", counting)
    return calls


def test_decodes_once_then_memory_maps(
    kaggle_dataset: Path, tmp_path: Path, decode_calls: list[Path]
) -> None:
    manifest = scan_dataset(kaggle_dataset)
    first = load_images(manifest, 24, 1, tmp_path / "cache", progress=True)
    assert first.shape == (32, 1, 24, 24) and first.dtype == np.uint8
    assert len(decode_calls) == 32
    np.testing.assert_array_equal(first[5], load_resized(manifest.samples[5].path, 24, 1))
    second = load_images(manifest, 24, 1, tmp_path / "cache")
    assert len(decode_calls) == 32  # nothing decoded again
    assert isinstance(second, np.memmap) and not second.flags.writeable
    np.testing.assert_array_equal(first, second)
    files = os.listdir(tmp_path / "cache")
    assert len(files) == 1 and files[0].endswith(".npy")  # no temporary file left behind


def test_changed_file_invalidates(kaggle_dataset: Path, tmp_path: Path, decode_calls: list) -> None:
    manifest = scan_dataset(kaggle_dataset)
    before = np.array(load_images(manifest, 16, 1, tmp_path))
    path = manifest.samples[3].path
    tifffile.imwrite(path, np.full((32, 32), 255, dtype=np.uint8))
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse-clock file system
    after = load_images(manifest, 16, 1, tmp_path)
    assert len(decode_calls) == 64
    assert after[3].min() == 255 and before[3].min() < 255
    np.testing.assert_array_equal(after[4], before[4])
    assert len(list(tmp_path.glob("images-*.npy"))) == 2


def test_size_and_channels_are_part_of_the_key(kaggle_dataset: Path, tmp_path: Path) -> None:
    manifest = scan_dataset(kaggle_dataset)
    assert load_images(manifest, 16, 1, tmp_path).shape == (32, 1, 16, 16)
    assert load_images(manifest, 20, 3, tmp_path).shape == (32, 3, 20, 20)
    assert len(list(tmp_path.glob("images-*.npy"))) == 2


def test_corrupt_cache_file_is_rebuilt(kaggle_dataset: Path, tmp_path: Path) -> None:
    manifest = scan_dataset(kaggle_dataset)
    expected = np.array(load_images(manifest, 16, 1, tmp_path))
    cached = next(tmp_path.glob("images-*.npy"))
    cached.write_bytes(b"garbage")
    np.testing.assert_array_equal(load_images(manifest, 16, 1, tmp_path), expected)


def test_decode_failure_names_the_file(kaggle_dataset: Path, tmp_path: Path) -> None:
    (kaggle_dataset / "train" / "img00007.tif").write_bytes(b"junk")
    manifest = scan_dataset(kaggle_dataset, check_images=False)
    with pytest.raises(DataError, match=r"1 unreadable.*img00007\.tif"):
        load_images(manifest, 16, 1, tmp_path)
    assert not list(tmp_path.glob("*.npy"))


def test_concurrent_processes_share_one_cache(kaggle_dataset: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path\n"
        "from medfed.data.readers import scan_dataset\n"
        "from medfed.data.cache import load_images\n"
        "images = load_images(scan_dataset(Path(sys.argv[1])), 16, 1, Path(sys.argv[2]))\n"
        "print(int(images.sum()))\n"
    )
    args = [sys.executable, "-c", script, str(kaggle_dataset), str(tmp_path / "cache")]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    sums = [run.communicate(timeout=60)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sums[0] == sums[1]
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]


def test_load_image_set(kaggle_dataset: Path, tmp_path: Path) -> None:
    cfg = DataConfig(path=kaggle_dataset, image_size=16, channels=3)
    image_set = load_image_set(kaggle_dataset, cfg, tmp_path)
    assert image_set.images.shape == (32, 3, 16, 16)
    assert len(image_set) == 32 and image_set.class_names == ["0", "1"]
    assert image_set.labels.tolist() == scan_dataset(kaggle_dataset).labels.tolist()
    assert image_set.ids[0] == "img00000"


def test_image_checks_are_remembered(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process start reads no image headers for an unchanged, already checked set."""
    probes: list[Path] = []
    real_probe = readers.probe_image
    monkeypatch.setattr(
        readers, "probe_image", lambda path: probes.append(path) or real_probe(path)
    )
    (kaggle_dataset / "train" / "img00002.tif").write_bytes(b"junk")
    cfg = DataConfig(path=kaggle_dataset, image_size=16, skip_bad=True)
    first = load_image_set(kaggle_dataset, cfg, tmp_path)
    assert len(probes) == 32 and len(first) == 31
    second = load_image_set(kaggle_dataset, cfg, tmp_path)
    assert len(probes) == 32
    assert second.ids == first.ids
    np.testing.assert_array_equal(second.images, first.images)
    with pytest.raises(DataError, match="img00002.tif"):
        load_image_set(kaggle_dataset, cfg.model_copy(update={"skip_bad": False}), tmp_path)


def test_test_set_uses_training_class_names(kaggle_dataset: Path, tmp_path: Path) -> None:
    cfg = DataConfig(path=kaggle_dataset, image_size=16)
    test_path = resolve_test_path(cfg)
    assert test_path == kaggle_dataset / "test"
    test_set = load_image_set(test_path, cfg, tmp_path, class_names=["neg", "pos"])
    assert test_set.class_names == ["neg", "pos"] and len(test_set) == 12


def test_resolve_test_path(tmp_path: Path, folder_dataset: Path) -> None:
    assert resolve_test_path(DataConfig(path=tmp_path)) is None
    assert resolve_test_path(DataConfig(path=tmp_path, test_path=folder_dataset)) == folder_dataset
    with pytest.raises(DataError, match="data.test_path"):
        resolve_test_path(DataConfig(path=tmp_path, test_path=tmp_path / "missing"))


def test_scanning_does_not_import_torch() -> None:
    script = (
        "import sys, medfed.data, medfed.data.datasets, medfed.data.partition\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_damaged_check_record_is_ignored(kaggle_dataset: Path, tmp_path: Path) -> None:
    cfg = DataConfig(path=kaggle_dataset, image_size=16)
    load_image_set(kaggle_dataset, cfg, tmp_path)
    next(tmp_path.glob("scan-*.json")).write_text("{not json")
    assert len(load_image_set(kaggle_dataset, cfg, tmp_path)) == 32
