"""The run's final evaluation in the API: explanations, calibration, operating points, per-site
results, and the downloaded model's class names."""

from __future__ import annotations

import io

import pytest
import torch
from fastapi.testclient import TestClient

from api_support import ADMIN, VIEWER, login, seed_run
from medfed.config import MedfedConfig
from medfed.models import build_model
from medfed.reports.clinical import Explanation, FinalEvaluation, save_final_evaluation
from medfed.store import ArtifactStore, RunStore

SECTIONS = {"model": {"name": "cancer_cnn"}, "data": {"image_size": 32}}


@pytest.fixture
def sections() -> dict:
    return SECTIONS


def evaluation(round: int = 2) -> FinalEvaluation:
    bins = [{"lower": k / 10, "upper": (k + 1) / 10, "count": k, "confidence": k / 10 + 0.05,
             "observed": k / 10} for k in range(10)]  # fmt: skip
    return FinalEvaluation(
        round=round,
        num_samples=45,
        class_names=["normal", "tumour"],
        positive_class="tumour",
        calibration={"ece": 0.05, "kind": "positive class", "bins": bins},
        operating_points=[
            {
                "name": "sensitivity at 90% specificity",
                "target": "specificity",
                "level": 0.9,
                "sensitivity": 0.8,
                "specificity": 0.91,
                "threshold": 0.62,
            },
        ],  # fmt: skip
        explanations=[
            Explanation("img1", "false negative", "tumour", "normal", 0.2, "iVBOR", "iVBOR")
        ],
    )


def test_explanations_of_a_run_before_and_after_its_last_round(
    client: TestClient, store: RunStore, cfg: MedfedConfig
) -> None:
    viewer = login(client, VIEWER)
    run_id = seed_run(store, cfg, status="running")
    body = client.get(f"/api/runs/{run_id}/explanations", headers=viewer).json()
    assert body["available"] is False and "last round" in body["note"]
    save_final_evaluation(ArtifactStore.for_config(cfg), run_id, evaluation())
    store.set_status(run_id, "finished")
    body = client.get(f"/api/runs/{run_id}/explanations", headers=viewer).json()
    assert body["available"] is True and body["round"] == 2
    assert body["calibration"]["ece"] == 0.05 and len(body["calibration"]["bins"]) == 10
    assert body["operating_points"][0]["threshold"] == 0.62
    assert body["explanations"][0]["kind"] == "false negative"
    other = seed_run(store, cfg, status="finished")
    body = client.get(f"/api/runs/{other}/explanations", headers=viewer).json()
    assert body["available"] is False and "no held-out test set" in body["note"]
    assert client.get("/api/runs/nosuchrun/explanations", headers=viewer).status_code == 404
    assert client.get(f"/api/runs/{run_id}/explanations").status_code == 401


def test_sites_name_the_worst_hospital(
    client: TestClient, store: RunStore, cfg: MedfedConfig
) -> None:
    viewer = login(client, VIEWER)
    run_id = seed_run(store, cfg, status="finished")
    store.set_class_names(run_id, ["normal", "tumour"])
    for name, accuracy, matrix, counts in (
        ("north", 0.9, [[5, 1], [0, 4]], [40, 20]),
        ("south", 0.6, [[3, 3], [1, 3]], [10, 50]),
    ):
        store.record_client_result(
            run_id, 2, hospital=name, phase="train", status="ok", num_examples=60,
            metrics={"class-counts": counts},
        )  # fmt: skip
        store.record_client_result(
            run_id, 2, hospital=name, phase="evaluate", status="ok", num_examples=10,
            metrics={"accuracy": accuracy, "auc": accuracy, "confusion_matrix": matrix},
        )  # fmt: skip
    body = client.get(f"/api/runs/{run_id}/sites", headers=viewer).json()
    assert body["round"] == 2 and body["worst"] == "south" and body["bn"] == "average"
    north, south = body["sites"]
    assert north["held_out_counts"] == [6, 4] and north["train_counts"] == [40, 20]
    assert south["worst"] and not north["worst"]


def test_downloaded_model_names_the_run_classes(
    client: TestClient, store: RunStore, cfg: MedfedConfig
) -> None:
    admin = login(client, ADMIN)
    run_id = seed_run(store, cfg, status="finished")
    store.set_class_names(run_id, ["normal", "tumour"])
    artifacts = ArtifactStore.for_config(cfg)
    state = build_model("cancer_cnn", 1, 2).state_dict()
    meta = {"run_id": run_id, "round": 1, "config": cfg.to_dict()}  # no class names in it
    path = artifacts.save_state_dict(f"{run_id}/round-0001", state, meta, run_id=run_id, round=1)
    store.record_checkpoint(run_id, 1, str(path), metric_name="accuracy", metric_value=None,
                            size_bytes=1)  # fmt: skip
    response = client.get(f"/api/runs/{run_id}/model", headers=admin)
    assert response.status_code == 200
    content = torch.load(io.BytesIO(response.content), weights_only=True)
    assert content["meta"]["config"]["data"]["class_names"] == ["normal", "tumour"]
    assert content["meta"]["config"]["data"]["image_size"] == 32
