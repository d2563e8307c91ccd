"""Decoded-image cache: decode and resize a dataset once, then memory-map it.

The cache file ``CACHE_DIR/images-<key>.npy`` holds uint8 (N, C, H, W). Its key hashes each
file's path, size and modification time with the image size and channels, so changing, adding
or removing a file gives a new key.

The cache is written in one streaming pass: a memory-mapped file under a temporary name is
filled chunk by chunk as images decode, each chunk written out and released from memory, so a
PatchCamelyon-sized set (220,025 RGB patches, 6 GB decoded) never sits in memory. The file is
then renamed into place; a lock on the folder makes processes that want the same cache at the
same time decode it once, and none ever sees a half-written cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from medfed.data.images import ImageReadError, load_resized
from medfed.data.progress import progress_bar
from medfed.data.readers import DataManifest, Problem, describe_problems
from medfed.errors import DataError

CACHE_VERSION = 1
DECODE_THREADS = min(4, os.cpu_count() or 1)
CHUNK_BYTES = 32 * 2**20  # decoded images written out and released at a time


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
    """All images of ``manifest`` as uint8 (N, C, H, W), memory-mapped read-only from the
    cache; decoded into it first (streaming, see the module) when it is not there yet."""
    path = cache_path(manifest, image_size, channels, cache_dir)
    shape = (len(manifest), channels, image_size, image_size)
    cached = _read_cached(path, shape)
    if cached is not None:
        return cached
    with _lock(path):
        cached = _read_cached(path, shape)  # another process may have written it meanwhile
        if cached is None:
            write_decoded(manifest, image_size, channels, path, progress)
            cached = _read_cached(path, shape)
    if cached is None:
        raise DataError(f"{path}: the image cache just written cannot be read back; delete it")
    return cached


def write_decoded(
    manifest: DataManifest, image_size: int, channels: int, path: Path, progress: bool = False
) -> Path:
    """Decode every sample into a new ``.npy`` file at ``path`` in one streaming pass."""
    shape = (len(manifest), channels, image_size, image_size)
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}

    def fill(handle: BinaryIO) -> None:
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        size = offset + int(np.prod(shape))
        handle.truncate(size)
        handle.flush()
        with mmap.mmap(handle.fileno(), size) as mapped:
            target = np.ndarray(shape, np.uint8, buffer=mapped, offset=offset)
            try:
                _decode_into(target, manifest, progress, _releaser(mapped, offset, target))
            finally:
                del target

    write_atomic(path, fill, mode="w+b")
    return path


def decode_images(
    manifest: DataManifest, image_size: int, channels: int, progress: bool = False
) -> np.ndarray:
    """Decode and resize every sample into memory (small sets; the cache streams instead)."""
    images = np.empty((len(manifest), channels, image_size, image_size), dtype=np.uint8)
    _decode_into(images, manifest, progress, lambda start, stop: None)
    return images


def _decode_into(
    target: np.ndarray,
    manifest: DataManifest,
    progress: bool,
    written: Callable[[int, int], None],
) -> None:
    """Decode the samples into ``target`` a chunk at a time (a few threads: the decoders
    release the GIL), calling ``written(start, stop)`` after each chunk; one DataError
    naming every unreadable image."""
    _, channels, size, _ = target.shape
    problems: list[Problem] = []
    per_chunk = max(1, CHUNK_BYTES // max(1, target[0].nbytes)) if len(target) else 1

    def decode(index: int) -> None:
        sample = manifest.samples[index]
        try:
            target[index] = load_resized(sample.path, size, channels)
        except ImageReadError as exc:
            text = f"{sample.path.relative_to(manifest.root)}: {exc.reason}"
            problems.append(Problem("unreadable", text, sample.path, sample.line))

    with ThreadPoolExecutor(DECODE_THREADS) as pool, progress_bar(progress) as bar:
        task = bar.add_task(f"decoding {len(manifest)} images", total=len(manifest))
        for start in range(0, len(manifest), per_chunk):
            stop = min(start + per_chunk, len(manifest))
            for _ in pool.map(decode, range(start, stop)):
                bar.advance(task)
            written(start, stop)
    if problems:
        raise DataError(describe_problems(manifest.root, problems))


def _releaser(mapped: mmap.mmap, offset: int, target: np.ndarray) -> Callable[[int, int], None]:
    """After a chunk: write its pages to the file and drop them from this process's memory."""
    row = target[0].nbytes if len(target) else 0

    def release(start: int, stop: int) -> None:
        first = (offset + start * row) // mmap.PAGESIZE * mmap.PAGESIZE
        length = offset + stop * row - first
        mapped.flush(first, length)
        if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED, first, length)

    return release


def write_atomic(path: Path, write: Callable[[BinaryIO], object], mode: str = "wb") -> None:
    """Write a file under a temporary name in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as stream:
            write(stream)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder (no lock file is left behind): one process
    decodes, the others wait and then find the cache written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # unreadable cache: decode again and replace it
    return array if array.shape == shape and array.dtype == np.uint8 else None
