"""The API on the server back ends: MariaDB/MySQL and PostgreSQL (each in its own database or
schema, dropped at the end), and live events through Redis."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api_support import ADMIN, VIEWER, login, make_client, parse_sse
from db_support import BACKENDS, empty_database
from medfed.store import RunStore
from medfed.store import events as event_bus
from medfed.store import models as m


def _env_url(variable: str, what: str) -> str:
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"API on {what} not tested: set {variable}")
    return url


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database (MySQL) or schema (PostgreSQL) of the test server, dropped after."""
    with empty_database(request.param, "medfed_api", f"API on {request.param}") as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[RunStore]:
    with RunStore(database_url) as run_store:
        yield run_store
        with run_store.engine.begin() as connection:
            for table in reversed(m.Base.metadata.sorted_tables):
                connection.execute(table.delete())


@pytest.fixture
def sections() -> dict:
    return {"model": {"name": "cancer_cnn"}}


def test_runs_created_listed_and_audited(client: TestClient, store: RunStore) -> None:
    admin = login(client, ADMIN)
    for name, strategy in (("one", "FedAvg"), ("two", "FedProx"), ("three", "FedAvg")):
        body = {"name": name, "config": {"federated": {"strategy": strategy}}, "start": False}
        assert client.post("/api/runs", json=body, headers=admin).status_code == 201
    viewer = login(client, VIEWER)
    page = client.get("/api/runs?strategy=FedAvg&sort=name&page_size=1", headers=viewer).json()
    assert page["total"] == 2
    assert [run["name"] for run in page["items"]] == ["one"]
    newest = client.get("/api/runs?search=t", headers=viewer).json()["items"]
    assert [run["name"] for run in newest] == ["three", "two"]
    bad = client.post(
        "/api/runs", json={"name": "x", "config": {"federated": {"rounds": -1}}}, headers=admin
    )
    assert bad.json()["detail"][0]["loc"] == ["body", "config", "federated", "rounds"]
    activity = client.get("/api/activity?page_size=100", headers=admin).json()
    assert activity["total"] == 5
    assert [e["action"] for e in activity["items"]].count("run.create") == 3


def test_events_stream_from_the_database(client: TestClient, store: RunStore) -> None:
    viewer = login(client, VIEWER)
    admin = login(client, ADMIN)
    run_id = client.post("/api/runs", json={"name": "live", "start": False}, headers=admin).json()[
        "id"
    ]
    store.set_status(run_id, "running")  # a worker trains it: the stream follows it live
    store.publish(run_id, "run_started", {"num_rounds": 1, "strategy": "FedAvg"})
    _publish_later(store, run_id)
    response = client.get(f"/api/runs/{run_id}/events", headers=viewer)
    assert [m["event"] for m in parse_sse(response.text)] == [
        "run_started",
        "round_finished",
        "run_finished",
    ]


def _publish_later(store: RunStore, run_id: str) -> threading.Thread:
    def publish() -> None:
        time.sleep(0.5)
        store.publish(run_id, "round_finished", {"round": 1, "metrics": {"accuracy": 0.5}})
        store.publish(run_id, "run_finished", {"final_metrics": {"accuracy": 0.5}})

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    return thread


def test_events_wake_through_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redis_url = _env_url("MEDFED_TEST_REDIS_URL", "Redis")
    monkeypatch.setattr(event_bus, "POLL_INTERVAL_S", 60.0)  # only a Redis message wakes early
    with RunStore(f"sqlite:///{tmp_path / 'medfed.db'}", redis_url=redis_url) as store:
        client = make_client(store, tmp_path / "home")
        run_id = store.create_run(
            "redis",
            {"home": str(tmp_path / "home")},
            mode="simulation",
            strategy="FedAvg",
            num_rounds=1,
        )
        store.set_status(run_id, "running")
        thread = _publish_later(store, run_id)
        started = time.monotonic()
        response = client.get(f"/api/runs/{run_id}/events", headers=login(client, VIEWER))
        elapsed = time.monotonic() - started
        thread.join()
    assert [m["event"] for m in parse_sse(response.text)] == ["round_finished", "run_finished"]
    assert elapsed < 3
