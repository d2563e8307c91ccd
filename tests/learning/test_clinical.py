"""After training: calibration, screening operating points, heat maps and per-site truth."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from medfed.config import config_from_dict
from medfed.data.datasets import load_image_set
from medfed.errors import StoreError
from medfed.learning.explain import grad_cam, pick_examples, target_layer
from medfed.learning.metrics import calibration, operating_points
from medfed.models import build_model
from medfed.reports import report_content
from medfed.reports.clinical import load_final_evaluation, record_final_evaluation
from medfed.reports.clinical_tables import sites_table
from medfed.reports.heatmaps import overlay, png_pixels
from medfed.reports.sites import site_table
from medfed.store import ArtifactStore, RunStore
from medfed.store.records import ClientResultRecord


def test_calibration_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)  # the truth follows the probability
    calibrated = calibration(y, np.stack([1 - p, p], axis=1))
    assert calibrated["ece"] < 0.02
    assert sum(b["count"] for b in calibrated["bins"]) == 20_000 and len(calibrated["bins"]) == 10
    sharp = np.where(p > 0.5, 0.99, 0.01)  # says 99% where the truth is 50-100%
    overconfident = calibration(y, np.stack([1 - sharp, sharp], axis=1))
    assert overconfident["ece"] > 0.2
    top = calibration(np.array([0, 1, 2]), np.eye(3))  # multi-class: top class
    assert top["kind"] == "top class" and top["ece"] == 0.0


def test_operating_points_meet_their_targets_with_their_thresholds() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4_000)
    score = np.clip(0.35 * y + rng.normal(0.35, 0.18, 4_000), 0, 1)
    probs = np.stack([1 - score, score], axis=1)
    points = {p["name"]: p for p in operating_points(y, probs)}
    assert set(points) == {
        "sensitivity at 90% specificity",
        "sensitivity at 95% specificity",
        "specificity at 95% sensitivity",
    }
    for point in points.values():
        called = score >= point["threshold"]
        sensitivity = called[y == 1].mean()
        specificity = (~called[y == 0]).mean()
        assert sensitivity == pytest.approx(point["sensitivity"])
        assert specificity == pytest.approx(point["specificity"])
    assert points["sensitivity at 90% specificity"]["specificity"] >= 0.9
    assert points["sensitivity at 95% specificity"]["specificity"] >= 0.95
    assert points["specificity at 95% sensitivity"]["sensitivity"] >= 0.95
    high, low = (points[f"sensitivity at {k}% specificity"] for k in (95, 90))
    assert high["threshold"] >= low["threshold"] and high["sensitivity"] <= low["sensitivity"]
    assert operating_points(np.array([0, 1, 2]), np.eye(3)) == []


def test_examples_are_picked_by_kind_most_confident_first() -> None:
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.8, 0.1, 0.2, 0.3])
    picks = pick_examples(y, np.stack([1 - p, p], axis=1), per_kind=2)
    by_kind = {}
    for pick in picks:
        by_kind.setdefault(pick.kind, []).append(pick.index)
    assert by_kind == {
        "true positive": [0, 1],
        "false positive": [2],
        "false negative": [4],
        "true negative": [3, 5],
    }
    assert [p.target for p in picks] == [1, 1, 1, 0, 0, 0]  # explained for the predicted class


def test_grad_cam_maps_are_unit_scaled_at_the_input_size() -> None:
    torch.manual_seed(0)
    model = build_model("cancer_cnn", 3, 2)
    assert target_layer(model, (3, 96, 96)) is model.features[3][1]  # 12 x 12 maps
    assert target_layer(model, (3, 32, 32)) is model.features[2][1]  # 8 x 8, not 4 x 4
    x = torch.randn(3, 3, 32, 32)
    maps = grad_cam(model, x, [0, 1, 1])
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() in (0.0, 1.0) for m in maps)
    assert model.training  # left as found
    resnet = build_model("resnet18", 1, 2)
    assert grad_cam(resnet, torch.randn(2, 1, 64, 64), [0, 1]).shape == (2, 64, 64)
    for name in ("scatter_linear", "scatter_cnn"):  # on the trained part's fixed features
        scatter = build_model(name, 1, 2)
        maps = grad_cam(scatter, torch.rand(2, 1, 64, 64), [0, 1])
        assert maps.shape == (2, 64, 64) and maps.max() == 1.0, name


def test_overlay_colours_only_where_the_model_looks() -> None:
    image = np.full((1, 8, 8), 128, dtype=np.uint8)
    heat = np.zeros((8, 8))
    heat[2:4, 2:4] = 1.0
    blended = overlay(image, heat)
    assert blended.shape == (8, 8, 3)
    assert (blended[0, 0] == 128).all() and not (blended[2, 2] == 128).all()


def client(hospital, phase, metrics, *, round=3, status="ok", examples=10, error=None):
    return ClientResultRecord(
        id=0, run_id="r", round=round, hospital=hospital, phase=phase, status=status,
        num_examples=examples, metrics=metrics, duration_s=1.0, bytes_up=0, bytes_down=0,
        epsilon=None, error=error, created_at=datetime.now(UTC),
    )  # fmt: skip


def test_site_table_takes_the_last_evaluation_and_flags_the_worst_site() -> None:
    clients = [
        client("hospital-0", "train", {"class-counts": [30, 10]}),
        client("hospital-1", "train", {"class-counts": [5, 35]}, round=2),
        client("hospital-0", "evaluate", {"accuracy": 0.5, "auc": 0.5}, round=2),
        client(
            "hospital-0", "evaluate",
            {"accuracy": 0.9, "auc": 0.95, "confusion_matrix": [[5, 1], [0, 4]]},
        ),
        client(
            "hospital-1", "evaluate",
            {"accuracy": 0.7, "auc": -1.0, "confusion_matrix": [[0, 0], [3, 7]]},
        ),
        client("hospital-10", "evaluate", None, status="failed", error="timed out"),
    ]  # fmt: skip
    table = site_table(clients, ["normal", "tumour"], bn="local")
    assert table.round == 3 and table.worst == "hospital-1" and table.bn == "local"
    names = [s.hospital for s in table.sites]
    assert names == ["hospital-0", "hospital-1", "hospital-10"]
    first, second, failed = table.sites
    assert (first.accuracy, first.auc, first.held_out_counts) == (0.9, 0.95, [6, 4])
    assert first.train_counts == [30, 10]
    assert second.auc is None and second.worst and second.train_counts == [5, 35]
    assert failed.accuracy is None and failed.error == "timed out"
    shown = sites_table(table)
    assert shown.highlighted_rows == frozenset({1}) and shown.failed_rows == frozenset({2})
    assert shown.rows[0][4] == "TN 5 · FP 1 · FN 0 · TP 4"
    assert shown.rows[1][0] == "hospital-1 (worst)" and shown.rows[1][6] == "5 / 35 (88% tumour)"
    assert site_table([], ["a", "b"]).sites == []


@pytest.fixture
def finished_run(tmp_path: Path, kaggle_dataset: Path):
    cfg = config_from_dict(
        {
            "home": str(tmp_path / "home"),
            "data": {"path": str(kaggle_dataset), "image_size": 32},
            "model": {"name": "cancer_cnn"},
            "federated": {"rounds": 2, "num_clients": 2},
        }
    )
    store = RunStore(f"sqlite:///{tmp_path / 'medfed.db'}")
    run_id = store.create_run("r", cfg.to_dict(), mode="simulation", strategy="FedAvg",
                              num_rounds=2)  # fmt: skip
    artifacts = ArtifactStore(tmp_path / "home" / "artifacts")
    torch.manual_seed(0)
    model = build_model("cancer_cnn", 1, 2)
    for rnd in (0, 2):
        path = artifacts.save_state_dict(
            f"{run_id}/round-{rnd:04d}", model.state_dict(), {}, run_id=run_id, round=rnd
        )
        store.record_checkpoint(run_id, rnd, str(path), metric_name="accuracy",
                                metric_value=None, size_bytes=1)  # fmt: skip
        if rnd:
            store.record_round(run_id, rnd, metrics={}, duration_s=1.0)
    test_set = load_image_set(kaggle_dataset / "test", cfg.data, cfg.cache_dir)
    yield store, artifacts, run_id, cfg, test_set
    store.close()


def test_final_evaluation_is_stored_with_the_run_and_bound_to_it(finished_run) -> None:
    store, artifacts, run_id, cfg, test_set = finished_run
    model = build_model("cancer_cnn", 1, 2)
    evaluation = record_final_evaluation(store, artifacts, run_id, cfg, model, test_set)
    assert evaluation is not None and evaluation.round == 2 and evaluation.num_samples == 12
    loaded = load_final_evaluation(artifacts, run_id)
    assert loaded is not None and loaded.to_dict() == evaluation.to_dict()
    assert len(loaded.operating_points) == 3 and loaded.positive_class == "1"
    kinds = {e.kind for e in loaded.explanations}
    assert kinds and kinds <= {"true positive", "false positive", "false negative", "true negative"}
    assert len(loaded.explanations) <= 16
    first = loaded.explanations[0]
    assert png_pixels(first.heatmap).shape == (160, 160, 3)
    assert first.id.startswith("test")
    moved = artifacts.path_of(f"other/{'final-evaluation'}")
    moved.parent.mkdir(parents=True)
    moved.write_bytes(artifacts.path_of(f"{run_id}/final-evaluation").read_bytes())
    with pytest.raises(StoreError, match="belongs to run"):
        load_final_evaluation(artifacts, "other")
    assert load_final_evaluation(artifacts, "never-ran") is None


def test_no_test_set_or_a_broken_model_never_fails_the_run(finished_run) -> None:
    store, artifacts, run_id, cfg, test_set = finished_run
    model = build_model("cancer_cnn", 1, 2)
    assert record_final_evaluation(store, artifacts, run_id, cfg, model, None) is None
    wrong = build_model("cancer_cnn", 1, 3)  # does not fit the checkpoint
    assert record_final_evaluation(store, artifacts, run_id, cfg, wrong, test_set) is None
    assert load_final_evaluation(artifacts, run_id) is None


def test_report_uses_the_stored_evaluation(finished_run, tmp_path: Path) -> None:
    store, artifacts, run_id, cfg, test_set = finished_run
    stored = record_final_evaluation(
        store, artifacts, run_id, cfg, build_model("cancer_cnn", 1, 2), test_set
    )
    content = report_content(store, run_id, platform=config_from_dict({"home": cfg.home}))
    assert content.evaluation is not None
    assert content.evaluation.to_dict() == stored.to_dict()
    assert [row[0] for row in content.operating_table.rows] == [
        "Sensitivity at 90% specificity",
        "Sensitivity at 95% specificity",
        "Specificity at 95% sensitivity",
    ]
