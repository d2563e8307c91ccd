"""Batches straight from a uint8 image array, with no per-sample Python work."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from medfed.errors import DataError

Transform = Callable[[torch.Tensor], torch.Tensor]
COPY_LIMIT_BYTES = 64 * 2**20  # a larger subset of a cached (memory-mapped) set is streamed


class ArrayLoader:
    """Iterate ``(x float32 (B, C, H, W), y int64 (B,))`` over a subset of an image array.

    The subset's rows are copied once into one contiguous tensor; each batch is a slice of it
    (or one gather when shuffling), passed whole to ``transform`` (default: ``x / 255``).
    A subset of a memory-mapped cache file larger than COPY_LIMIT_BYTES is not copied: each
    batch's rows are read from the file instead, so memory stays flat in the number of images.
    With ``shuffle`` every epoch draws a new permutation from a generator seeded with ``seed``.

    With a CUDA ``device`` the copied rows sit in pinned (page-locked) memory and each batch
    is gathered into pinned memory, copied to the device without blocking, and transformed
    there. Without a device (or on the CPU) batches stay where they are, as before.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        transform: Transform | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        rows = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.rows: np.ndarray | None = None
        self.file: RowFile | None = None
        self.device = torch.device(device) if device is not None else None
        self.pinned = self.device is not None and self.device.type == "cuda"
        row_bytes = images[0].nbytes if len(images) else 0
        if len(rows) * row_bytes > COPY_LIMIT_BYTES and RowFile.fits(images):
            self.file, self.rows = RowFile(images), rows
            self.images = torch.empty((0, *images.shape[1:]), dtype=torch.uint8)
        elif self.pinned:
            dtype = torch.from_numpy(np.empty(0, dtype=images.dtype)).dtype
            self.images = _pinned((len(rows), *images.shape[1:]), dtype)
            np.take(images, rows, axis=0, out=self.images.numpy())  # one copy, into pinned rows
        else:
            self.images = torch.from_numpy(np.ascontiguousarray(images[rows]))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)[rows])
        if self.pinned:
            self.labels = _pinned(tuple(self.labels.shape), torch.int64).copy_(self.labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.transform = transform or _to_unit_range
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = None
        if self.shuffle:
            order = torch.randperm(self.num_examples, generator=self.generator)
        for batch in range(len(self)):
            start = batch * self.batch_size
            stop = min(start + self.batch_size, self.num_examples)
            if order is None:
                x, y = self._images(slice(start, stop)), self.labels[start:stop]
            else:
                rows = order[start:stop]
                x, y = self._images(rows), self._labels(rows)
            if self.device is not None and self.device.type != "cpu":
                x, y = _to_device(x, self.device), _to_device(y, self.device)
            yield self.transform(x), y

    def _images(self, which: slice | torch.Tensor) -> torch.Tensor:
        if self.file is None or self.rows is None:
            if not self.pinned or isinstance(which, slice):
                return self.images[which]  # a slice of pinned rows is pinned itself
            out = _pinned((len(which), *self.images.shape[1:]), self.images.dtype)
            return torch.index_select(self.images, 0, which, out=out)
        rows = self.rows[which] if isinstance(which, slice) else self.rows[which.numpy()]
        if not self.pinned:
            return torch.from_numpy(self.file.read(rows))
        out = _pinned((len(rows), *self.file.shape), torch.uint8)
        self.file.read(rows, out=out.numpy())
        return out

    def _labels(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.pinned:
            return self.labels[rows]
        return torch.index_select(self.labels, 0, rows, out=_pinned((len(rows),), torch.int64))


class RowFile:
    """Rows of a whole ``.npy`` file opened with ``np.load(mmap_mode="r")``, read with
    ``preadv`` into a fresh array: the file's pages stay in the page cache, not in this
    process's memory."""

    def __init__(self, images: np.memmap) -> None:
        self.path = str(images.filename)
        self.offset = int(images.offset)
        self.shape = images.shape[1:]
        self.row_bytes = int(images[0].nbytes) if len(images) else 0
        self._fd: int | None = None
        self._pid = 0

    @staticmethod
    def fits(images: np.ndarray) -> bool:
        """True for a C-ordered uint8 memmap spanning its whole file (not a view of one)."""
        if not isinstance(images, np.memmap) or images.filename is None:
            return False
        if images.dtype != np.uint8 or not images.flags.c_contiguous or not hasattr(os, "preadv"):
            return False
        try:
            return int(images.offset) + images.nbytes == os.path.getsize(images.filename)
        except OSError:
            return False

    def read(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The given rows, in the given order (into ``out`` when given); consecutive rows are
        read in one call."""
        if out is None:
            out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        buffer = out if np.array_equal(order, np.arange(len(rows))) else np.empty_like(out)
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for first, last in zip(
            np.concatenate(([0], breaks)), np.concatenate((breaks, [len(rows)])), strict=True
        ):
            view = memoryview(buffer[first:last]).cast("B")
            got = os.preadv(
                self._handle(), [view], self.offset + int(ordered[first]) * self.row_bytes
            )
            if got != len(view):
                raise DataError(f"{self.path}: the image cache is shorter than expected; delete it")
        if buffer is not out:
            out[order] = buffer
        return out

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def _pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor in pinned host memory (from torch's caching host allocator, which does
    not hand a block out again before the copies that read it are done)."""
    return torch.empty(shape, dtype=dtype, pin_memory=True)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; a copy from pinned memory does not wait for the device."""
    return x.to(device, non_blocking=x.is_pinned())


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32, copy=True).div_(255.0)
