"""Database fixtures shared by the store tests (and anyone else's): `db_url`.

`db_url` is parametrized: "sqlite" always (a fresh file under tmp_path), and "postgres" when
CODA_SYNC_TEST_PG_URL names a server (e.g. postgresql+asyncpg://postgres@127.0.0.1:5433/postgres);
otherwise the postgres cases are skipped with the reason. Each PostgreSQL test gets its own
freshly created database, dropped afterwards, so tests never see each other's tables.

`pg_url` is the same for PostgreSQL-only tests (skipped without a server).
Use them from a test module with:

    from tests.integration.db_fixtures import db_url, pg_url  # noqa: F401
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

PG_URL_ENV = "CODA_SYNC_TEST_PG_URL"
PG_SKIP_REASON = (
    f"PostgreSQL tests need {PG_URL_ENV}, e.g. "
    "postgresql+asyncpg://postgres@127.0.0.1:5433/postgres"
)


def pg_admin_url() -> str | None:
    """The configured PostgreSQL server URL (SQLAlchemy form), or None."""
    return os.environ.get(PG_URL_ENV) or None


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    # A private event loop in a worker thread: works whether or not a loop runs here.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_pg_database(admin_url: str) -> str:
    """Create an empty uniquely named database; returns its SQLAlchemy URL."""
    name = f"coda_sync_test_{uuid.uuid4().hex[:12]}"
    _run(_admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    _run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty database: SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "coda-sync.db")
        return
    admin = pg_admin_url()
    if admin is None:
        pytest.skip(PG_SKIP_REASON)
    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of a fresh, empty PostgreSQL database (skips without CODA_SYNC_TEST_PG_URL)."""
    admin = pg_admin_url()
    if admin is None:
        pytest.skip(PG_SKIP_REASON)
    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)
