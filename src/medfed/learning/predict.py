"""A trained model applied to a hospital's images, batch by batch, with the model's own
preprocessing: one row per image with the class, each class's probability and the threshold."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from medfed.data.images import ImageReadError, is_image_file, load_resized
from medfed.data.progress import progress_bar
from medfed.data.readers import IMAGE_DIR, LABELS_CSV, scan_dataset
from medfed.data.transforms import BatchTransform
from medfed.errors import ConfigError, DataError
from medfed.models.bundle import ModelBundle

BATCH = 256
THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Item:
    """An image to classify: its id, file and (Kaggle layout) its label."""

    id: str
    path: Path
    label: int | None = None


@dataclass
class PredictionSummary:
    """What a prediction pass did."""

    images: int = 0
    predicted: dict[str, int] = field(default_factory=dict)
    correct: int = 0
    labelled: int = 0
    unreadable: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def list_items(path: Path, class_names: list[str]) -> list[Item]:
    """The images at ``path``: one file; a Kaggle-layout set (``train_labels.csv`` +
    ``train/``, labels read against the model's classes); or every image under a folder."""
    path = Path(path)
    if path.is_file():
        if not is_image_file(path):
            raise DataError(f"{path} is not an image medfed reads (TIFF, PNG, JPEG, DICOM)")
        return [Item(path.stem, path)]
    if not path.is_dir():
        raise DataError(f"{path} not found: give an image, a folder of images or a dataset")
    if (path / LABELS_CSV).is_file():
        manifest = scan_dataset(path, "kaggle", class_names, check_images=False, min_classes=1)
        return [Item(s.id, s.path, s.label) for s in manifest.samples]
    found = []
    for parent, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(parent) / name for name in sorted(files))
    items = [Item(p.relative_to(path).with_suffix("").as_posix(), p) for p in found]
    items = [item for item in items if is_image_file(item.path)]
    if not items:
        raise DataError(
            f"{path}: no images found (TIFF, PNG, JPEG; or {LABELS_CSV} + {IMAGE_DIR}/)"
        )
    return items


def check_threshold(bundle: ModelBundle, threshold: float | None) -> float | None:
    """The decision threshold on the last class's probability (binary models: default 0.5);
    None for more classes (the most probable class wins)."""
    if bundle.num_classes != 2:
        if threshold is not None:
            raise ConfigError(
                f"--threshold applies to two-class models; this one has {bundle.num_classes} "
                "classes (the most probable class is predicted)"
            )
        return None
    threshold = 0.5 if threshold is None else threshold
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold} must lie between 0 and 1")
    return threshold


def predict_images(
    bundle: ModelBundle,
    items: list[Item],
    out: TextIO,
    threshold: float | None = None,
    progress: bool = False,
) -> PredictionSummary:
    """Write the CSV (``id, path, [label,] predicted, p_<class>..., threshold``) to ``out``."""
    threshold = check_threshold(bundle, threshold)
    names = bundle.class_names
    labelled = any(item.label is not None for item in items)
    writer = csv.writer(out)
    header = ["id", "path", *(["label"] if labelled else []), "predicted"]
    writer.writerow([*header, *(f"p_{name}" for name in names), "threshold"])
    summary = PredictionSummary(predicted={name: 0 for name in names})
    with progress_bar(progress) as bar:
        task = bar.add_task(f"classifying {len(items):,} images", total=len(items))
        for batch, probs in _batches(bundle, items, summary):
            if threshold is not None:
                chosen = (probs[:, 1] >= threshold).astype(int)
            else:
                chosen = probs.argmax(axis=1)
            for item, p, k in zip(batch, probs, chosen, strict=True):
                row = [item.id, str(item.path)]
                if labelled:
                    row.append(names[item.label] if item.label is not None else "")
                    if item.label is not None:
                        summary.labelled += 1
                        summary.correct += int(item.label == k)
                row += [names[k], *(f"{v:.6f}" for v in p)]
                row.append("" if threshold is None else f"{threshold:g}")
                writer.writerow(row)
                summary.predicted[names[k]] += 1
                summary.images += 1
            bar.advance(task, len(batch))
    return summary


def _batches(
    bundle: ModelBundle, items: list[Item], summary: PredictionSummary
) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Decoded batches of readable images and their class probabilities."""
    prep = bundle.preprocessing
    transform = BatchTransform(prep.mean, prep.std)

    def decode(item: Item) -> np.ndarray | None:
        try:
            return load_resized(item.path, prep.image_size, prep.channels)
        except ImageReadError as exc:
            summary.unreadable.append(f"{item.path}: {exc.reason}")
            return None

    with ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            decoded = list(pool.map(decode, chunk))
            kept = [
                (item, image)
                for item, image in zip(chunk, decoded, strict=True)
                if image is not None
            ]
            if not kept:
                continue
            x = transform(torch.from_numpy(np.stack([image for _, image in kept])))
            with torch.inference_mode():
                probs = torch.softmax(bundle.model(x).float(), dim=1).numpy()
            yield [item for item, _ in kept], probs
