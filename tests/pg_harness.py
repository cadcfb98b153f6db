"""PostgreSQL for tests: one fresh database per test session, one fresh schema per test.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth, user ``postgres`` or ``root``,
database ``test``), or the admin URL in ``PAYOUTS_TEST_POSTGRES_URL``. The session's
database (``payouts_test_<pid>_<random>``) is dropped at the end; each test gets its own
schema in it, selected through ``search_path`` in the URL, so tests never see each other's
rows. When no server answers, PostgreSQL cases are skipped, or fail when the ``CI``
environment variable is set.

The fixtures are registered for every test module by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

BACKENDS = ["sqlite", "postgresql"]


def postgres_admin_url() -> str:
    """An admin URL of a reachable PostgreSQL server; skip (or fail under CI) without one."""
    override = os.environ.get("PAYOUTS_TEST_POSTGRES_URL")
    users = ("postgres", "root")
    candidates = [override] if override else [f"postgresql+psycopg://{user}@127.0.0.1:5432/test" for user in users]
    errors = []
    for url in candidates:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return url
        except OperationalError as exc:
            errors.append(f"{engine.url.render_as_string(hide_password=True)}: {str(exc.orig).strip().splitlines()[0]}")
        finally:
            engine.dispose()
    message = "PostgreSQL is not reachable (" + "; ".join(errors) + "); set PAYOUTS_TEST_POSTGRES_URL to an admin URL"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set and {message}", pytrace=False)
    pytest.skip(f"PostgreSQL cases skipped: {message}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Engine]:
    """A fresh database for this test session (AUTOCOMMIT engine on it); dropped at the end."""
    admin_url = postgres_admin_url()
    name = f"payouts_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database = create_engine(admin.url.set(database=name), isolation_level="AUTOCOMMIT")
    try:
        yield database
    finally:
        database.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fresh_schema_url(database: Engine) -> str:
    """A DATABASE_URL of a new, empty schema in the session's database."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with database.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    base = database.url.set(drivername="postgresql", query={"options": f"-csearch_path={schema}"})
    return base.render_as_string(hide_password=False)


def empty_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DATABASE_URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'payouts.db'}"
    return fresh_schema_url(request.getfixturevalue("postgres_database"))


@pytest.fixture
def postgres_url(postgres_database: Engine) -> str:
    """A DATABASE_URL of a fresh PostgreSQL schema (for tests that need PostgreSQL itself)."""
    return fresh_schema_url(postgres_database)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The app DB of an integration test, once on SQLite and once on PostgreSQL."""
    return empty_database_url(request.param, request, tmp_path)
