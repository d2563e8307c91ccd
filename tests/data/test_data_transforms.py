"""Batch transforms (normalisation, seeded flips and rotations) and the ArrayLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfed.config import DataConfig
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import BatchTransform, eval_transform, rotate, train_transform

torch.set_num_threads(1)


@pytest.fixture
def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (64, 1, 12, 12), dtype=torch.uint8, generator=generator)


def test_eval_transform_normalises(batch: torch.Tensor) -> None:
    cfg = DataConfig(normalize_mean=0.4, normalize_std=0.2)
    out = eval_transform(cfg)(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    torch.testing.assert_close(out, (batch.float() / 255 - 0.4) / 0.2)
    assert batch.dtype == torch.uint8  # input untouched
    torch.testing.assert_close(eval_transform(cfg)(batch.numpy()), out)


def test_train_transform_is_deterministic_per_seed(batch: torch.Tensor) -> None:
    cfg = DataConfig(rotation=20, hflip=True, vflip=True)
    first, again = train_transform(cfg, seed=7), train_transform(cfg, seed=7)
    a1, a2 = first(batch), first(batch)
    torch.testing.assert_close(again(batch), a1)
    torch.testing.assert_close(again(batch), a2)
    assert not torch.equal(a1, a2)  # each call draws new angles and flips
    assert not torch.equal(train_transform(cfg, seed=8)(batch), a1)


@pytest.mark.parametrize(("hflip", "dim"), [(True, 3), (False, 2)])
def test_flips_are_per_sample(batch: torch.Tensor, hflip: bool, dim: int) -> None:
    transform = BatchTransform(0.0, 1.0, hflip=hflip, vflip=not hflip, seed=1)
    out = transform(batch) * 255
    plain, flipped = batch.float(), batch.float().flip(dim)
    is_plain = (out - plain).abs().amax(dim=(1, 2, 3)) < 1e-3
    is_flipped = (out - flipped).abs().amax(dim=(1, 2, 3)) < 1e-3
    assert bool((is_plain | is_flipped).all())
    assert 10 < int(is_flipped.sum()) < 54


def test_rotation_turns_counter_clockwise_about_the_centre() -> None:
    x = torch.arange(36.0).view(1, 1, 6, 6).repeat(2, 1, 1, 1)
    out = rotate(x, torch.tensor([90.0, 0.0]))
    torch.testing.assert_close(out[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-4, rtol=0)


def test_rotation_angles_stay_within_the_limit() -> None:
    """A bright bar along the x axis, rotated by at most 10 degrees, stays near that axis."""
    x = torch.zeros(32, 1, 33, 33, dtype=torch.uint8)
    x[:, :, 16, :] = 255
    out = BatchTransform(0.0, 1.0, rotation=10, seed=3)(x)
    tip_rows = out[:, 0, :, 1].argmax(dim=1)  # where the bar meets the left edge
    offsets = (tip_rows - 16).abs().float()
    assert offsets.max() <= 16 * np.tan(np.radians(10)) + 1
    assert offsets.max() >= 1  # some samples were actually rotated


def test_loader_covers_every_sample_once_per_epoch() -> None:
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1).repeat(4, axis=2)
    labels = np.arange(50)
    loader = ArrayLoader(images, labels, batch_size=8, shuffle=True, seed=3)
    assert len(loader) == 7 and loader.num_examples == 50
    orders = []
    for _ in range(2):
        seen = []
        for x, y in loader:
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.shape[1:] == (1, 4, 1)
            torch.testing.assert_close(x[:, 0, 0, 0] * 255, y.float())  # rows stay with labels
            seen.extend(y.tolist())
        assert sorted(seen) == list(range(50))
        orders.append(seen)
    assert orders[0] != orders[1]  # a new permutation each epoch
    replay = ArrayLoader(images, labels, batch_size=8, shuffle=True, seed=3)
    assert [y.tolist() for _, y in replay] == [orders[0][i : i + 8] for i in range(0, 50, 8)]


def test_loader_subset_order_and_drop_last() -> None:
    images = np.zeros((20, 3, 2, 2), dtype=np.uint8)
    labels = np.arange(20)
    subset = np.array([3, 9, 4, 15, 11])
    loader = ArrayLoader(images, labels, indices=subset, batch_size=2)
    assert [y.tolist() for _, y in loader] == [[3, 9], [4, 15], [11]]
    dropping = ArrayLoader(images, labels, indices=subset, batch_size=2, drop_last=True)
    assert len(dropping) == 2 and sum(len(y) for _, y in dropping) == 4
    assert dropping.num_examples == 5


def test_loader_applies_transform_to_whole_batches() -> None:
    images = np.full((10, 1, 3, 3), 255, dtype=np.uint8)
    cfg = DataConfig(normalize_mean=0.5, normalize_std=0.25)
    loader = ArrayLoader(images, np.zeros(10), batch_size=4, transform=eval_transform(cfg))
    x, _ = next(iter(loader))
    assert x.shape == (4, 1, 3, 3) and torch.allclose(x, torch.full_like(x, 2.0))
    x, _ = next(iter(ArrayLoader(images, np.zeros(10), batch_size=4)))
    assert torch.allclose(x, torch.ones_like(x))  # default: scaled to [0, 1]
    assert images.max() == 255  # the source array is never modified


def test_loader_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArrayLoader(np.zeros((3, 1, 2, 2), dtype=np.uint8), np.zeros(2))


def test_mirroring_inside_the_rotation_pass() -> None:
    x = torch.arange(36.0).view(1, 1, 6, 6).repeat(3, 1, 1, 1)
    minus, plus = torch.tensor([-1.0, 1.0, -1.0]), torch.tensor([1.0, -1.0, -1.0])
    out = rotate(x, torch.zeros(3), x_sign=minus, y_sign=plus)
    torch.testing.assert_close(out[0], x[0].flip(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2], x[2].flip(1).flip(2), atol=1e-4, rtol=0)
