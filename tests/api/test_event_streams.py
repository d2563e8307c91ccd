"""Live events under load: one store wait per followed run, every follower gets every event,
a client that never reads or falls behind is cut off without slowing the others, and a client
that sends its request a byte at a time is disconnected."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from api_support import ADMIN, login, make_client, parse_sse, seed_run
from medfed.api import serving, sse
from medfed.api.serving import HeaderDeadlineProtocol
from medfed.api.sse import EventHub, EventStream, stream_limiter
from medfed.store import RunStore


def test_followers_of_a_run_share_one_wait_and_all_get_every_event(store: RunStore) -> None:
    run_id = store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
    waits = []
    real_wait = store.wait_for_events

    def counted_wait(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        waits.append(threading.get_ident())
        return real_wait(*args, **kwargs)

    store.wait_for_events = counted_wait  # type: ignore[method-assign]

    async def scenario() -> list[list[int]]:
        hub = EventHub(store, stream_limiter())
        followers = [await hub.follow(run_id) for _ in range(50)]
        published = [
            await asyncio.to_thread(store.publish, run_id, "round_started", {"round": i})
            for i in range(5)
        ]
        got: list[list[int]] = [[] for _ in followers]
        deadline = time.monotonic() + 20
        while any(len(g) < len(published) for g in got) and time.monotonic() < deadline:
            for follower, received in zip(followers, got, strict=True):
                while not follower.queue.empty():
                    received.append(follower.queue.get_nowait().id)
            await asyncio.sleep(0.05)
        for follower in followers:
            hub.leave(run_id, follower)
        assert hub.followed_runs == 1  # the run's relay ends at its next wake-up
        return [published, *got]

    published, *received = asyncio.run(scenario())
    assert all(ids == published for ids in received)
    assert len(waits) < 20  # one wait per wake-up for all 50 followers, not one each


def test_a_follower_that_falls_behind_is_marked_and_the_others_go_on(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "CLIENT_QUEUE", 3)
    run_id = store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=1)

    async def scenario() -> tuple[bool, bool, int]:
        hub = EventHub(store, stream_limiter())
        stuck, reading = await hub.follow(run_id), await hub.follow(run_id)
        got = 0
        for i in range(6):
            await asyncio.to_thread(store.publish, run_id, "round_started", {"round": i})
            deadline = time.monotonic() + 10
            while got <= i and time.monotonic() < deadline:
                while not reading.queue.empty():
                    reading.queue.get_nowait()
                    got += 1
                await asyncio.sleep(0.02)
        hub.leave(run_id, stuck)
        hub.leave(run_id, reading)
        return stuck.lagging, reading.lagging, got

    stuck_lagging, reading_lagging, got = asyncio.run(scenario())
    assert stuck_lagging and not reading_lagging
    assert got == 6


def test_a_client_that_never_reads_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "WRITE_TIMEOUT_S", 0.2)
    sent: list[dict] = []
    closed = []

    async def body():  # noqa: ANN202
        try:
            for i in range(3):
                yield f"id: {i}\nevent: x\ndata: {{}}\n\n"
        finally:
            closed.append(True)

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and len(sent) >= 2:
            await asyncio.sleep(3600)  # the client's buffers are full: it never reads
        sent.append(message)

    started = time.monotonic()
    asyncio.run(EventStream(body(), media_type="text/event-stream").stream_response(send))
    assert time.monotonic() - started < 5
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert closed == [True]  # the stream let go of its run's events
    assert not any(m.get("more_body") is False for m in sent)  # the server closes it unfinished


def test_a_client_sending_its_request_slowly_is_disconnected_others_are_served(
    tmp_path: Path, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "HEADER_TIMEOUT_S", 1.0)
    client = make_client(store, tmp_path / "home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        client.app, host="127.0.0.1", port=port, log_level="warning", http=HeaderDeadlineProtocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        slow.settimeout(5)
        started = time.monotonic()
        fast = socket.create_connection(("127.0.0.1", port))
        fast.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert fast.recv(1024).startswith(b"HTTP/1.1 200")
        assert slow.recv(1024) == b""  # closed by the server
        assert 0.8 < time.monotonic() - started < 4
        slow.close()
        fast.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_stream_ends_with_the_run_even_when_the_end_event_comes_late(
    tmp_path: Path, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "IDLE_CHECK_S", 0.1)
    monkeypatch.setattr(sse, "WAIT_S", 0.1)
    client = make_client(store, tmp_path / "home")
    run_id = seed_run(store, client.app.state.cfg, status="running")

    def end_later() -> None:
        time.sleep(0.3)
        store.set_status(run_id, "finished")  # the status first ...
        time.sleep(0.3)
        store.publish(run_id, "run_finished", {})  # ... its event a moment later

    admin = login(client, ADMIN)
    thread = threading.Thread(target=end_later)
    thread.start()
    response = client.get(f"/api/runs/{run_id}/events", headers=admin)
    thread.join()
    assert [m["event"] for m in parse_sse(response.text)] == ["run_finished"]
