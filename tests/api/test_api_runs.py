"""The runs API on a real SQLite RunStore: listing, creation with config validation, progress,
stop, live events, model and report downloads."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update

from api_support import (
    parse_sse,
    seed_run,
)
from medfed.api import sse
from medfed.config import RUN_SECTIONS, MedfedConfig
from medfed.store import ArtifactStore, RunStore
from medfed.store import models as m

SERVER_SECTIONS = {"model": {"name": "cancer_cnn"}, "federated": {"num_clients": 3}}


@pytest.fixture
def sections() -> dict:
    return SERVER_SECTIONS


def _set_created(store: RunStore, run_id: str, when: datetime) -> None:
    with store.engine.begin() as connection:
        connection.execute(update(m.Run).where(m.Run.id == run_id).values(created_at=when))


@pytest.fixture
def five_runs(store: RunStore, cfg: MedfedConfig) -> dict[str, str]:
    """Runs created on 1..5 March 2026 with mixed strategies and statuses."""
    specs = [
        ("alpha", "FedAvg", "finished"),
        ("beta", "FedProx", "running"),
        ("gamma", "FedAvg", "failed"),
        ("delta", "FedProx", "finished"),
        ("epsilon", "FedAvg", "pending"),
    ]
    ids = {}
    for day, (name, strategy, status) in enumerate(specs, start=1):
        ids[name] = seed_run(store, cfg, name, strategy=strategy, status=status)
        _set_created(store, ids[name], datetime(2026, 3, day, 12, tzinfo=UTC))
    return ids


def _names(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def test_runs_list_pages_newest_first(
    client: TestClient, viewer: dict[str, str], five_runs: dict[str, str]
) -> None:
    first = client.get("/api/runs?page=1&page_size=2", headers=viewer)
    assert _names(first) == ["epsilon", "delta"]
    body = first.json()
    assert (body["total"], body["page"], body["page_size"]) == (5, 1, 2)
    assert _names(client.get("/api/runs?page=3&page_size=2", headers=viewer)) == ["alpha"]
    assert _names(client.get("/api/runs?page=4&page_size=2", headers=viewer)) == []


def test_runs_list_filters_and_sorts(
    client: TestClient, viewer: dict[str, str], five_runs: dict[str, str]
) -> None:
    def names(query: str) -> list[str]:
        return _names(client.get(f"/api/runs?{query}", headers=viewer))

    assert names("sort=name") == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert names("sort=-name") == ["gamma", "epsilon", "delta", "beta", "alpha"]
    assert names("status=finished") == ["delta", "alpha"]
    assert names("strategy=FedProx&sort=created_at") == ["beta", "delta"]
    assert names("search=ta") == ["delta", "beta"]
    assert names(f"search={five_runs['gamma'][:6]}") == ["gamma"]
    assert names("since=2026-03-02T00:00:00Z&until=2026-03-04T00:00:00Z") == ["gamma", "beta"]
    filtered = client.get("/api/runs?strategy=FedAvg&status=finished", headers=viewer).json()
    assert filtered["total"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("sort=password", "sort"), ("status=exploded", "status"), ("page_size=0", "page_size")],
)
def test_runs_list_rejects_bad_parameters(
    client: TestClient, viewer: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/api/runs?{query}", headers=viewer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_run_summary_and_detail_fields(
    client: TestClient, store: RunStore, cfg: MedfedConfig, viewer: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, "summary", status="running")
    for rnd, accuracy in ((1, 0.61), (2, 0.83), (3, 0.79)):
        store.record_round(run_id, rnd, metrics={"accuracy": accuracy}, duration_s=2.0)
    store.set_final_metrics(run_id, {"accuracy": 0.8, "auc": 0.9})
    store.set_status(run_id, "finished")
    summary = client.get("/api/runs", headers=viewer).json()["items"][0]
    assert summary["id"] == run_id
    assert summary["rounds_done"] == 3
    assert summary["best_accuracy"] == pytest.approx(0.83)
    assert summary["final_accuracy"] == pytest.approx(0.8)
    assert summary["model"] == "cancer_cnn"
    assert summary["status"] == "finished" and summary["duration_s"] >= 0
    detail = client.get(f"/api/runs/{run_id}", headers=viewer).json()
    assert detail["final_metrics"] == {"accuracy": 0.8, "auc": 0.9}
    assert detail["config"]["federated"]["num_clients"] == 3
    assert set(detail["config"]) <= set(RUN_SECTIONS)  # no database, API or home settings
    assert detail["flower_run_id"] is None


def test_unknown_run_is_404_on_every_run_route(client: TestClient, admin: dict[str, str]) -> None:
    for method, suffix in [
        ("GET", ""),
        ("POST", "/start"),
        ("POST", "/stop"),
        ("GET", "/rounds"),
        ("GET", "/clients"),
        ("GET", "/events"),
        ("GET", "/checkpoints"),
        ("GET", "/model"),
        ("GET", "/report"),
    ]:
        response = client.request(method, f"/api/runs/nosuchrun{suffix}", headers=admin)
        assert response.status_code == 404, (method, suffix)
        assert "nosuchrun" in response.json()["detail"]


def test_create_run_without_start_merges_over_server_defaults(
    client: TestClient, store: RunStore, admin: dict[str, str], tmp_path: Path
) -> None:
    body = {
        "name": "prox-3",
        "config": {"federated": {"strategy": "FedProx", "rounds": 3}, "training": {"seed": 7}},
        "start": False,
    }
    response = client.post("/api/runs", json=body, headers=admin)
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["name"], run["status"], run["strategy"]) == ("prox-3", "pending", "FedProx")
    assert (run["num_rounds"], run["created_by"], run["mode"]) == (3, "alice", "simulation")
    config = run["config"]
    assert config["federated"]["num_clients"] == 3  # the server's default
    assert config["model"]["name"] == "cancer_cnn"  # the server's default
    assert config["training"]["seed"] == 7
    assert config["name"] == "prox-3"
    assert set(config) == set(RUN_SECTIONS)  # the platform's home and secrets stay its own
    stored = store.get_run(run["id"])
    assert stored.config["federated"]["strategy"] == "FedProx"
    actions = [(e.action, e.target) for e in store.activity_log()]
    assert ("run.create", run["id"]) in actions
    assert ("run.start", run["id"]) not in actions


@pytest.mark.parametrize(
    ("config", "loc"),
    [
        ({"federated": {"rounds": 0}}, ["body", "config", "federated", "rounds"]),
        ({"federated": {"strategy": "FedMagic"}}, ["body", "config", "federated", "strategy"]),
        ({"federated": {"roundz": 3}}, ["body", "config", "federated", "roundz"]),
        ({"privacy": {"delta": 2}}, ["body", "config", "privacy", "delta"]),
        ({"database": {"url": "sqlite:///x.db"}}, ["body", "config", "database"]),
        ({"model": "resnet18"}, ["body", "config", "model"]),
    ],
)
def test_create_run_with_bad_config_is_a_422_naming_the_key(
    client: TestClient, store: RunStore, admin: dict[str, str], config: dict, loc: list[str]
) -> None:
    response = client.post("/api/runs", json={"name": "bad", "config": config}, headers=admin)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert loc in [error["loc"] for error in errors]
    assert all(error["msg"] for error in errors)
    assert store.list_runs()[1] == 0


def test_stop_a_pending_run(client: TestClient, store: RunStore, admin: dict[str, str]) -> None:
    created = client.post("/api/runs", json={"name": "s", "start": False}, headers=admin).json()
    response = client.post(f"/api/runs/{created['id']}/stop", headers=admin)
    assert response.status_code == 200
    assert response.json()["status"] == "stopped"
    assert [e.type for e in store.events(created["id"])] == ["run_stopped"]
    stream = client.get(f"/api/runs/{created['id']}/events", headers=admin)
    assert [m["event"] for m in parse_sse(stream.text)] == ["run_stopped"]
    assert ("run.stop", created["id"]) in [(e.action, e.target) for e in store.activity_log()]
    again = client.post(f"/api/runs/{created['id']}/stop", headers=admin)
    assert again.status_code == 409 and "stopped" in again.json()["detail"]


def test_start_refuses_a_finished_run(
    client: TestClient, store: RunStore, cfg: MedfedConfig, admin: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, status="finished")
    response = client.post(f"/api/runs/{run_id}/start", headers=admin)
    assert response.status_code == 409
    assert "finished" in response.json()["detail"]
    assert "run.start" not in [e.action for e in store.activity_log()]


def test_settings_that_contradict_the_defaults_are_a_409_naming_them(
    client: TestClient, store: RunStore, admin: dict[str, str]
) -> None:
    body = {"name": "bad", "config": {"federated": {"num_clients": 1}}}
    response = client.post("/api/runs", json=body, headers=admin)
    assert response.status_code == 409
    errors = response.json()["detail"]
    assert ["body", "config", "federated"] in [error["loc"] for error in errors]
    assert any("min_train_clients" in error["msg"] for error in errors)
    assert store.list_runs()[1] == 0


def test_start_refuses_a_run_whose_worker_is_alive(
    client: TestClient, store: RunStore, cfg: MedfedConfig, admin: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, status="pending")
    worker_dir = cfg.home / "runs" / run_id
    worker_dir.mkdir(parents=True)
    # A live process standing in for the run's worker (its command line names the run).
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", run_id])
    try:
        (worker_dir / "worker.pid").write_text(str(stand_in.pid))
        response = client.post(f"/api/runs/{run_id}/start", headers=admin)
    finally:
        stand_in.kill()
        stand_in.wait()
    assert response.status_code == 409
    assert "already being trained" in response.json()["detail"]
    assert store.get_run(run_id).status == "pending"


def test_rounds_clients_and_checkpoints(
    client: TestClient, store: RunStore, cfg: MedfedConfig, viewer: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, status="running")
    matrix = [[5, 1], [2, 4]]
    store.record_round(
        run_id,
        1,
        metrics={"loss": 0.5, "accuracy": 0.75, "confusion_matrix": matrix},
        train_metrics={"loss": 0.6},
        duration_s=3.5,
        bytes_up=1000,
        bytes_down=2000,
        epsilon=1.25,
        num_clients_ok=2,
        num_clients_failed=1,
    )
    for rnd, hospital, status in ((1, "h0", "ok"), (1, "h1", "failed"), (2, "h0", "ok")):
        store.record_client_result(
            run_id,
            rnd,
            hospital=hospital,
            phase="train",
            status=status,
            num_examples=10 if status == "ok" else 0,
            metrics={"loss": 0.4} if status == "ok" else None,
            error=None if status == "ok" else "timed out",
        )
    store.record_checkpoint(
        run_id, 1, "runs/x/round-1.pt", metric_name="accuracy", metric_value=0.75, size_bytes=99
    )
    rounds = client.get(f"/api/runs/{run_id}/rounds", headers=viewer).json()
    assert len(rounds) == 1
    assert rounds[0]["metrics"]["confusion_matrix"] == matrix
    assert (rounds[0]["bytes_up"], rounds[0]["epsilon"], rounds[0]["num_clients_failed"]) == (
        1000,
        1.25,
        1,
    )
    clients = client.get(f"/api/runs/{run_id}/clients", headers=viewer).json()
    assert [(c["round"], c["hospital"], c["status"]) for c in clients] == [
        (1, "h0", "ok"),
        (1, "h1", "failed"),
        (2, "h0", "ok"),
    ]
    assert clients[1]["error"] == "timed out"
    round_two = client.get(f"/api/runs/{run_id}/clients?round=2", headers=viewer).json()
    assert [c["hospital"] for c in round_two] == ["h0"]
    checkpoints = client.get(f"/api/runs/{run_id}/checkpoints", headers=viewer).json()
    assert checkpoints == [
        {
            "round": 1,
            "metric_name": "accuracy",
            "metric_value": 0.75,
            "size_bytes": 99,
            "created_at": checkpoints[0]["created_at"],
        }
    ]


def _publish_later(store: RunStore, run_id: str, delay_s: float) -> threading.Thread:
    def publish() -> None:
        time.sleep(delay_s)
        store.publish(run_id, "round_finished", {"round": 1, "metrics": {"accuracy": 0.9}})
        store.set_final_metrics(run_id, {"accuracy": 0.9})
        store.set_status(run_id, "finished")
        store.publish(run_id, "run_finished", {"final_metrics": {"accuracy": 0.9}})
        store.publish(run_id, "round_started", {"round": 99})  # after the end: never relayed

    thread = threading.Thread(target=publish)
    thread.start()
    return thread


def test_events_replay_history_then_stream_until_run_finished(
    client: TestClient, store: RunStore, cfg: MedfedConfig, viewer: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, status="running")
    store.publish(run_id, "run_started", {"num_rounds": 5, "strategy": "FedAvg"})
    store.publish(run_id, "round_started", {"round": 1})
    publisher = _publish_later(store, run_id, delay_s=0.5)
    started = time.monotonic()
    response = client.get(f"/api/runs/{run_id}/events", headers=viewer)
    publisher.join()
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = parse_sse(response.text)
    assert [msg["event"] for msg in messages] == [
        "run_started",
        "round_started",
        "round_finished",
        "run_finished",
    ]
    assert messages[0]["data"] == {"num_rounds": 5, "strategy": "FedAvg"}
    assert messages[2]["data"]["metrics"] == {"accuracy": 0.9}
    assert [msg["id"] for msg in messages] == [e.id for e in store.events(run_id)[:4]]

    second_id = messages[1]["id"]
    resumed = client.get(f"/api/runs/{run_id}/events?after={second_id}", headers=viewer)
    assert [m["event"] for m in parse_sse(resumed.text)] == ["round_finished", "run_finished"]
    reconnect = client.get(
        f"/api/runs/{run_id}/events", headers={**viewer, "Last-Event-ID": str(messages[2]["id"])}
    )
    assert [m["event"] for m in parse_sse(reconnect.text)] == ["run_finished"]


def test_events_send_heartbeats_while_quiet(
    client: TestClient,
    store: RunStore,
    cfg: MedfedConfig,
    viewer: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "WAIT_S", 0.1)
    monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)
    run_id = seed_run(store, cfg, status="running")
    publisher = _publish_later(store, run_id, delay_s=1.0)
    response = client.get(f"/api/runs/{run_id}/events", headers=viewer)
    publisher.join()
    assert response.text.count(": heartbeat\n\n") >= 2
    assert [m["event"] for m in parse_sse(response.text)][-1] == "run_finished"


def test_events_of_a_run_that_ended_without_an_end_event_stop(
    client: TestClient,
    store: RunStore,
    cfg: MedfedConfig,
    viewer: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "WAIT_S", 0.1)
    run_id = seed_run(store, cfg, status="failed")
    store.publish(run_id, "round_started", {"round": 1})
    response = client.get(f"/api/runs/{run_id}/events", headers=viewer)
    assert [m["event"] for m in parse_sse(response.text)] == ["round_started"]


def test_model_download_is_a_loadable_state_dict_and_audited(
    client: TestClient, store: RunStore, cfg: MedfedConfig, admin: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, "my model", status="finished")
    artifacts = ArtifactStore(cfg.home / "artifacts")
    states = {}
    for rnd in (1, 2):
        states[rnd] = {"weight": torch.full((2, 3), float(rnd)), "bias": torch.arange(2.0)}
        path = artifacts.save_state_dict(
            f"runs/{run_id}/round-{rnd}.pt", states[rnd], {"round": rnd, "classes": ["no", "yes"]}
        )
        store.record_checkpoint(
            run_id,
            rnd,
            str(path),
            metric_name="accuracy",
            metric_value=0.5 + rnd / 10,
            size_bytes=path.stat().st_size,
        )
    latest = client.get(f"/api/runs/{run_id}/model", headers=admin)
    assert latest.status_code == 200
    assert latest.headers["content-type"] == "application/octet-stream"
    assert f'filename="my_model-{run_id[:8]}-round2.pt"' in latest.headers["content-disposition"]
    content = torch.load(io.BytesIO(latest.content), weights_only=True)
    assert content["meta"] == {"round": 2, "classes": ["no", "yes"]}
    assert torch.equal(content["state_dict"]["weight"], states[2]["weight"])
    first = client.get(f"/api/runs/{run_id}/model?round=1", headers=admin)
    first_state = torch.load(io.BytesIO(first.content), weights_only=True)["state_dict"]
    assert torch.equal(first_state["weight"], states[1]["weight"])
    missing = client.get(f"/api/runs/{run_id}/model?round=7", headers=admin)
    assert missing.status_code == 404 and "round 7" in missing.json()["detail"]
    downloads = [e for e in store.activity_log() if e.action == "model.download"]
    assert [(e.user, e.target, e.detail) for e in downloads] == [
        ("alice", run_id, {"round": 1}),
        ("alice", run_id, {"round": 2}),
    ]


def test_model_download_of_a_run_without_checkpoints_is_404(
    client: TestClient, store: RunStore, cfg: MedfedConfig, admin: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, status="running")
    response = client.get(f"/api/runs/{run_id}/model", headers=admin)
    assert response.status_code == 404
    assert "no model" in response.json()["detail"]


def test_report_format_is_validated(
    client: TestClient, store: RunStore, cfg: MedfedConfig, viewer: dict[str, str]
) -> None:
    run_id = seed_run(store, cfg, status="finished")
    response = client.get(f"/api/runs/{run_id}/report?format=docx", headers=viewer)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "format"]


@pytest.mark.parametrize(
    ("fmt", "media_type", "magic"),
    [("html", "text/html", b"<"), ("pdf", "application/pdf", b"%PDF")],
)
def test_report_download_is_built_and_audited(
    client: TestClient,
    store: RunStore,
    cfg: MedfedConfig,
    viewer: dict[str, str],
    fmt: str,
    media_type: str,
    magic: bytes,
) -> None:
    run_id = seed_run(store, cfg, "reported run", status="running")
    for rnd, accuracy in ((1, 0.7), (2, 0.8)):
        store.record_round(
            run_id, rnd, metrics={"loss": 1 - accuracy, "accuracy": accuracy}, duration_s=1.0
        )
    store.set_final_metrics(run_id, {"accuracy": 0.8, "loss": 0.2})
    store.set_status(run_id, "finished")
    response = client.get(f"/api/runs/{run_id}/report?format={fmt}", headers=viewer)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    assert response.content.lstrip().startswith(magic)
    assert f"reported_run-{run_id[:8]}-report.{fmt}" in response.headers["content-disposition"]
    if fmt == "html":
        assert "reported run" in response.text
    entry = store.activity_log(limit=1)[0]
    assert (entry.user, entry.action, entry.target, entry.detail) == (
        "victor",
        "report.download",
        run_id,
        {"format": fmt},
    )
