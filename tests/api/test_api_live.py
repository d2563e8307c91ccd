"""A real federated run driven through the API: created, started, followed live over SSE,
then its model downloaded (simulated hospitals on a tiny synthetic dataset)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from api_support import ADMIN, VIEWER, login, make_client, parse_sse
from medfed.store import RunStore

pytestmark = pytest.mark.slow


def tiny_run(data: Path, rounds: int) -> dict[str, dict[str, object]]:
    return {
        "data": {"path": str(data), "image_size": 16},
        "model": {"name": "cancer_cnn"},
        "training": {"batch_size": 8, "learning_rate": 0.003},
        "federated": {"num_clients": 2, "rounds": rounds},
    }


def test_run_started_from_the_api_streams_to_the_end_and_gives_its_model(
    store: RunStore, tmp_path: Path, kaggle_dataset: Path
) -> None:
    client = make_client(store, tmp_path / "home")
    admin = login(client, ADMIN)
    body = {"name": "api-live", "config": tiny_run(kaggle_dataset, rounds=1), "start": False}
    run_id = client.post("/api/runs", json=body, headers=admin).json()["id"]
    started = client.post(f"/api/runs/{run_id}/start", headers=admin)
    assert started.status_code == 200, started.text
    assert started.json()["status"] in ("pending", "running")

    stream = client.get(f"/api/runs/{run_id}/events", headers=login(client, VIEWER))
    events = parse_sse(stream.text)
    types = [e["event"] for e in events]
    assert types[:3] == ["run_queued", "run_admitted", "run_started"], types
    assert types[-1] == "run_finished", types
    assert types.count("round_finished") == 1
    assert {e["data"]["hospital"] for e in events if e["event"] == "client_replied"}

    run = client.get(f"/api/runs/{run_id}", headers=admin).json()
    assert run["status"] == "finished" and run["rounds_done"] == 1
    assert 0 <= run["final_accuracy"] <= 1
    rounds = client.get(f"/api/runs/{run_id}/rounds", headers=admin).json()
    assert [r["round"] for r in rounds] == [1]
    model = client.get(f"/api/runs/{run_id}/model", headers=admin)
    assert model.status_code == 200
    content = torch.load(io.BytesIO(model.content), weights_only=True)
    assert content["state_dict"] and all(
        isinstance(t, torch.Tensor) for t in content["state_dict"].values()
    )
    actions = [(e.action, e.target) for e in store.activity_log()]
    for action in ("run.create", "run.start", "model.download"):
        assert (action, run_id) in actions
