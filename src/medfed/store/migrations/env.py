"""Alembic environment of the run store.

:class:`medfed.store.RunStore` runs the migrations with an open connection in
``config.attributes["connection"]``; without one, ``sqlalchemy.url`` is used (e.g. for
``alembic revision --autogenerate`` during development).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from medfed.store.models import Base

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url", ""))
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()


run_migrations_online()
