"""The database connection: engine, dialect settings, shared column types, migrations.

Owns `make_engine` (one `AsyncEngine` per process, tuned per dialect), `open_store` (engine +
Alembic upgrade to head + the `Store` handle the rest of the daemon holds), the column types
shared by the state tables and the bound tables (`UTCDateTime`, `JSONType`), and `wrap_errors`,
the one place where `sqlalchemy.exc` errors become `StoreError`. Must not import httpx or
anything from `daemon.coda`.

SQLite transactions. The stdlib driver's legacy mode only emits BEGIN before DML, so reads are
not repeatable, DDL autocommits and a released SAVEPOINT commits. We switch that off and emit
BEGIN ourselves (the recipe from SQLAlchemy's SQLite docs):

    store.engine / store.connect()   BEGIN            (deferred: reads; a snapshot in WAL)
    store.begin()                    BEGIN IMMEDIATE  (takes the write lock up front)

A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
connection committed in between (WAL cannot upgrade a stale snapshot, busy_timeout does not
help); BEGIN IMMEDIATE waits up to busy_timeout for the write lock instead. So every
transaction that may write goes through `store.begin()`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from daemon.errors import StoreError

if TYPE_CHECKING:
    from daemon.config import DatabaseSettings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 5
PG_POOL_RECYCLE_SECONDS = 1800
PG_CONNECT_TIMEOUT_SECONDS = 10.0
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "coda_sync_alembic_version"
"""NB: not `alembic_version`: the state lives in the application's database, and the
application may well run its own Alembic history there."""

IN_CHUNK = 500
"""Keys per IN (...) list: well under SQLite's bound-variable limit on every version."""
WRITE_CHUNK = 1000
"""Rows per executemany() of a bulk write."""

_BEGIN_OPTION = "coda_sync_sqlite_begin"
_MAX_MESSAGE = 256

P = ParamSpec("P")
T = TypeVar("T")


