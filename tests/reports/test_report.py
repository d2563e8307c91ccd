"""Reports built from a real SQLite run store, an encrypted checkpoint and a real test set."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import torch

from medfed.config import MedfedConfig, config_from_dict
from medfed.data.datasets import load_image_set
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform, train_transform
from medfed.errors import StoreError
from medfed.learning.trainer import make_optimizer, train
from medfed.models import build_model
from medfed.reports import (
    build_report,
    compute_roc,
    report_content,
    roc_from_predictions,
)
from medfed.store import ArtifactStore, RunStore

HOSPITALS = ("Charité Berlin", "Hôpital Lyon-Sud")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROUNDS = 3


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def run_config(home: Path, data: Path) -> dict:
    return config_from_dict(
        {
            "name": "adam-demo",
            "home": str(home),
            "data": {"path": str(data), "layout": "kaggle", "image_size": 32},
            "model": {"name": "cancer_cnn", "norm": "group"},
            "training": {"batch_size": 8, "learning_rate": 0.01},
            "federated": {
                "strategy": "FedAdam",
                "server_learning_rate": 0.05,
                "rounds": ROUNDS,
                "num_clients": 2,
            },
            "partition": {"scheme": "dirichlet", "alpha": 0.3},
            "privacy": {"mode": "sample", "noise_multiplier": 1.1, "epsilon_budget": 6.0},
            "compression": {"topk": 0.1, "quant_bits": 8},
        }
    ).to_dict()


def platform(tmp_path: Path) -> MedfedConfig:
    """The platform's configuration: the home whose artifacts and key hold the checkpoints."""
    return config_from_dict({"home": str(tmp_path / "home")})


def trained_state(cfg: dict) -> dict:
    """A cancer_cnn trained briefly on the run's data (the checkpoint the report scores)."""
    config = config_from_dict(cfg)
    torch.manual_seed(0)
    images = load_image_set(config.data.path, config.data, config.cache_dir)
    model = build_model("cancer_cnn", 1, 2, "group")
    loader = ArrayLoader(
        images.images,
        images.labels,
        batch_size=8,
        shuffle=True,
        transform=train_transform(config.data, seed=0),
    )
    train(model, loader, 3, make_optimizer(model, config.training))
    return model.state_dict()


