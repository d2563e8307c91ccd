"""Decoded-image cache: decode and resize a dataset once, then memory-map it.

The cache file ``CACHE_DIR/images-<key>.npy`` holds uint8 (N, C, H, W). Its key hashes each
file's path, size and modification time with the image size and channels, so changing, adding
or removing a file gives a new key. Files are written to a temporary name and renamed, so
processes decoding the same dataset at the same time never see a half-written cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from medfed.data.images import ImageReadError, load_resized
from medfed.data.progress import progress_bar
from medfed.data.readers import DataManifest, Problem, describe_problems
from medfed.errors import DataError

CACHE_VERSION = 1
DECODE_THREADS = min(4, os.cpu_count() or 1)


def fingerprint(paths: Iterable[Path], *extra: object) -> str:
    """Hash of each file's path, size and mtime, plus ``extra`` values."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{extra!r}".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"\n{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cache_path(manifest: DataManifest, image_size: int, channels: int, cache_dir: Path) -> Path:
    """Where the decoded array of this manifest at this size and channel count is cached."""
    try:
        key = fingerprint((s.path for s in manifest.samples), image_size, channels)
    except OSError as exc:
        raise DataError(f"{exc.filename}: image disappeared while loading; scan again") from None
    return Path(cache_dir) / f"images-{key}.npy"


def load_images(
    manifest: DataManifest,
    image_size: int,
    channels: int,
    cache_dir: Path,
    progress: bool = False,
) -> np.ndarray:
    """All images of ``manifest`` as uint8 (N, C, H, W), decoded once and cached on disk.

    A cached array comes back memory-mapped read-only; a fresh one in memory.
    """
    path = cache_path(manifest, image_size, channels, cache_dir)
    shape = (len(manifest), channels, image_size, image_size)
    cached = _read_cached(path, shape)
    if cached is not None:
        return cached
    images = decode_images(manifest, image_size, channels, progress)
    write_atomic(path, lambda handle: np.save(handle, images))
    return images


def decode_images(
    manifest: DataManifest, image_size: int, channels: int, progress: bool = False
) -> np.ndarray:
    """Decode and resize every sample (a few threads: the decoders release the GIL)."""
    images = np.empty((len(manifest), channels, image_size, image_size), dtype=np.uint8)
    problems: list[Problem] = []

    def decode(index: int) -> None:
        sample = manifest.samples[index]
        try:
            images[index] = load_resized(sample.path, image_size, channels)
        except ImageReadError as exc:
            text = f"{sample.path.relative_to(manifest.root)}: {exc.reason}"
            problems.append(Problem("unreadable", text, sample.path, sample.line))

    with ThreadPoolExecutor(DECODE_THREADS) as pool, progress_bar(progress) as bar:
        task = bar.add_task(f"decoding {len(manifest)} images", total=len(manifest))
        for _ in pool.map(decode, range(len(manifest))):
            bar.advance(task)
    if problems:
        raise DataError(describe_problems(manifest.root, problems))
    return images


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _read_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # unreadable cache: decode again and replace it
    return array if array.shape == shape and array.dtype == np.uint8 else None
