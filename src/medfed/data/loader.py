"""Batches straight from a uint8 image array, with no per-sample Python work."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

Transform = Callable[[torch.Tensor], torch.Tensor]


class ArrayLoader:
    """Iterate ``(x float32 (B, C, H, W), y int64 (B,))`` over a subset of an image array.

    The subset's rows are copied once into one contiguous tensor; each batch is a slice of it
    (or one gather when shuffling), passed whole to ``transform`` (default: ``x / 255``).
    With ``shuffle`` every epoch draws a new permutation from a generator seeded with ``seed``.
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
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        rows = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.images = torch.from_numpy(np.ascontiguousarray(images[rows]))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)[rows])
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
                x, y = self.images[start:stop], self.labels[start:stop]
            else:
                rows = order[start:stop]
                x, y = self.images[rows], self.labels[rows]
            yield self.transform(x), y


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32, copy=True).div_(255.0)
