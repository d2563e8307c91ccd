"""The streaming cache and loader: a big set never sits in memory whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfed.data import cache, loader
from medfed.data.cache import decode_images, load_images
from medfed.data.loader import ArrayLoader
from medfed.data.readers import scan_dataset
from medfed.data.synthetic import write_synthetic_dataset


def test_cache_is_written_chunk_by_chunk(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = scan_dataset(kaggle_dataset)
    monkeypatch.setattr(cache, "CHUNK_BYTES", 5 * 24 * 24)  # five images per chunk
    chunks: list[tuple[int, int]] = []
    original = cache._releaser

    def spying(mapped, offset, target):
        release = original(mapped, offset, target)

        def record(start: int, stop: int) -> None:
            chunks.append((start, stop))
            release(start, stop)

        return record

    monkeypatch.setattr(cache, "_releaser", spying)
    images = load_images(manifest, 24, 1, tmp_path / "cache")
    assert chunks[0] == (0, 5) and chunks[-1] == (30, 32) and len(chunks) == 7
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    assert isinstance(images, np.memmap) and not images.flags.writeable
    np.testing.assert_array_equal(images, decode_images(manifest, 24, 1))


def test_decoding_memory_stays_below_the_array(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "big", n_per_class=200, size=128, channels=3)
    script = (
        "import resource, sys; from pathlib import Path\n"
        "from medfed.data import cache\n"
        "from medfed.data.readers import scan_dataset\n"
        "cache.CHUNK_BYTES = 2**20\n"
        "manifest = scan_dataset(Path(sys.argv[1]))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "images = cache.load_images(manifest, 128, 3, Path(sys.argv[2]))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024, images.nbytes)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(root), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    grown, size = int(out[0]), int(out[1])
    assert size == 400 * 3 * 128 * 128
    assert grown < size / 2, f"peak memory grew by {grown} bytes for a {size}-byte cache"


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_streams_rows_of_a_cached_set(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shuffle: bool
) -> None:
    manifest = scan_dataset(kaggle_dataset)
    images = load_images(manifest, 16, 1, tmp_path)
    labels = manifest.labels
    subset = np.array([0, 1, 2, 5, 9, 10, 11, 20, 31, 30])
    copied = ArrayLoader(images, labels, subset, batch_size=4, shuffle=shuffle, seed=3)
    monkeypatch.setattr(loader, "COPY_LIMIT_BYTES", 0)
    streamed = ArrayLoader(images, labels, subset, batch_size=4, shuffle=shuffle, seed=3)
    assert streamed.file is not None and len(streamed.images) == 0  # nothing copied up front
    assert copied.file is None
    assert len(streamed) == len(copied) == 3
    for (xs, ys), (xc, yc) in zip(streamed, copied, strict=True):
        assert np.array_equal(ys.numpy(), yc.numpy())
        assert np.array_equal(xs.numpy(), xc.numpy())


def test_loader_copies_a_view_of_a_cache_file(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = load_images(scan_dataset(kaggle_dataset), 16, 1, tmp_path)
    monkeypatch.setattr(loader, "COPY_LIMIT_BYTES", 0)
    part = ArrayLoader(images[4:], np.zeros(28, dtype=np.int64), batch_size=8)
    assert part.file is None  # a slice's memmap offset is not its file offset: copy instead
    first, _ = next(iter(part))
    np.testing.assert_allclose(first.numpy(), images[4:12] / 255.0, rtol=1e-6)
