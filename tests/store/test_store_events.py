"""Waiting for a run's events: polling the events table, and Redis pub/sub when configured.

Writer and reader are separate stores on one database, as the ServerApp and the API are.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from medfed.errors import StoreError
from medfed.store import RunStore
from medfed.store import events as event_bus


def _publish_later(store: RunStore, run_id: str, delay_s: float) -> list[float]:
    """Publish one event after ``delay_s`` in a thread; the list receives the publish time.

    The time is taken as the publish starts: a waiter may wake before ``publish`` returns.
    """
    published: list[float] = []

    def publish() -> None:
        time.sleep(delay_s)
        published.append(time.monotonic())
        store.publish(run_id, "round_finished", {"round": 1})

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    _threads.append(thread)
    return published


_threads: list[threading.Thread] = []


@pytest.fixture(autouse=True)
def _publishers_finish():
    """Let each test's publishing thread finish before its stores close."""
    yield
    while _threads:
        _threads.pop().join(timeout=10)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/medfed.db"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("MEDFED_TEST_REDIS_URL")
    if not url:
        pytest.skip("Redis event bus not tested: set MEDFED_TEST_REDIS_URL")
    return url


@pytest.fixture
def writer(db_url: str) -> Iterator[RunStore]:
    with RunStore(db_url) as store:
        yield store


def _new_run(store: RunStore) -> str:
    run_id = store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
    store.publish(run_id, "run_started", {})
    return run_id


def test_history_comes_at_once(writer: RunStore, db_url: str) -> None:
    run_id = _new_run(writer)
    with RunStore(db_url) as reader:
        start = time.monotonic()
        events = reader.wait_for_events(run_id, 0, timeout_s=5)
    assert [e.type for e in events] == ["run_started"]
    assert time.monotonic() - start < 0.5


def test_polling_wakes_on_new_event(writer: RunStore, db_url: str) -> None:
    run_id = _new_run(writer)
    last = writer.events(run_id)[-1].id
    with RunStore(db_url) as reader:
        published = _publish_later(writer, run_id, 0.3)
        events = reader.wait_for_events(run_id, last, timeout_s=5)
        woke = time.monotonic()
    assert [e.type for e in events] == ["round_finished"] and events[0].id > last
    assert woke - published[0] < event_bus.POLL_INTERVAL_S + 0.5


def test_wait_times_out_empty(writer: RunStore, db_url: str) -> None:
    run_id = _new_run(writer)
    last = writer.events(run_id)[-1].id
    with RunStore(db_url) as reader:
        start = time.monotonic()
        assert reader.wait_for_events(run_id, last, timeout_s=0.7) == []
    assert 0.7 <= time.monotonic() - start < 1.7


def test_redis_carries_each_event(db_url: str, redis_url: str) -> None:
    with RunStore(db_url, redis_url=redis_url) as store:
        run_id = store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
        client = redis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(event_bus.channel(run_id))
        pubsub.get_message(timeout=1)  # the subscription confirmation
        event_id = store.publish(run_id, "client_replied", {"hospital": "h1", "loss": 0.3})
        message = pubsub.get_message(timeout=5)
        pubsub.close()
        client.close()
        assert message is not None and message["channel"] == f"medfed:run:{run_id}".encode()
        assert json.loads(message["data"]) == store.events(run_id)[-1].to_json()
        assert json.loads(message["data"])["id"] == event_id


def test_redis_wakes_waiter_without_polling(
    writer: RunStore, db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_bus, "POLL_INTERVAL_S", 30.0)  # only Redis can wake it in time
    run_id = _new_run(writer)
    last = writer.events(run_id)[-1].id
    with (
        RunStore(db_url, redis_url=redis_url) as publisher,
        RunStore(db_url, redis_url=redis_url) as reader,
    ):
        published = _publish_later(publisher, run_id, 0.3)
        events = reader.wait_for_events(run_id, last, timeout_s=10)
        woke = time.monotonic()
        _threads.pop().join(timeout=10)  # publisher finishes before its store closes
    assert [e.type for e in events] == ["round_finished"]
    assert woke - published[0] < 2


def test_unreachable_redis_is_a_clear_error(db_url: str) -> None:
    with pytest.raises(StoreError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        RunStore(db_url, redis_url="redis://127.0.0.1:1/0")
