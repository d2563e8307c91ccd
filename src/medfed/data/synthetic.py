"""Tiny synthetic TIFF datasets whose classes are easy to learn, for tests and benchmarks.

Class ``k`` is a bright disk near the image centre whose radius grows with ``k``, on a noisy
dark background. Radius survives flips and rotations, so the classes stay learnable under the
training augmentations.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

from medfed.errors import DataError

DTYPE_MAX = {"uint8": 255, "uint16": 65535}


def synthetic_class_names(num_classes: int) -> list[str]:
    """Folder names of the synthetic classes, zero-padded so they sort in class order."""
    width = len(str(num_classes - 1))
    return [f"class_{k:0{width}d}" for k in range(num_classes)]


def synthetic_image(
    label: int, num_classes: int, size: int, channels: int, dtype: str, rng: np.random.Generator
) -> np.ndarray:
    """One image of class ``label``: (H, W) for grey, (H, W, 3) for RGB, in ``dtype``."""
    top = DTYPE_MAX[dtype]
    radius = size * (0.12 + 0.28 * label / max(1, num_classes - 1))
    centre = size / 2 + rng.uniform(-0.06, 0.06, size=2) * size
    yy, xx = np.mgrid[0:size, 0:size]
    disk = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    base = np.where(disk, 0.8, 0.15)
    noise = rng.normal(0.0, 0.06, size=(size, size, channels))
    image = np.clip(base[..., None] + noise, 0.0, 1.0) * top
    image = image.astype(dtype)
    return image[..., 0] if channels == 1 else image


def write_synthetic_dataset(
    root: Path,
    layout: Literal["kaggle", "folders"] = "kaggle",
    n_per_class: int = 20,
    num_classes: int = 2,
    size: int = 32,
    channels: int = 1,
    dtype: str = "uint8",
    seed: int = 0,
    test_per_class: int = 0,
) -> Path:
    """Write a learnable TIFF dataset under ``root`` and return ``root``.

    Kaggle layout: ``root/train_labels.csv`` (``id,label``) and ``root/train/<id>.tif``.
    Folder layout: ``root/<class_name>/<id>.tif``. With ``test_per_class > 0`` a held-out set
    in the same layout is written to ``root/test/``.
    """
    if layout not in ("kaggle", "folders"):
        raise DataError(f"layout must be 'kaggle' or 'folders', not {layout!r}")
    if dtype not in DTYPE_MAX:
        raise DataError(f"dtype must be one of {sorted(DTYPE_MAX)}, not {dtype!r}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, not {channels}")
    if num_classes < 1 or n_per_class < 1:
        raise DataError("num_classes and n_per_class must be at least 1")
    root = Path(root)
    rng = np.random.default_rng(seed)
    spec = (num_classes, size, channels, dtype)
    _write_split(root, layout, n_per_class, spec, rng, prefix="img")
    if test_per_class > 0:
        _write_split(root / "test", layout, test_per_class, spec, rng, prefix="test")
    return root


def _write_split(
    root: Path,
    layout: str,
    n_per_class: int,
    spec: tuple[int, int, int, str],
    rng: np.random.Generator,
    prefix: str,
) -> None:
    num_classes, size, channels, dtype = spec
    labels = rng.permutation(np.repeat(np.arange(num_classes), n_per_class))
    names = synthetic_class_names(num_classes)
    rows = []
    for index, label in enumerate(labels.tolist()):
        sample_id = f"{prefix}{index:05d}"
        folder = root / "train" if layout == "kaggle" else root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        image = synthetic_image(label, num_classes, size, channels, dtype, rng)
        tifffile.imwrite(folder / f"{sample_id}.tif", image, photometric=_photometric(channels))
        rows.append((sample_id, label))
    if layout == "kaggle":
        with open(root / "train_labels.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label"])
            writer.writerows(rows)


def _photometric(channels: int) -> str:
    return "rgb" if channels == 3 else "minisblack"