# --------------------------------------------------------------------------- column types


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as an aware UTC `datetime` on every dialect.

    Naive input is taken to be UTC. SQLite stores the naive UTC wall time (it has no zones and
    SQLAlchemy's format sorts as text); PostgreSQL stores TIMESTAMPTZ. With `timezone=False`
    (an application table declared `timestamp without time zone` on PostgreSQL) naive UTC is
    stored there too.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__(timezone=timezone)
        self.timezone = timezone  # NB: an attribute, so it is part of the type's cache key

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite" or not self.timezone:
            return aware.replace(tzinfo=None)
        return aware

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> sa.types.TypeEngine[Any]:
    """JSONB on PostgreSQL, JSON text on SQLite; Python None is SQL NULL (not JSON null)."""
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


JSONType = json_type()


# --------------------------------------------------------------------------- errors


def describe(error: BaseException) -> str:
    """A short message for a database error: the driver's text, without SQL or parameters."""
    if isinstance(error, exc.DBAPIError) and error.orig is not None:
        inner: BaseException = error.orig
    else:
        inner = error
    text = " ".join(str(inner).split()) or type(inner).__name__
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return f"{type(inner).__name__}: {text}"


def store_error(operation: str, error: BaseException) -> StoreError:
    return StoreError(f"{operation} failed: {describe(error)}")


def wrap_errors(operation: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate a coroutine function so SQLAlchemy errors leave it as `StoreError`."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(*args, **kwargs)
            except exc.SQLAlchemyError as error:
                raise store_error(operation, error) from error

        return wrapper

    return decorate


# --------------------------------------------------------------------------- SQL helpers


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """`items` in slices of at most `size` (for IN lists and executemany batches)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT that has `.on_conflict_do_update` on the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --------------------------------------------------------------------------- engine


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other dialects and in-memory databases."""
    parsed = make_url(url)
    if not parsed.get_backend_name() == "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching a new database to WAL may wait for other openers.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def make_engine(url: str) -> AsyncEngine:
    """The process's engine for `url` (sqlite+aiosqlite or postgresql+asyncpg)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_async_engine(url)
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_recycle=PG_POOL_RECYCLE_SECONDS,
            connect_args={
                "timeout": PG_CONNECT_TIMEOUT_SECONDS,
                "server_settings": {"application_name": "coda-sync"},
            },
        )
    raise StoreError(
        f"unsupported database {backend!r}: use sqlite+aiosqlite or postgresql+asyncpg"
    )


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks (same on every host)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --------------------------------------------------------------------------- migrations


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Two instances starting together: the second waits, then finds head and does nothing.
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": advisory_key("coda-sync:migrations")},
        )
    command.upgrade(_alembic_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


# --------------------------------------------------------------------------- the store


@dataclass(eq=False)
class Store:
    """The open database: one engine per process, plus how to start transactions on it."""

    url: str
    engine: AsyncEngine
    """Reads; on SQLite its transactions start with a deferred BEGIN."""
    sessionmaker: async_sessionmaker[AsyncSession]
    """ORM sessions (expire_on_commit=False), on the write engine: BEGIN IMMEDIATE on SQLite."""
    _write_engine: AsyncEngine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def sqlite_path(self) -> Path | None:
        return sqlite_path(self.url)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commits on success.

        SQLAlchemy errors raised inside, or by the commit, leave as `StoreError`.
        """
        try:
            async with self._write_engine.begin() as conn:
                yield conn
        except exc.SQLAlchemyError as error:
            raise store_error("transaction", error) from error

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading (deferred BEGIN on first use; rolled back on exit)."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except exc.SQLAlchemyError as error:
            raise store_error("read", error) from error

    async def migrate(self, revision: str = "head") -> None:
        """Bring the state tables to `revision` (idempotent)."""
        try:
            async with self._write_engine.begin() as conn:
                await conn.run_sync(_upgrade, revision)
        except exc.SQLAlchemyError as error:
            raise store_error("database migration", error) from error

    async def downgrade(self, revision: str) -> None:
        """Revert the state tables to `revision` ("base" drops them); for tests and operators."""
        try:
            async with self._write_engine.begin() as conn:
                await conn.run_sync(_downgrade, revision)
        except exc.SQLAlchemyError as error:
            raise store_error("database downgrade", error) from error

    async def current_revision(self) -> str | None:
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(_current)
        except exc.SQLAlchemyError as error:
            raise store_error("reading the migration revision", error) from error

    async def close(self) -> None:
        """Close every pooled connection (the engine cannot be used afterwards)."""
        try:
            await self.engine.dispose()
        except exc.SQLAlchemyError as error:
            raise store_error("closing the database", error) from error


def store_from_engine(url: str, engine: AsyncEngine) -> Store:
    write_engine = engine
    if engine.dialect.name == "sqlite":
        write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    return Store(
        url=url,
        engine=engine,
        sessionmaker=async_sessionmaker(write_engine, expire_on_commit=False),
        _write_engine=write_engine,
    )


async def open_store(settings_database: DatabaseSettings | str, *, migrate: bool = True) -> Store:
    """Create the engine, check the database answers, upgrade the state tables to head."""
    url = settings_database if isinstance(settings_database, str) else settings_database.url
    where = f"connecting to {make_url(url).render_as_string()}"  # password hidden
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        # SQLite creates the file, not its directory. Checked here also because a failed
        # aiosqlite connect leaves its worker thread completing a future after we moved on.
        raise StoreError(f"{where} failed: directory {path.parent} does not exist")
    store = store_from_engine(url, make_engine(url))
    try:
        try:
            async with store.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except exc.SQLAlchemyError as error:
            raise store_error(where, error) from error
        except OSError as error:  # asyncpg raises some connect errors unwrapped
            raise StoreError(f"{where} failed: {error}") from error
        if migrate:
            await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store
