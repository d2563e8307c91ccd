"""The run store: every run's progress, per-hospital results, checkpoints and events."""

from __future__ import annotations

from medfed.store.accounts import MIN_PASSWORD_LENGTH, AccountsMixin
from medfed.store.base import jsonable
from medfed.store.event_log import EventLogMixin
from medfed.store.hospitals import HospitalsMixin
from medfed.store.rounds import RoundsMixin
from medfed.store.runs import SORT_KEYS, TEXT_SORT_KEYS, RunsMixin
from medfed.store.templates import TemplatesMixin

__all__ = ["MIN_PASSWORD_LENGTH", "SORT_KEYS", "TEXT_SORT_KEYS", "RunStore", "jsonable"]


class RunStore(
    RunsMixin, RoundsMixin, EventLogMixin, AccountsMixin, TemplatesMixin, HospitalsMixin
):
    """Repository over the run database (SQLite, MySQL/MariaDB or PostgreSQL by URL).

    Returns plain records; with ``redis_url`` events are also published on Redis so readers
    waiting in :meth:`wait_for_events` wake at once.
    """
