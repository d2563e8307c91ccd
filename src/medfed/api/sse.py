"""Server-sent events of one run: stored history first, then live events until the run ends."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from medfed.store import RunStore
from medfed.store.records import EventRecord
from medfed.store.repository import FINAL_STATUSES

TERMINAL_EVENTS = frozenset({"run_finished", "run_failed", "run_stopped"})
HEARTBEAT_S = 15.0
WAIT_S = 5.0
MAX_WAITING_STREAMS = 100


def stream_limiter() -> anyio.CapacityLimiter:
    """Threads for event streams' waits, apart from the pool that serves the REST routes."""
    return anyio.CapacityLimiter(MAX_WAITING_STREAMS)


def format_event(event: EventRecord) -> str:
    """One SSE message: ``id``, ``event`` and the JSON payload as ``data``."""
    data = json.dumps(event.payload, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


async def run_events(
    request: Request,
    store: RunStore,
    run_id: str,
    after_id: int = 0,
) -> AsyncIterator[str]:
    """Replay the run's events after ``after_id``, then relay new ones as they are published.

    Ends after a terminal event, when the client goes away, or when the run's row already
    said it ended and no event came within ``WAIT_S`` (a run killed without an end event).
    A comment line every ``HEARTBEAT_S`` of silence keeps proxies from closing the stream.
    """
    limiter: anyio.CapacityLimiter = request.app.state.stream_limiter
    last_id = after_id
    last_sent = time.monotonic()
    while True:
        ended = await _run_over(store, run_id)
        batch = await anyio.to_thread.run_sync(
            store.wait_for_events, run_id, last_id, WAIT_S, limiter=limiter
        )
        for event in batch:
            yield format_event(event)
            last_id = event.id
            last_sent = time.monotonic()
            if event.type in TERMINAL_EVENTS:
                return
        if (not batch and ended) or await request.is_disconnected():
            return
        if time.monotonic() - last_sent >= HEARTBEAT_S:
            yield ": heartbeat\n\n"
            last_sent = time.monotonic()


async def _run_over(store: RunStore, run_id: str) -> bool:
    run = await run_in_threadpool(store.get_run, run_id)
    return run.status in FINAL_STATUSES
