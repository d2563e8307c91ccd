"""Runs: creating them, their status and queue, looking them up and listing them."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medfed.config import run_definition
from medfed.errors import StoreError
from medfed.store import models as m
from medfed.store.base import StoreBase, check_choice, from_row, jsonable, no_run
from medfed.store.records import RunRecord
from medfed.store.vocabulary import ACTIVE_STATUSES, FINAL_STATUSES, Metric, Mode, RunStatus

TEXT_SORT_KEYS = ("name", "status", "strategy")
SORT_KEYS = ("created_at", "started_at", "finished_at", "name", "status", "strategy", "num_rounds")


class RunsMixin(StoreBase):
    """The runs table."""

    def create_run(
        self,
        name: str,
        config: dict[str, Any],
        *,
        mode: str,
        strategy: str,
        num_rounds: int,
        created_by: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new pending run; returns its id (a uuid hex unless ``run_id`` is given).

        Only what defines the run is kept of ``config`` (see :func:`medfed.config.run_definition`):
        never the platform's home, database, API or key settings.
        """
        check_choice("mode", mode, Mode)
        if not name.strip() or len(name) > m.NAME_LENGTH:
            raise StoreError(f"a run name needs 1 to {m.NAME_LENGTH} characters, not {len(name)}")
        run_id = run_id or uuid.uuid4().hex
        run = m.Run(
            id=run_id,
            name=name,
            mode=mode,
            status=RunStatus.PENDING,
            strategy=strategy,
            num_rounds=num_rounds,
            config=jsonable(run_definition(config), "config"),
            created_by=created_by,
        )
        try:
            with self._session() as session:
                session.add(run)
        except IntegrityError:
            raise StoreError(f"a run with id {run_id} already exists; pick another id") from None
        return run_id

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        only_from: Sequence[str] | None = None,
    ) -> bool:
        """Set the status; 'running' stamps started_at, a final status stamps finished_at,
        'queued' puts the run at the back of the queue.

        With ``only_from``, the status changes only if it is one of those now (one atomic
        UPDATE, safe against other processes); returns whether it changed.
        """
        check_choice("status", status, RunStatus)
        now = m.utcnow()
        values: dict[str, Any] = {"status": status, "error": error}
        if status == RunStatus.RUNNING:
            values["started_at"] = func.coalesce(m.Run.started_at, now)
            values["finished_at"] = None
        elif status == RunStatus.QUEUED:
            values["queued_at"] = now
            values["finished_at"] = None
        elif status in FINAL_STATUSES:
            values["finished_at"] = now
        statement = update(m.Run).where(m.Run.id == run_id).values(**values)
        if only_from is not None:
            statement = statement.where(m.Run.status.in_(tuple(only_from)))
        with self._session() as session:
            changed = session.execute(statement.execution_options(synchronize_session=False))
            if changed.rowcount:  # type: ignore[attr-defined]
                return True
            if session.get(m.Run, run_id) is None:
                raise no_run(run_id)
            return False

    def queued_runs(self, mode: str | None = None) -> list[RunRecord]:
        """Runs waiting in the queue (of one mode when given), first in line first."""
        query = select(m.Run).where(m.Run.status == RunStatus.QUEUED)
        if mode is not None:
            query = query.where(m.Run.mode == mode)
        with self._session() as session:
            rows = session.scalars(query.order_by(m.Run.queued_at, m.Run.id)).all()
            return [_run_record(run, {}) for run in rows]

    def queue_positions(self) -> dict[str, int]:
        """Each queued run's place in its line (1: next); simulated and deployed runs wait
        in separate lines."""
        places: dict[str, int] = {}
        for mode in Mode:
            for place, run in enumerate(self.queued_runs(mode), start=1):
                places[run.id] = place
        return places

    def active_runs(self, mode: str | None = None) -> list[RunRecord]:
        """Runs pending or running (of one mode when given), oldest first."""
        query = select(m.Run).where(m.Run.status.in_(ACTIVE_STATUSES))
        if mode is not None:
            query = query.where(m.Run.mode == mode)
        with self._session() as session:
            rows = session.scalars(query.order_by(m.Run.created_at, m.Run.id)).all()
            return [_run_record(run, {}) for run in rows]

    def set_flower_run_id(self, run_id: str, flower_run_id: int) -> None:
        with self._session() as session:
            self._run(session, run_id).flower_run_id = int(flower_run_id)

    def set_class_names(self, run_id: str, class_names: list[str]) -> None:
        """Write the class names found in the data into the run's stored ``data.class_names``."""
        with self._session() as session:
            run = self._run(session, run_id)
            config = dict(run.config or {})
            config["data"] = {**config.get("data", {}), "class_names": list(class_names)}
            run.config = jsonable(config, "config")

    def set_final_metrics(self, run_id: str, metrics: dict[str, Any]) -> None:
        with self._session() as session:
            self._run(session, run_id).final_metrics = jsonable(metrics, "final_metrics")

    def get_run(self, run_id: str) -> RunRecord:
        """The run, or a StoreError pointing at ``medfed runs list``."""
        with self._session() as session:
            run = self._run(session, run_id)
            return _run_record(run, _round_summaries(session, [run.id]))

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix`` (as shown shortened)."""
        ids: Sequence[str] = []
        if prefix:
            with self._session() as session:
                ids = session.scalars(
                    select(m.Run.id).where(m.Run.id.startswith(prefix.lower(), autoescape=True))
                ).all()
        if prefix in ids:
            return prefix
        if not ids:
            raise no_run(prefix)
        if len(ids) > 1:
            raise StoreError(f"{len(ids)} runs start with {prefix}; give more of the id")
        return ids[0]

    def list_runs(
        self,
        *,
        status: str | None = None,
        strategy: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: str | None = None,
        sort: str = "-created_at",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[RunRecord], int]:
        """One page of runs matching the filters, and how many match in all.

        ``sort`` is a column name, ``-`` first for descending; ``search`` matches name or id.
        """
        query = select(m.Run)
        if status:
            check_choice("status", status, RunStatus)
            query = query.where(m.Run.status == status)
        if strategy:
            query = query.where(m.Run.strategy == strategy)
        if since:
            query = query.where(m.Run.created_at >= since)
        if until:
            query = query.where(m.Run.created_at < until)
        if search:
            needle = search.lower()
            query = query.where(
                or_(
                    func.lower(m.Run.name).contains(needle, autoescape=True),
                    m.Run.id.startswith(needle, autoescape=True),
                )
            )
        with self._session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            page = session.scalars(_sorted(query, sort).limit(limit).offset(offset)).all()
            summaries = _round_summaries(session, [run.id for run in page])
            return [_run_record(run, summaries) for run in page], total


def _sorted(query: Select[Any], sort: str) -> Select[Any]:
    key = sort.removeprefix("-")
    if key not in SORT_KEYS:
        raise StoreError(f"cannot sort runs by {sort!r}; use one of {', '.join(SORT_KEYS)}")
    column = getattr(m.Run, key)
    nulls_last = case((column.is_(None), 1), else_=0)
    value = func.lower(column) if key in TEXT_SORT_KEYS else column  # same order on every DB
    ordered = value.desc() if sort.startswith("-") else value.asc()
    return query.order_by(nulls_last, ordered, m.Run.id)


def _round_summaries(session: Session, run_ids: list[str]) -> dict[str, tuple[int, float | None]]:
    """Per run: rounds recorded and the best global accuracy among them, computed by the
    database (a run's list entry costs the same at round 1 and at round 1,000)."""
    if not run_ids:
        return {}
    accuracy = m.Round.metrics[Metric.ACCURACY.value].as_float()
    rows = session.execute(
        select(m.Round.run_id, func.count(), func.max(accuracy))
        .where(m.Round.run_id.in_(run_ids))
        .group_by(m.Round.run_id)
    )
    return {
        run_id: (int(done), None if best is None or not math.isfinite(best) else float(best))
        for run_id, done, best in rows
    }


def _run_record(run: m.Run, summaries: dict[str, tuple[int, float | None]]) -> RunRecord:
    done, best = summaries.get(run.id, (0, None))
    return from_row(RunRecord, run, rounds_done=done, best_accuracy=best)
