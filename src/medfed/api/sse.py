"""Server-sent events of one run: stored history first, then live events while it trains.

The store is the record. Live events of a run are fetched from it once for every client
that follows the run (:class:`EventHub`: one waiting thread per followed run, not per client)
and handed to each client's bounded queue. A client that falls behind by more than
``CLIENT_QUEUE`` events, or whose connection takes more than ``WRITE_TIMEOUT_S`` to accept
a write (it does not read), is cut off without slowing the others; a browser's EventSource
then reconnects with ``Last-Event-ID`` and gets what it missed from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Send

from medfed.store import FINAL_STATUSES, TERMINAL_EVENTS, RunStore
from medfed.store.records import EventRecord

log = logging.getLogger("medfed.api.events")

HEARTBEAT_S = 15.0
WAIT_S = 5.0  # a followed run's thread waits this long for events, then looks again
IDLE_CHECK_S = 5.0  # a quiet stream checks this often whether its client or run is gone
REPLAY_PAGE = 1000
CLIENT_QUEUE = 2000  # events a client may lag behind before it is cut off
WRITE_TIMEOUT_S = 10.0  # a write a client does not accept in this time ends its stream
RETRY_MS = 5000  # how soon a browser reconnects to a run that does not train now
MAX_WAITING_STREAMS = 100  # threads waiting for events: one per followed run
TEXT_CACHE = 4096
END_GRACE_S = 2.0  # after a run's row says it ended, how long its end event may take


def stream_limiter() -> anyio.CapacityLimiter:
    """Threads for followed runs' waits, apart from the pool that serves the REST routes."""
    return anyio.CapacityLimiter(MAX_WAITING_STREAMS)


