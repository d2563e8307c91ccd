"""Read-only aggregate queries the dashboard needs beyond :class:`RunStore`'s methods."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from medfed.store import RunStore
from medfed.store import models as m


def audit_total(store: RunStore) -> int:
    """How many entries the audit log holds."""
    with store.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(m.AuditEntry)) or 0


def hospital_run_ids(store: RunStore) -> dict[str, list[str]]:
    """Per hospital: the ids of the runs it sent results to, oldest run first."""
    query = (
        select(m.ClientResult.hospital, m.ClientResult.run_id)
        .join(m.Run, m.Run.id == m.ClientResult.run_id)
        .group_by(m.ClientResult.hospital, m.ClientResult.run_id, m.Run.created_at)
        .order_by(m.Run.created_at)
    )
    runs: dict[str, list[str]] = defaultdict(list)
    with store.engine.connect() as connection:
        for hospital, run_id in connection.execute(query):
            runs[hospital].append(run_id)
    return dict(runs)
