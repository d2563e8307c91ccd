"""A run's final evaluation as the ServerApp stores it after the last round: a small model
trained on synthetic RGB patches, scored and explained with Grad-CAM on a held-out set."""

from __future__ import annotations

from pathlib import Path

import torch

from medfed.config import DataConfig
from medfed.data.datasets import load_image_set
from medfed.data.loader import ArrayLoader
from medfed.data.synthetic import write_synthetic_dataset
from medfed.data.transforms import eval_transform
from medfed.learning.trainer import train
from medfed.models import build_model
from medfed.reports.clinical import evaluate_final_model, save_final_evaluation
from medfed.store import ArtifactStore


def seed_final_evaluation(home: Path, run_id: str, round_: int, scratch: Path) -> None:
    """Store a real final evaluation (calibration, operating points, heat maps) for the run."""
    root = write_synthetic_dataset(
        scratch / "patches", n_per_class=40, size=48, channels=3, test_per_class=30, seed=3
    )
    data = DataConfig(path=root, image_size=48, channels=3, class_names=["normal", "tumour"])
    train_set = load_image_set(root, data, scratch / "cache")
    test_set = load_image_set(root / "test", data, scratch / "cache", class_names=data.class_names)
    torch.manual_seed(0)
    model = build_model("cancer_cnn", 3, 2)
    loader = ArrayLoader(
        train_set.images, train_set.labels, batch_size=16, shuffle=True,
        transform=eval_transform(data),
    )  # fmt: skip
    train(model, loader, 1, torch.optim.Adam(model.parameters(), lr=1e-3), max_steps=3)
    evaluation = evaluate_final_model(model, test_set, data, ["normal", "tumour"], round_)
    save_final_evaluation(ArtifactStore(home / "artifacts"), run_id, evaluation)
