"""A run's event history: appending, reading and waiting for events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from medfed.store import models as m
from medfed.store.base import StoreBase, from_row, jsonable
from medfed.store.records import EventRecord


class EventLogMixin(StoreBase):
    """The events table, with the event bus waking readers."""

    def publish(self, run_id: str, type: str, payload: dict[str, Any]) -> int:
        """Append an event to the run's history (and Redis when configured); its id."""
        event = m.Event(run_id=run_id, type=type, payload=jsonable(payload, "payload"))
        with self._writing(run_id) as session:
            session.add(event)
            session.flush()
            record = from_row(EventRecord, event)
        self.bus.publish(record)
        return record.id

    def events(
        self, run_id: str, after_id: int = 0, limit: int = 1000, type: str | None = None
    ) -> list[EventRecord]:
        """The run's events with id above ``after_id`` (only those of ``type`` if given),
        oldest first."""
        query = select(m.Event).where(m.Event.run_id == run_id, m.Event.id > after_id)
        if type is not None:
            query = query.where(m.Event.type == type)
        with self._session() as session:
            rows = session.scalars(query.order_by(m.Event.id).limit(limit)).all()
            return [from_row(EventRecord, row) for row in rows]

    def last_event_id(self, run_id: str) -> int:
        """The id of the run's newest event, 0 when it has none."""
        with self._session() as session:
            return session.scalar(
                select(func.coalesce(func.max(m.Event.id), 0)).where(m.Event.run_id == run_id)
            )

    def wait_for_events(
        self, run_id: str, after_id: int, timeout_s: float, limit: int = 1000
    ) -> list[EventRecord]:
        """Events after ``after_id`` as soon as there are some; [] after ``timeout_s``."""
        return self.bus.wait(run_id, lambda: self.events(run_id, after_id, limit), timeout_s)
