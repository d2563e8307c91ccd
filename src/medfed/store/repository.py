"""The run store: every run's progress, per-hospital results, checkpoints and events."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import date, datetime
from enum import StrEnum
from pathlib import PurePath
from typing import Any, TypeVar

from sqlalchemy import Select, case, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from medfed.config import run_definition
from medfed.errors import StoreError
from medfed.store import models as m
from medfed.store.database import (
    check_schema,
    create_store_engine,
    migrate_schema,
    redact,
    unreachable,
)
from medfed.store.events import EventBus
from medfed.store.passwords import hash_password, verify_password
from medfed.store.records import (
    AuditRecord,
    CheckpointRecord,
    ClientResultRecord,
    EventRecord,
    HospitalRecord,
    RoundRecord,
    RunRecord,
    TemplateRecord,
    UserRecord,
)
from medfed.store.vocabulary import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Metric,
    Mode,
    Phase,
    ResultStatus,
    Role,
    RunStatus,
)

R = TypeVar("R")

MIN_PASSWORD_LENGTH = 8
TEXT_SORT_KEYS = ("name", "status", "strategy")
SORT_KEYS = ("created_at", "started_at", "finished_at", "name", "status", "strategy", "num_rounds")


class RunStore:
    """Repository over the run database (SQLite, MySQL/MariaDB or PostgreSQL by URL).

    Returns plain records; with ``redis_url`` events are also published on Redis so readers
    waiting in :meth:`wait_for_events` wake at once.
    """

    def __init__(self, url: str, *, migrate: bool = True, redis_url: str | None = None):
        """Connect to ``url``; ``migrate`` brings the schema up to date, else it must be."""
        self.url = url
        self.engine = create_store_engine(url)
        try:
            if migrate:
                migrate_schema(self.engine)
            else:
                check_schema(self.engine)
            self.bus = EventBus(redis_url)
        except DBAPIError as exc:
            self.engine.dispose()
            raise unreachable(url, exc) from None
        except StoreError:
            self.engine.dispose()
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"RunStore({redact(self.url)!r})"

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release database connections and the Redis client."""
        self.bus.close()
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One transaction; database failures become StoreErrors naming the URL."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise  # the caller knows which record conflicts
        except (OperationalError, InterfaceError) as exc:
            raise unreachable(self.url, exc) from None
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise StoreError(f"the database at {redact(self.url)} refused: {reason}") from None

    # runs ---------------------------------------------------------------------------------

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
        _check_choice("mode", mode, Mode)
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
        _check_choice("status", status, RunStatus)
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
                raise _no_run(run_id)
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
            raise _no_run(prefix)
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
            _check_choice("status", status, RunStatus)
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

    # rounds, hospitals' results, checkpoints ---------------------------------------------

    def record_round(
        self,
        run_id: str,
        round: int,
        *,
        metrics: dict[str, Any],
        duration_s: float,
        bytes_up: int = 0,
        bytes_down: int = 0,
        train_metrics: dict[str, Any] | None = None,
        evaluate_metrics: dict[str, Any] | None = None,
        epsilon: float | None = None,
        num_clients_ok: int = 0,
        num_clients_failed: int = 0,
    ) -> None:
        """Record a finished round; recording the same round again replaces it."""
        values = {
            "metrics": jsonable(metrics, "metrics"),
            "train_metrics": jsonable(train_metrics, "train_metrics"),
            "evaluate_metrics": jsonable(evaluate_metrics, "evaluate_metrics"),
            "duration_s": float(duration_s),
            "bytes_up": int(bytes_up),
            "bytes_down": int(bytes_down),
            "epsilon": _finite_or_none(epsilon),
            "num_clients_ok": int(num_clients_ok),
            "num_clients_failed": int(num_clients_failed),
            "finished_at": m.utcnow(),
        }
        with self._writing(run_id) as session:
            existing = session.scalar(
                select(m.Round).where(m.Round.run_id == run_id, m.Round.round == round)
            )
            if existing is None:
                session.add(m.Round(run_id=run_id, round=round, **values))
            else:
                for key, value in values.items():
                    setattr(existing, key, value)

    def record_client_result(
        self,
        run_id: str,
        round: int,
        *,
        hospital: str,
        phase: str,
        status: str,
        num_examples: int = 0,
        metrics: dict[str, Any] | None = None,
        duration_s: float | None = None,
        bytes_up: int = 0,
        bytes_down: int = 0,
        epsilon: float | None = None,
        error: str | None = None,
    ) -> None:
        """Record one hospital's reply (or failure) in one phase of a round."""
        _check_choice("phase", phase, Phase)
        _check_choice("status", status, ResultStatus)
        result = m.ClientResult(
            run_id=run_id,
            round=round,
            hospital=str(hospital),
            phase=phase,
            status=status,
            num_examples=int(num_examples),
            metrics=jsonable(metrics, "metrics"),
            duration_s=None if duration_s is None else float(duration_s),
            bytes_up=int(bytes_up),
            bytes_down=int(bytes_down),
            epsilon=_finite_or_none(epsilon),
            error=error,
        )
        with self._writing(run_id) as session:
            session.add(result)

    def record_checkpoint(
        self,
        run_id: str,
        round: int,
        path: str,
        *,
        metric_name: str,
        metric_value: float | None,
        size_bytes: int,
    ) -> None:
        """Record a saved model artifact (see :class:`medfed.store.ArtifactStore`)."""
        checkpoint = m.Checkpoint(
            run_id=run_id,
            round=round,
            path=str(path),
            metric_name=metric_name,
            metric_value=_finite_or_none(metric_value),
            size_bytes=int(size_bytes),
        )
        with self._writing(run_id) as session:
            session.add(checkpoint)

    def rounds(self, run_id: str) -> list[RoundRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(m.Round).where(m.Round.run_id == run_id).order_by(m.Round.round)
            ).all()
            return [_from_row(RoundRecord, row) for row in rows]

    def client_results(self, run_id: str, round: int | None = None) -> list[ClientResultRecord]:
        """Hospitals' results of a run (of one round when given), by round, then arrival."""
        query = select(m.ClientResult).where(m.ClientResult.run_id == run_id)
        if round is not None:
            query = query.where(m.ClientResult.round == round)
        with self._session() as session:
            rows = session.scalars(query.order_by(m.ClientResult.round, m.ClientResult.id)).all()
            return [_from_row(ClientResultRecord, row) for row in rows]

    def checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        with self._session() as session:
            rows = session.scalars(
                select(m.Checkpoint)
                .where(m.Checkpoint.run_id == run_id)
                .order_by(m.Checkpoint.round, m.Checkpoint.id)
            ).all()
            return [_from_row(CheckpointRecord, row) for row in rows]

    def latest_checkpoint(self, run_id: str) -> CheckpointRecord | None:
        """The checkpoint of the highest round (the newest of them), or None."""
        with self._session() as session:
            row = session.scalar(
                select(m.Checkpoint)
                .where(m.Checkpoint.run_id == run_id)
                .order_by(m.Checkpoint.round.desc(), m.Checkpoint.id.desc())
                .limit(1)
            )
            return None if row is None else _from_row(CheckpointRecord, row)

    def last_completed_round(self, run_id: str) -> int:
        """The highest recorded round of the run, 0 when none."""
        with self._session() as session:
            return session.scalar(
                select(func.coalesce(func.max(m.Round.round), 0)).where(m.Round.run_id == run_id)
            )

    def delete_rounds_after(self, run_id: str, round: int) -> None:
        """Forget rounds, results and checkpoints past ``round`` (a resumed run redoes them)."""
        with self._session() as session:
            for table in (m.Round, m.ClientResult, m.Checkpoint):
                session.execute(delete(table).where(table.run_id == run_id, table.round > round))

    # events -------------------------------------------------------------------------------

    def publish(self, run_id: str, type: str, payload: dict[str, Any]) -> int:
        """Append an event to the run's history (and Redis when configured); its id."""
        event = m.Event(run_id=run_id, type=type, payload=jsonable(payload, "payload"))
        with self._writing(run_id) as session:
            session.add(event)
            session.flush()
            record = _from_row(EventRecord, event)
        self.bus.publish(record)
        return record.id

    def events(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[EventRecord]:
        """The run's events with id above ``after_id``, oldest first."""
        with self._session() as session:
            rows = session.scalars(
                select(m.Event)
                .where(m.Event.run_id == run_id, m.Event.id > after_id)
                .order_by(m.Event.id)
                .limit(limit)
            ).all()
            return [_from_row(EventRecord, row) for row in rows]

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

    # users, audit log, templates, hospitals -----------------------------------------------

    def add_user(self, name: str, password: str, role: str) -> UserRecord:
        """Create a user with a scrypt-hashed password."""
        _check_choice("role", role, Role)
        if not name.strip():
            raise StoreError("a user name cannot be empty")
        _check_password(password)
        user = m.User(name=name, password_hash=hash_password(password), role=role)
        try:
            with self._session() as session:
                session.add(user)
                session.flush()
                return _from_row(UserRecord, user)
        except IntegrityError:
            raise StoreError(f"user {name!r} already exists; pick another name") from None

    def verify_user(self, name: str, password: str) -> UserRecord | None:
        """The user when the password is right, else None (same time either way)."""
        with self._session() as session:
            user = session.scalar(select(m.User).where(m.User.name == name))
        matches = verify_password(password, user.password_hash if user else None)
        return _from_row(UserRecord, user) if matches and user is not None else None

    def get_user(self, name: str) -> UserRecord | None:
        with self._session() as session:
            user = session.scalar(select(m.User).where(m.User.name == name))
            return None if user is None else _from_row(UserRecord, user)

    def set_password(self, name: str, password: str) -> UserRecord:
        """Give ``name`` a new password; every login token issued before stops working."""
        _check_password(password)
        with self._session() as session:
            user = session.scalar(select(m.User).where(m.User.name == name))
            if user is None:
                raise StoreError(f"no user {name!r}; `medfed users list` shows the users")
            user.password_hash = hash_password(password)
            user.token_version = (user.token_version or 0) + 1
            session.flush()
            return _from_row(UserRecord, user)

    def revoke_token(self, token_id: str, user: str, expires_at: datetime) -> None:
        """Refuse a login token from now on (until ``expires_at``, when it would have expired
        anyway); tokens already past their expiry are forgotten here."""
        with self._session() as session:
            session.execute(delete(m.RevokedToken).where(m.RevokedToken.expires_at < m.utcnow()))
        try:
            with self._session() as session:
                session.add(m.RevokedToken(token_id=token_id, user=user, expires_at=expires_at))
        except IntegrityError:
            pass  # revoked already

    def session_user(self, name: str, token_id: str) -> tuple[UserRecord | None, bool]:
        """The user a login token names and whether that token was ended by a logout, in
        one round trip (asked on every API request)."""
        revoked = select(m.RevokedToken.token_id).where(m.RevokedToken.token_id == token_id)
        with self._session() as session:
            row = session.execute(
                select(m.User, revoked.exists()).where(m.User.name == name)
            ).first()
            if row is None:
                return None, self.token_revoked(token_id)
            return _from_row(UserRecord, row[0]), bool(row[1])

    def token_revoked(self, token_id: str) -> bool:
        """Whether the login token ``token_id`` was ended by a logout."""
        with self._session() as session:
            return session.get(m.RevokedToken, token_id) is not None

    def list_users(self) -> list[UserRecord]:
        with self._session() as session:
            return [
                _from_row(UserRecord, u)
                for u in session.scalars(select(m.User).order_by(m.User.name))
            ]

    def audit(
        self,
        user: str | None,
        action: str,
        target: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append who did what to which target to the audit log."""
        entry = m.AuditEntry(
            user=user, action=action, target=target, detail=jsonable(detail, "detail")
        )
        with self._session() as session:
            session.add(entry)

    def audit_log(self, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """Audit entries, newest first."""
        with self._session() as session:
            rows = session.scalars(
                select(m.AuditEntry)
                .order_by(m.AuditEntry.at.desc(), m.AuditEntry.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return [_from_row(AuditRecord, row) for row in rows]

    def count_audit(self) -> int:
        """How many entries the audit log holds."""
        with self._session() as session:
            return session.scalar(select(func.count()).select_from(m.AuditEntry)) or 0

    def save_template(
        self, name: str, config: dict[str, Any], created_by: str | None = None
    ) -> TemplateRecord:
        """Save a named run configuration, replacing one of the same name."""
        config = jsonable(config, "config")
        with self._session() as session:
            template = session.scalar(select(m.ConfigTemplate).where(m.ConfigTemplate.name == name))
            if template is None:
                template = m.ConfigTemplate(name=name, config=config, created_by=created_by)
                session.add(template)
            else:
                template.config = config
                template.created_by = created_by
            session.flush()
            return _from_row(TemplateRecord, template)

    def list_templates(self) -> list[TemplateRecord]:
        with self._session() as session:
            rows = session.scalars(select(m.ConfigTemplate).order_by(m.ConfigTemplate.name))
            return [_from_row(TemplateRecord, row) for row in rows]

    def get_template(self, name: str) -> TemplateRecord:
        with self._session() as session:
            row = session.scalar(select(m.ConfigTemplate).where(m.ConfigTemplate.name == name))
            if row is None:
                names = session.scalars(select(m.ConfigTemplate.name)).all()
                known = ", ".join(sorted(names)) or "none yet"
                raise StoreError(f"no config template {name!r}; saved templates: {known}")
            return _from_row(TemplateRecord, row)

    def touch_hospital(self, name: str, info: dict[str, Any] | None = None) -> None:
        """Mark a hospital as seen now; ``info`` (when given) replaces what was known."""
        name = str(name)
        with self._session() as session:
            hospital = session.scalar(select(m.Hospital).where(m.Hospital.name == name))
            if hospital is None:
                session.add(
                    m.Hospital(name=name, last_seen=m.utcnow(), info=jsonable(info, "info"))
                )
                return
            hospital.last_seen = m.utcnow()
            if info is not None:
                hospital.info = jsonable(info, "info")

    def register_hospital(
        self, name: str, public_key: str, fingerprint: str, *, registered_by: str | None = None
    ) -> HospitalRecord:
        """Register ``name`` with its public key; a removed hospital's name can be reused."""
        with self._session() as session:
            hospital = session.scalar(select(m.Hospital).where(m.Hospital.name == name))
            if hospital is not None and hospital.public_key and hospital.removed_at is None:
                raise StoreError(
                    f"hospital {name!r} is already registered (key {hospital.fingerprint}): "
                    "remove it first to give it a new key"
                )
            if hospital is None:
                hospital = m.Hospital(name=name)
                session.add(hospital)
            hospital.public_key = public_key
            hospital.fingerprint = fingerprint
            hospital.node_id = None
            hospital.registered_at = m.utcnow()
            hospital.registered_by = registered_by
            hospital.removed_at = None
        return self.get_hospital(name)

    def set_hospital_node(self, name: str, node_id: int | None) -> None:
        """The Flower node id the SuperLink gave the hospital's key (signed 64-bit)."""
        with self._session() as session:
            self._hospital(session, name).node_id = node_id

    def remove_hospital(self, name: str) -> HospitalRecord:
        """Withdraw a hospital's registration; its results stay in the history."""
        with self._session() as session:
            hospital = self._hospital(session, name)
            if not hospital.public_key or hospital.removed_at is not None:
                raise StoreError(f"hospital {name!r} is not registered: nothing to remove")
            hospital.removed_at = m.utcnow()
            hospital.node_id = None
        return self.get_hospital(name)

    def get_hospital(self, name: str) -> HospitalRecord:
        """One hospital, with the runs it took part in."""
        for hospital in self.list_hospitals():
            if hospital.name == name:
                return hospital
        raise _no_hospital(name)

    def hospital_by_node(self, node_id: int) -> HospitalRecord | None:
        """The registered hospital holding Flower node ``node_id``, if any."""
        with self._session() as session:
            row = session.scalar(
                select(m.Hospital).where(
                    m.Hospital.node_id == node_id, m.Hospital.removed_at.is_(None)
                )
            )
            return None if row is None else _from_row(HospitalRecord, row, run_ids=())

    def list_hospitals(self) -> list[HospitalRecord]:
        """Known hospitals, each with the runs it sent results to (oldest run first)."""
        joined = (
            select(m.ClientResult.hospital, m.ClientResult.run_id)
            .join(m.Run, m.Run.id == m.ClientResult.run_id)
            .group_by(m.ClientResult.hospital, m.ClientResult.run_id, m.Run.created_at)
            .order_by(m.Run.created_at, m.ClientResult.run_id)
        )
        with self._session() as session:
            run_ids: dict[str, list[str]] = {}
            for hospital, run_id in session.execute(joined):
                run_ids.setdefault(hospital, []).append(run_id)
            hospitals = session.scalars(select(m.Hospital).order_by(m.Hospital.name)).all()
            return [
                _from_row(HospitalRecord, h, run_ids=tuple(run_ids.get(h.name, ())))
                for h in hospitals
            ]

    @staticmethod
    def _hospital(session: Session, name: str) -> m.Hospital:
        row = session.scalar(select(m.Hospital).where(m.Hospital.name == name))
        if row is None:
            raise _no_hospital(name)
        return row

    # helpers ------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, run_id: str) -> Iterator[Session]:
        """A transaction adding rows of a run; an unknown run is a clear StoreError."""
        try:
            with self._session() as session:
                yield session
        except IntegrityError:
            if not self._run_exists(run_id):
                raise _no_run(run_id) from None
            raise

    def _run_exists(self, run_id: str) -> bool:
        with self._session() as session:
            return session.get(m.Run, run_id) is not None

    @staticmethod
    def _run(session: Session, run_id: str) -> m.Run:
        run = session.get(m.Run, run_id)
        if run is None:
            raise _no_run(run_id)
        return run


def _no_hospital(name: str) -> StoreError:
    return StoreError(f"no hospital {name!r}; see `medfed hospital list`")


def _no_run(run_id: str) -> StoreError:
    return StoreError(f"no run {run_id}; `medfed runs list` shows the runs")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StoreError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def _check_choice(key: str, value: str, allowed: type[StrEnum]) -> None:
    if value not in tuple(allowed):
        raise StoreError(f"{key} {value!r} is not one of {', '.join(allowed)}")


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


def jsonable(value: Any, key: str) -> Any:
    """``value`` as plain JSON: numpy scalars/arrays become numbers/lists, NaN becomes None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return jsonable(value.tolist(), key)
    raise StoreError(f"{key}: a {type(value).__name__} cannot be stored as JSON")


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _from_row(cls: type[R], row: object, **extra: Any) -> R:
    """A record from an ORM row: each field read from the row's attribute of the same name."""
    names = [f.name for f in fields(cls) if f.name not in extra]  # type: ignore[arg-type]
    return cls(**{name: getattr(row, name) for name in names}, **extra)


def _run_record(run: m.Run, summaries: dict[str, tuple[int, float | None]]) -> RunRecord:
    done, best = summaries.get(run.id, (0, None))
    return _from_row(RunRecord, run, rounds_done=done, best_accuracy=best)
