"""A database of its own on the MariaDB or PostgreSQL test server, for tests of those back ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BACKENDS = {"mysql": "MEDFED_TEST_MYSQL_URL", "postgresql": "MEDFED_TEST_POSTGRES_URL"}


@contextmanager
def empty_database(backend: str, prefix: str, what: str) -> Iterator[str]:
    """The URL of a new database (MariaDB) or schema (PostgreSQL) named ``prefix_<random>`` on
    the server ``BACKENDS[backend]`` names, dropped on exit; the test is skipped, saying that
    ``what`` is not tested, when that variable is unset."""
    server = os.environ.get(BACKENDS[backend])
    if not server:
        pytest.skip(f"{what} not tested: set {BACKENDS[backend]}")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server)
    if backend == "mysql":
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name}"
        url = make_url(server).set(database=name)
    else:
        create, drop = f"CREATE SCHEMA {name}", f"DROP SCHEMA IF EXISTS {name} CASCADE"
        url = make_url(server).update_query_dict({"options": f"-csearch_path={name}"})
    with admin.begin() as connection:
        connection.execute(text(create))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(drop))
        admin.dispose()
