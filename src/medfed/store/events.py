"""Live run events: Redis pub/sub when configured, otherwise polling the events table."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from medfed.errors import StoreError
from medfed.store.database import redact
from medfed.store.records import EventRecord

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.5


def channel(run_id: str) -> str:
    """The Redis channel a run's events are published on."""
    return f"medfed:run:{run_id}"


class EventBus:
    """Wakes waiting readers when a run publishes an event.

    The events table is the record; Redis only shortens the wait. When Redis fails while
    running, publishing logs a warning and waiting falls back to polling.
    """

    def __init__(self, redis_url: str | None = None):
        self.redis_url = redis_url
        self._redis: redis.Redis | None = _connect(redis_url) if redis_url else None

    def publish(self, event: EventRecord) -> None:
        if self._redis is None:
            return
        import redis

        try:
            self._redis.publish(channel(event.run_id), json.dumps(event.to_json()))
        except redis.RedisError as exc:
            log.warning("event %s not published on Redis %s: %s", event.id, self._where, exc)

    def wait(
        self, run_id: str, fetch: Callable[[], list[EventRecord]], timeout_s: float
    ) -> list[EventRecord]:
        """``fetch()`` as soon as it returns events, or its (empty) result after ``timeout_s``."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if self._redis is not None:
            import redis

            try:
                return self._wait_redis(run_id, fetch, deadline)
            except redis.RedisError as exc:
                log.warning("waiting on Redis %s failed (%s); polling instead", self._where, exc)
        return _wait_polling(fetch, deadline)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    @property
    def _where(self) -> str:
        return redact(self.redis_url or "")

    def _wait_redis(
        self, run_id: str, fetch: Callable[[], list[EventRecord]], deadline: float
    ) -> list[EventRecord]:
        assert self._redis is not None
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel(run_id))
            events = fetch()  # after subscribing, so nothing published in between is missed
            while not events and (remaining := deadline - time.monotonic()) > 0:
                if pubsub.get_message(timeout=remaining) is not None:
                    events = fetch()
            return events
        finally:
            pubsub.close()


def _wait_polling(fetch: Callable[[], list[EventRecord]], deadline: float) -> list[EventRecord]:
    while True:
        events = fetch()
        remaining = deadline - time.monotonic()
        if events or remaining <= 0:
            return events
        time.sleep(min(POLL_INTERVAL_S, remaining))


def _connect(redis_url: str) -> redis.Redis:
    try:
        import redis
    except ModuleNotFoundError:
        raise StoreError(
            f"database.redis_url is {redact(redis_url)} but the redis package is missing; "
            "install it with pip install 'medfed[redis]' or unset database.redis_url"
        ) from None
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise StoreError(
            f"cannot reach Redis at {redact(redis_url)}: {exc}. Start Redis, fix "
            "database.redis_url, or unset it to use the database alone for events"
        ) from None
    return client
