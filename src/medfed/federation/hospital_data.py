"""A hospital's images for a run: decoded once per run and process, and the share-out of a
simulated run's images with its privacy canaries planted."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from medfed.config import DataConfig, MedfedConfig
from medfed.data.canaries import Canaries, plant_canaries
from medfed.data.datasets import ImageSet, load_image_set

# Decoded image sets a process keeps, by run (a run's training set, and the next run's).
IMAGE_SETS_KEPT = 2
_image_sets: OrderedDict[str, ImageSet] = OrderedDict()


def run_image_set(
    run_id: str,
    path: Path,
    data: DataConfig,
    cache_dir: Path,
    class_names: list[str],
    min_classes: int = 2,
) -> ImageSet:
    """:func:`load_image_set`, scanned and decoded once per run in this process: a hospital's
    later messages of the run reuse it (a run trains on the files it found first)."""
    key = json.dumps(
        [run_id, str(path), data.model_dump(mode="json"), str(cache_dir), class_names, min_classes]
    )
    if key in _image_sets:
        _image_sets.move_to_end(key)
        return _image_sets[key]
    loaded = load_image_set(path, data, cache_dir, class_names=class_names, min_classes=min_classes)
    _image_sets[key] = loaded
    while len(_image_sets) > IMAGE_SETS_KEPT:
        _image_sets.popitem(last=False)
    return loaded


def simulated_training_set(
    cfg: MedfedConfig, cache_dir: Path, class_names: list[str], run_id: str
) -> tuple[ImageSet, Canaries]:
    """The images simulated hospitals share out, with ``privacy.canaries`` planted (their
    labels changed; the held-out ones go to no hospital)."""
    data = run_image_set(run_id, Path(cfg.data.path), cfg.data, cache_dir, class_names)
    count, num_classes = cfg.privacy.canaries, len(data.class_names)
    canaries = plant_canaries(data.labels, count, num_classes, cfg.partition.seed)
    return replace(data, labels=canaries.labels), canaries