def format_event(event: EventRecord) -> str:
    """One SSE message: ``id``, ``event`` and the JSON payload as ``data``."""
    data = json.dumps(event.payload, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


@dataclass(eq=False)
class Follower:
    """One client's place in a run's live events."""

    queue: asyncio.Queue[EventRecord] = field(
        default_factory=lambda: asyncio.Queue(maxsize=CLIENT_QUEUE)
    )
    lagging: bool = False

    def offer(self, event: EventRecord) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagging = True  # its stream ends; the client catches up from the store


class EventHub:
    """Live events of the runs clients follow, fetched once per run for all its clients."""

    def __init__(self, store: RunStore, limiter: anyio.CapacityLimiter):
        self.store = store
        self.limiter = limiter
        self._followers: dict[str, set[Follower]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._texts: dict[int, str] = {}  # recent events as sent: formatted once, not per client

    def text(self, event: EventRecord) -> str:
        """The SSE message of ``event`` (kept for the most recent ``TEXT_CACHE`` events)."""
        text = self._texts.get(event.id)
        if text is None:
            text = self._texts[event.id] = format_event(event)
            if len(self._texts) > TEXT_CACHE:
                del self._texts[next(iter(self._texts))]
        return text

    @property
    def followed_runs(self) -> int:
        return len(self._tasks)

    async def follow(self, run_id: str) -> Follower:
        """A new follower of ``run_id``: every event stored from now on reaches its queue."""
        follower = Follower()
        followers = self._followers.setdefault(run_id, set())
        followers.add(follower)
        if run_id not in self._tasks:
            last = await run_in_threadpool(self.store.last_event_id, run_id)
            if run_id not in self._tasks:  # another follower may have started it meanwhile
                self._tasks[run_id] = asyncio.create_task(self._relay(run_id, last))
        return follower

    def leave(self, run_id: str, follower: Follower) -> None:
        followers = self._followers.get(run_id)
        if followers is not None:
            followers.discard(follower)

    async def _relay(self, run_id: str, last_id: int) -> None:
        try:
            while self._followers.get(run_id):
                batch = await anyio.to_thread.run_sync(
                    self.store.wait_for_events, run_id, last_id, WAIT_S, limiter=self.limiter
                )
                for event in batch:
                    last_id = event.id
                    for follower in list(self._followers.get(run_id, ())):
                        follower.offer(event)
        except Exception:  # noqa: BLE001 - the followers' streams end; clients reconnect
            log.exception("relaying the events of run %s failed", run_id)
            for follower in self._followers.get(run_id, ()):
                follower.lagging = True
        finally:
            self._tasks.pop(run_id, None)
            if not self._followers.get(run_id):
                self._followers.pop(run_id, None)


class EventStream(StreamingResponse):
    """A text/event-stream response that ends when its client does not accept a write
    within ``WRITE_TIMEOUT_S`` (the server then closes the connection)."""

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async for chunk in self.body_iterator:
                body = chunk if isinstance(chunk, bytes) else str(chunk).encode("utf-8")
                with anyio.move_on_after(WRITE_TIMEOUT_S) as scope:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                if scope.cancelled_caught:
                    log.info(
                        "an event stream's client read nothing for %gs: cut off", WRITE_TIMEOUT_S
                    )
                    return  # unfinished: the server closes the connection
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def run_events(
    request: Request,
    store: RunStore,
    run_id: str,
    after_id: int = 0,
    *,
    live: bool,
    retry: bool = False,
) -> AsyncIterator[str]:
    """Replay the run's events after ``after_id``, then (``live``: the run trains or is about
    to) relay new ones until a terminal event.

    Ends after a terminal event, when the client goes away or falls behind, when the run's
    row says it ended and no event came (a run killed without an end event), or at once
    after the history when the run does not train now (``retry``: it may start later; the
    ``retry`` line tells the browser when to look again).
    """
    hub: EventHub = request.app.state.event_hub
    follower = await hub.follow(run_id) if live else None
    last_id = after_id
    try:
        while True:  # the history, page by page, a page in one write
            page = await run_in_threadpool(store.events, run_id, last_id, REPLAY_PAGE)
            texts, ended = _up_to_end(hub, page)
            if texts:
                yield "".join(texts)
                last_id = page[len(texts) - 1].id
            if ended:
                return
            if len(page) < REPLAY_PAGE:
                break
        if follower is None:
            if retry:  # it may start later: the browser looks again then
                yield f"retry: {RETRY_MS}\n\n"
            elif await _run_over(store, run_id):
                # Ended: its end event is in the history, or a moment behind its status.
                deadline = time.monotonic() + END_GRACE_S
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    for event in await run_in_threadpool(store.events, run_id, last_id):
                        yield hub.text(event)
                        last_id = event.id
                        if event.type in TERMINAL_EVENTS:
                            return
            return
        last_sent = time.monotonic()
        over_since: float | None = None
        while True:
            try:
                event = await asyncio.wait_for(follower.queue.get(), min(IDLE_CHECK_S, HEARTBEAT_S))
            except TimeoutError:
                if follower.lagging or await request.is_disconnected():
                    return
                if over_since is None and await _run_over(store, run_id):
                    over_since = time.monotonic()  # its end event may be a moment behind
                if over_since is not None and time.monotonic() - over_since >= END_GRACE_S:
                    for event in await run_in_threadpool(store.events, run_id, last_id):
                        yield hub.text(event)  # what is left, up to its end
                        if event.type in TERMINAL_EVENTS:
                            break
                    return
                if time.monotonic() - last_sent >= HEARTBEAT_S:
                    yield ": heartbeat\n\n"
                    last_sent = time.monotonic()
                continue
            if follower.lagging:
                return
            batch = [event]  # and whatever else has come meanwhile: one write for them all
            while not follower.queue.empty():
                batch.append(follower.queue.get_nowait())
            batch = [e for e in batch if e.id > last_id]  # not sent with the history already
            texts, ended = _up_to_end(hub, batch)
            if texts:
                yield "".join(texts)
                last_id = batch[len(texts) - 1].id
                last_sent = time.monotonic()
            if ended:
                return
    finally:
        if follower is not None:
            hub.leave(run_id, follower)


def _up_to_end(hub: EventHub, events: list[EventRecord]) -> tuple[list[str], bool]:
    """The messages of ``events`` up to and including the first terminal one; whether one
    was there."""
    texts = []
    for event in events:
        texts.append(hub.text(event))
        if event.type in TERMINAL_EVENTS:
            return texts, True
    return texts, False


async def _run_over(store: RunStore, run_id: str) -> bool:
    run = await run_in_threadpool(store.get_run, run_id)
    return run.status in FINAL_STATUSES
