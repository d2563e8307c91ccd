"""One call from a dataset folder to a decoded, validated, cached image set."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfed.data.cache import fingerprint, load_images, write_atomic
from medfed.data.readers import DataManifest, Problem, scan_dataset
from medfed.errors import DataError

if TYPE_CHECKING:
    from medfed.config import DataConfig


@dataclass
class ImageSet:
    """Decoded images uint8 (N, C, H, W) with their labels, class names and sample ids."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_image_set(
    path: Path,
    cfg: DataConfig,
    cache_dir: Path,
    progress: bool = False,
    class_names: list[str] | None = None,
    min_classes: int = 2,
) -> ImageSet:
    """Scan and validate ``path``, then decode it at ``cfg.image_size`` (cached in cache_dir).

    ``class_names`` (e.g. the training set's, for its test set) wins over ``cfg.class_names``.
    """
    manifest = validated_manifest(
        Path(path),
        cache_dir,
        layout=cfg.layout,
        class_names=class_names or cfg.class_names,
        skip_bad=cfg.skip_bad,
        min_classes=min_classes,
    )
    images = load_images(manifest, cfg.image_size, cfg.channels, cache_dir, progress=progress)
    return ImageSet(images, manifest.labels, manifest.class_names, manifest.ids)


def validated_manifest(
    path: Path,
    cache_dir: Path,
    layout: str = "auto",
    class_names: list[str] | None = None,
    skip_bad: bool = False,
    min_classes: int = 2,
) -> DataManifest:
    """:func:`scan_dataset`, reading each image's header only the first time a file set is seen.

    The outcome of the image checks is recorded in ``cache_dir`` under a fingerprint of the
    files (paths, sizes, mtimes), so a later process re-checks only what changed.
    """
    options = {"layout": layout, "class_names": class_names, "min_classes": min_classes}
    quick = scan_dataset(path, skip_bad=skip_bad, check_images=False, **options)
    key = fingerprint((s.path for s in quick.samples), layout, class_names, skip_bad, min_classes)
    record = Path(cache_dir) / f"scan-{key}.json"
    recorded = _read_record(record)
    if recorded is not None:
        return _without(quick, recorded)
    manifest = scan_dataset(path, skip_bad=skip_bad, check_images=True, **options)
    unreadable = [p for p in manifest.skipped if p.kind == "unreadable"]
    items = [{**asdict(p), "path": str(p.path)} for p in unreadable]
    write_atomic(record, lambda handle: handle.write(json.dumps(items).encode()))
    return manifest


def resolve_test_path(cfg: DataConfig) -> Path | None:
    """The held-out test set: ``cfg.test_path``, else PATH/test when it exists, else None."""
    if cfg.test_path is not None:
        if not Path(cfg.test_path).is_dir():
            raise DataError(
                f"data.test_path {cfg.test_path} not found: fix the path or remove the key"
            )
        return Path(cfg.test_path)
    default = Path(cfg.path) / "test"
    return default if default.is_dir() else None


def _read_record(record: Path) -> list[Problem] | None:
    """The unreadable images a previous check found, or None when there is no usable record."""
    try:
        items = json.loads(record.read_text(encoding="utf-8"))
        return [Problem(**{**item, "path": Path(item["path"])}) for item in items]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _without(manifest: DataManifest, unreadable: list[Problem]) -> DataManifest:
    bad = {p.path for p in unreadable}
    manifest.samples = [s for s in manifest.samples if s.path not in bad]
    manifest.skipped = manifest.skipped + unreadable
    return manifest