def seed_run(store: RunStore, cfg: dict, *, checkpoint_state: dict | None = None) -> str:
    """A finished three-round run; the second hospital's training fails in round 2."""
    run_id = store.create_run(
        "adam-demo",
        cfg,
        mode="simulation",
        strategy="FedAdam",
        num_rounds=ROUNDS,
        created_by="admin",
    )
    store.set_status(run_id, "running")
    for rnd in range(1, ROUNDS + 1):
        accuracy = 0.5 + 0.125 * rnd
        matrix = [[4 + rnd, 2 - rnd // 2], [3 - rnd, 3 + rnd]]
        metrics = {
            "loss": 0.7 - 0.1 * rnd,
            "accuracy": accuracy,
            "precision": accuracy - 0.02,
            "recall": accuracy - 0.03,
            "f1": accuracy - 0.01,
            "auc": accuracy + 0.04,
            "confusion_matrix": matrix,
        }
        failed = 1 if rnd == 2 else 0
        store.record_round(
            run_id,
            rnd,
            metrics=metrics,
            train_metrics={"loss": 0.8 - 0.1 * rnd},
            duration_s=10.0 + rnd,
            bytes_up=300_000 * rnd,
            bytes_down=1_200_000,
            epsilon=1.5 * rnd,
            num_clients_ok=2 - failed,
            num_clients_failed=failed,
        )
        for index, hospital in enumerate(HOSPITALS):
            seed_hospital(store, run_id, rnd, index, hospital, accuracy)
    if checkpoint_state is not None:
        artifacts = ArtifactStore(Path(cfg["home"]) / "artifacts")
        path = artifacts.save_state_dict(
            f"{run_id}/round-{ROUNDS:04d}",
            checkpoint_state,
            {"round": ROUNDS},
            run_id=run_id,
            round=ROUNDS,
        )
        store.record_checkpoint(
            run_id,
            ROUNDS,
            str(path),
            metric_name="accuracy",
            metric_value=0.875,
            size_bytes=path.stat().st_size,
        )
    store.set_final_metrics(
        run_id,
        {
            "accuracy": 0.875,
            "f1": 0.866,
            "auc": 0.9125,
            "audit": {"auc": 0.531, "tpr_at_1pct_fpr": 0.0},
        },
    )
    store.set_status(run_id, "finished")
    return run_id


def seed_hospital(
    store: RunStore, run_id: str, rnd: int, index: int, hospital: str, accuracy: float
) -> None:
    size = 20 - 8 * index
    if index == 1 and rnd == 2:
        store.record_client_result(
            run_id, rnd, hospital=hospital, phase="train", status="failed",
            error="hospital did not reply within 600 s",
        )  # fmt: skip
        return
    store.record_client_result(
        run_id,
        rnd,
        hospital=hospital,
        phase="train",
        status="ok",
        num_examples=size,
        metrics={"train_loss": 0.6, "train_accuracy": accuracy, "class-counts": [size - 5, 5]},
        duration_s=4.0,
        bytes_up=150_000 * rnd,
        bytes_down=600_000,
        epsilon=1.5 * rnd,
    )
    store.record_client_result(
        run_id,
        rnd,
        hospital=hospital,
        phase="evaluate",
        status="ok",
        num_examples=size // 4,
        metrics={"loss": 0.5, "accuracy": accuracy - 0.05 * index},
        duration_s=1.0,
    )


@pytest.fixture
def seeded(store: RunStore, tmp_path: Path, kaggle_dataset: Path) -> tuple[str, dict]:
    cfg = run_config(tmp_path / "home", kaggle_dataset)
    return seed_run(store, cfg, checkpoint_state=trained_state(cfg)), cfg


@pytest.mark.slow
def test_html_report_shows_every_section_with_the_run_numbers(store, seeded, tmp_path):
    run_id, _ = seeded
    path = build_report(store, run_id, tmp_path / "out", "html", platform=platform(tmp_path))
    html = path.read_text(encoding="utf-8")

    assert path.name == f"medfed-report-{run_id}.html"
    for section in ("summary", "configuration", "data", "curves", "evaluation", "hospitals",
                    "traffic", "privacy"):  # fmt: skip
        assert f'<section id="{section}">' in html
    assert "87.5%" in html  # final accuracy
    assert "0.912" in html  # final AUC
    for hospital in HOSPITALS:
        assert hospital in html
    assert "hospital did not reply within 600 s" in html
    assert '<th class="num">Class 0</th>' in html and '<td class="num">15</td>' in html
    assert "server learning rate" in html and "0.05" in html  # FedAdam's own parameters
    assert "tau" in html and "proximal mu" not in html
    assert "top 10% of entries" in html and "8-bit" in html
    assert "Attack AUC" in html and "0.531" in html
    assert "ROC curve not available" not in html


@pytest.mark.slow
def test_html_report_is_self_contained(store, seeded, tmp_path):
    run_id, _ = seeded
    html = build_report(store, run_id, tmp_path / "out", platform=platform(tmp_path)).read_text(
        encoding="utf-8"
    )

    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    explained = html.count('<figure>\n        <div class="pair-img">')
    assert explained > 0
    # data, curves, hospitals, confusion, roc, reliability, traffic, epsilon; 2 per heat map
    assert len(images) == 8 + 2 * explained
    for image in images:
        assert base64.b64decode(image).startswith(PNG_MAGIC)
    references = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', html)
    assert all(ref.startswith("data:") for ref in references)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()


@pytest.mark.slow
def test_pdf_report_has_a_summary_page_and_chart_pages(store, seeded, tmp_path):
    run_id, _ = seeded
    path = build_report(store, run_id, tmp_path / "out", "pdf", platform=platform(tmp_path))
    data = path.read_bytes()

    assert path.suffix == ".pdf"
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == 5


def test_roc_is_scored_with_the_decrypted_checkpoint_on_the_test_set(store, seeded, tmp_path):
    run_id, cfg = seeded
    content = report_content(store, run_id, platform=platform(tmp_path))

    config = config_from_dict(cfg)
    test_set = load_image_set(Path(cfg["data"]["path"]) / "test", config.data, config.cache_dir)
    model = build_model("cancer_cnn", 1, 2, "group")
    checkpoint = store.latest_checkpoint(run_id)
    state, _ = ArtifactStore(Path(cfg["home"]) / "artifacts").load_state_dict(checkpoint.path)
    model.load_state_dict(state)
    loader = ArrayLoader(test_set.images, test_set.labels, transform=eval_transform(config.data))
    expected = compute_roc(model, loader)

    assert content.roc is not None
    assert content.roc.num_samples == 12
    assert content.roc.auc == pytest.approx(expected.auc)
    assert content.roc.fpr[0] == 0 and content.roc.tpr[-1] == 1


def test_report_explains_a_missing_checkpoint(store, tmp_path, kaggle_dataset):
    run_id = seed_run(store, run_config(tmp_path / "home", kaggle_dataset))
    html = build_report(store, run_id, tmp_path / "out", platform=platform(tmp_path)).read_text(
        encoding="utf-8"
    )

    assert "ROC curve not available" in html
    assert "No model checkpoint is stored for this run" in html


def test_report_explains_missing_test_data(store, tmp_path, kaggle_dataset):
    cfg = run_config(tmp_path / "home", kaggle_dataset)
    state = trained_state(cfg)
    cfg["data"]["path"] = str(tmp_path / "moved-away")
    run_id = seed_run(store, cfg, checkpoint_state=state)
    html = build_report(store, run_id, tmp_path / "out", platform=platform(tmp_path)).read_text(
        encoding="utf-8"
    )

    assert "ROC curve not available" in html
    assert "names no held-out test set" in html


def test_given_roc_is_drawn_without_a_checkpoint(store, tmp_path, kaggle_dataset):
    run_id = seed_run(store, run_config(tmp_path / "home", kaggle_dataset))
    roc = roc_from_predictions([0, 0, 1, 1], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    html = build_report(
        store, run_id, tmp_path / "out", roc=roc, platform=platform(tmp_path)
    ).read_text(encoding="utf-8")

    assert "ROC curve not available" not in html
    assert "AUC 1.000 over 4 held-out test images" in html


def test_unknown_run_is_a_store_error(store, tmp_path):
    with pytest.raises(StoreError, match="no-such-run"):
        build_report(store, "no-such-run", tmp_path / "out")
    assert not (tmp_path / "out").exists()
