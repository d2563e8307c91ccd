"""The centralized baseline: all data in one place, train, test after every epoch, save."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.optim.lr_scheduler import CosineAnnealingLR

from medfed.config import MedfedConfig
from medfed.data.datasets import ImageSet, load_image_set, resolve_test_path
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform, train_transform
from medfed.errors import DataError
from medfed.learning.device import training_device, uses_amp
from medfed.learning.trainer import evaluate, make_optimizer, set_seed, train
from medfed.models import build_model, save_checkpoint

TEST_FRACTION = 0.2
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"

CentralCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class CentralResult:
    """Per-epoch train and test figures, the final test metrics and where they were written."""

    epochs: list[dict[str, Any]]
    final: dict[str, Any]
    class_names: list[str]
    num_train: int
    num_test: int
    test_source: str
    seconds: float
    metrics_path: Path
    model_path: Path
    device: str = "cpu"  # where it trained: cpu, cuda or mps


@dataclass
class _Split:
    train_rows: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def run_central(
    cfg: MedfedConfig,
    out_dir: Path,
    progress: bool = True,
    on_epoch: CentralCallback | None = None,
) -> CentralResult:
    """Train ``cfg.model`` on ``cfg.data.path`` and test after every epoch.

    The test set is ``resolve_test_path(cfg.data)``, else a seeded stratified 20% of the
    training data. The learning rate decays from ``cfg.training.learning_rate`` to 0 along a
    cosine over all steps, so the final weights do not hinge on the last few noisy batches.
    Trains on ``training.device`` (``training.amp`` on CUDA); the checkpoint is saved from the
    CPU. Writes ``metrics.json`` and ``model.pt`` into ``out_dir``.
    ``on_epoch(epoch, row)`` receives ``{"epoch", "train": {...}, "test": {...}}``.
    """
    start = time.perf_counter()
    if cfg.training.threads > 0:
        torch.set_num_threads(cfg.training.threads)
    device = training_device(cfg.training)
    amp = uses_amp(cfg.training, device)
    train_set = load_image_set(cfg.data.path, cfg.data, cfg.cache_dir, progress=progress)
    split = _train_test_split(cfg, train_set, progress)
    set_seed(cfg.training.seed)
    model = build_model(
        cfg.model.name,
        cfg.data.channels,
        len(train_set.class_names),
        cfg.model.norm,
        cfg.model.pretrained_path,
    ).to(device)
    train_loader = ArrayLoader(
        train_set.images,
        train_set.labels,
        indices=split.train_rows,
        batch_size=cfg.training.batch_size,
        shuffle=True,
        seed=cfg.training.seed,
        transform=train_transform(cfg.data, cfg.training.seed),
        device=device,
    )
    test_loader = ArrayLoader(
        split.test_images,
        split.test_labels,
        batch_size=cfg.training.batch_size,
        transform=eval_transform(cfg.data),
        device=device,
    )
    rows: list[dict[str, Any]] = []

    def after_epoch(epoch: int, figures: dict[str, Any]) -> None:
        train_figures = {key: value for key, value in figures.items() if key != "epoch"}
        test = evaluate(model, test_loader, amp=amp)
        row = {"epoch": epoch, "train": train_figures, "test": test}
        rows.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    optimizer = make_optimizer(model, cfg.training)
    schedule = CosineAnnealingLR(optimizer, T_max=cfg.training.epochs * len(train_loader))
    train(
        model,
        train_loader,
        cfg.training.epochs,
        optimizer,
        scheduler=schedule,
        progress=progress,
        on_epoch=after_epoch,
        amp=amp,
    )
    model.cpu()
    out_dir = Path(out_dir)
    model_path = save_checkpoint(
        out_dir / MODEL_FILE,
        model,
        model_name=cfg.model.name,
        norm=cfg.model.norm,
        in_channels=cfg.data.channels,
        class_names=train_set.class_names,
        extra={"data": cfg.data.model_dump(mode="json"), "source": "central"},
    )
    result = CentralResult(
        epochs=rows,
        final=rows[-1]["test"],
        class_names=train_set.class_names,
        num_train=train_loader.num_examples,
        num_test=test_loader.num_examples,
        test_source=split.source,
        seconds=time.perf_counter() - start,
        metrics_path=out_dir / METRICS_FILE,
        model_path=model_path,
        device=device.type,
    )
    _write_metrics(result, cfg)
    return result


def _train_test_split(cfg: MedfedConfig, train_set: ImageSet, progress: bool) -> _Split:
    """The held-out test set if there is one, else a seeded stratified 20% of ``train_set``."""
    test_path = resolve_test_path(cfg.data)
    everything = np.arange(len(train_set))
    if test_path is not None:
        test_set = load_image_set(
            test_path, cfg.data, cfg.cache_dir, progress=progress, class_names=train_set.class_names
        )
        return _Split(everything, test_set.images, test_set.labels, str(test_path))
    try:
        train_rows, test_rows = train_test_split(
            everything,
            test_size=TEST_FRACTION,
            stratify=train_set.labels,
            random_state=cfg.training.seed % 2**32,
        )
    except ValueError as exc:
        raise DataError(
            f"{cfg.data.path}: too few images to hold out a stratified {TEST_FRACTION:.0%} test "
            f"set ({exc}); add a test set under {Path(cfg.data.path) / 'test'} or data.test_path"
        ) from None
    test_rows = np.sort(test_rows)
    return _Split(
        np.sort(train_rows),
        train_set.images[test_rows],
        train_set.labels[test_rows],
        f"stratified {TEST_FRACTION:.0%} of {cfg.data.path} (seed {cfg.training.seed})",
    )


def _write_metrics(result: CentralResult, cfg: MedfedConfig) -> None:
    content = {
        "name": cfg.name,
        "model": cfg.model.name,
        "class_names": result.class_names,
        "num_train": result.num_train,
        "num_test": result.num_test,
        "test_source": result.test_source,
        "lr_schedule": "cosine",
        "device": result.device,
        "seconds": result.seconds,
        "epochs": result.epochs,
        "final": result.final,
        "model_path": str(result.model_path),
        "config": cfg.to_dict(),
    }
    result.metrics_path.parent.mkdir(parents=True, exist_ok=True)
    result.metrics_path.write_text(json.dumps(content, indent=2), encoding="utf-8")
