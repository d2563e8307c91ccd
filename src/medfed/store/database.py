"""Engines, migrations and database error messages of the run store."""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from medfed.errors import StoreError
from medfed.store.home import make_private_dir, tighten

MIGRATIONS = Path(__file__).parent / "migrations"
URL_EXAMPLES = (
    "sqlite:///path/to/medfed.db, mysql+pymysql://user:password@host:3306/medfed "
    "or postgresql+psycopg://user@host:5432/medfed"
)
URL_SETTING = "database.url in the config, or --db"
DRIVER_EXTRAS = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres"}
MIGRATION_LOCK = "medfed_migrate"
MIGRATION_LOCK_ID = 0x6D6564666564  # "medfed" as the PostgreSQL advisory lock key
_MIGRATING = threading.Lock()


def redact(url: str) -> str:
    """The URL with its password hidden, safe to show in messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL, or a StoreError saying what a valid one looks like."""
    try:
        return make_url(url)
    except ArgumentError:
        raise StoreError(
            f"database URL {redact(url)!r} is not valid; use e.g. {URL_EXAMPLES} ({URL_SETTING})"
        ) from None


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder, WAL and foreign keys."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        return create_engine(parsed, pool_pre_ping=True, pool_recycle=3600)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        extra = DRIVER_EXTRAS.get(parsed.get_backend_name())
        hint = f"install it with pip install 'medfed[{extra}]'" if extra else f"use {URL_EXAMPLES}"
        raise StoreError(
            f"no database driver for {redact(url)} ({exc}); {hint} ({URL_SETTING})"
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:"):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        _private_file(Path(database).expanduser())
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if database not in ("", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its folder, 0700 when made here) with mode 0600 before
    SQLite opens it, or take group and other access from an existing one. SQLite gives its
    -wal and -shm files the database file's mode."""
    make_private_dir(path.parent)
    try:
        # O_EXCL: an existing file is never opened here, since closing a descriptor of it
        # would drop the SQLite locks this process holds on it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        tighten(path)
    except OSError:
        pass  # SQLite reports what is wrong with the path when it opens it


def unreachable(url: str, exc: DBAPIError) -> StoreError:
    """A StoreError for a database that refused or dropped the connection."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else exc.__class__.__name__
    return StoreError(
        f"cannot use the database at {redact(url)}: {reason}. Check that the server is "
        f"running, the database exists and the user may use it, or fix the URL ({URL_SETTING})"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """An in-code Alembic config pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate_schema(engine: Engine) -> None:
    """Bring the schema to the latest revision; safe when several processes start at once.

    Alembic's ``context`` is global to the process, hence the thread lock as well.
    """
    with _MIGRATING, _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        command.upgrade(alembic_config(connection), "head")


def check_schema(engine: Engine) -> None:
    """A StoreError unless the database schema is at the latest revision."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise StoreError(
            f"the database at {engine.url.render_as_string(hide_password=True)} has schema "
            f"revision {current or 'none'}, medfed needs {head}: bring it up to date with "
            "`medfed runs list --db URL` (which migrates) or RunStore(url, migrate=True)"
        )


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations: a file lock for SQLite, a named lock for MySQL/MariaDB.

    PostgreSQL takes a transaction-scoped advisory lock inside :func:`migrate_schema`.
    """
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database not in ("", ":memory:"):
        # A separate lock file: opening and closing the database file itself would drop
        # SQLite's own POSIX locks in this process, and another process could then delete
        # the write-ahead log under a live connection.
        lock = os.open(f"{database}.migrate-lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(lock, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    if engine.dialect.name in ("mysql", "mariadb"):
        with engine.connect() as connection:
            connection.execute(text("SELECT GET_LOCK(:name, 120)"), {"name": MIGRATION_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK})
        return
    yield
