"""What every part of the run store shares: the engine, its sessions and the event bus,
and the checks and conversions the tables' methods use."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import date, datetime
from enum import StrEnum
from pathlib import PurePath
from typing import Any, Self, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

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

R = TypeVar("R")


class StoreBase:
    """One engine and session factory over the run database, and the event bus."""

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

    def __enter__(self) -> Self:
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

    @contextmanager
    def _writing(self, run_id: str) -> Iterator[Session]:
        """A transaction adding rows of a run; an unknown run is a clear StoreError."""
        try:
            with self._session() as session:
                yield session
        except IntegrityError:
            if not self._run_exists(run_id):
                raise no_run(run_id) from None
            raise

    def _run_exists(self, run_id: str) -> bool:
        with self._session() as session:
            return session.get(m.Run, run_id) is not None

    @staticmethod
    def _run(session: Session, run_id: str) -> m.Run:
        run = session.get(m.Run, run_id)
        if run is None:
            raise no_run(run_id)
        return run


def no_run(run_id: str) -> StoreError:
    return StoreError(f"no run {run_id}; `medfed runs list` shows the runs")


def check_choice(key: str, value: str, allowed: type[StrEnum]) -> None:
    if value not in tuple(allowed):
        raise StoreError(f"{key} {value!r} is not one of {', '.join(allowed)}")


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


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def from_row(cls: type[R], row: object, **extra: Any) -> R:
    """A record from an ORM row: each field read from the row's attribute of the same name."""
    names = [f.name for f in fields(cls) if f.name not in extra]  # type: ignore[arg-type]
    return cls(**{name: getattr(row, name) for name in names}, **extra)
