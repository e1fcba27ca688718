"""Only one process syncs a binding at a time.

SQLite: an exclusive, non-blocking `flock` on `<database>.lock`, held for the life of the
process. The kernel drops it when the process dies in any way (SIGKILL included), so there is
no stale lock to clean up; the file itself stays and holds the last holder's pid for the
message. In-memory databases need no lock (no other process can see them).

PostgreSQL: `PgLeader`, a session-level advisory lock per binding, taken on a DEDICATED
connection (never one from the work pool, which would hand the lock back with the connection).
Whoever holds the lock is the leader for that binding. The lock lives exactly as long as that
connection, so the leader must `check()` it before each cycle and before each write phase:

    leader A  try_acquire -> True   check ok ... check ok | connection lost: check -> False,
                                                          | A stops writing AT ONCE
    leader B  try_acquire -> False  ...  False ...        | server ends A's session (keepalive)
                                                          | try_acquire -> True

The server only notices a silently dead client through TCP keepalives, which we set on the
session from `lease_seconds`, so a vanished leader is replaced within roughly that time.
Must not import httpx.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

import anyio
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from daemon.errors import LockHeldError, StoreError
from daemon.store.db import advisory_key, describe, sqlite_path

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(db_path)}.lock")


class LockHandle:
    """A held SQLite process lock; `close()` releases it (idempotent)."""

    def __init__(self, path: Path | None, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    release = close

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def acquire_sqlite_lock(db_path: str | os.PathLike[str] | None) -> LockHandle:
    """Lock `<db_path>.lock` or raise LockHeldError; None or ":memory:" -> a no-op handle."""
    if db_path is None or os.fspath(db_path) in ("", ":memory:"):
        return LockHandle(None, None)
    path = lock_path_for(db_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StoreError(f"cannot open lock file {path}: {error.strerror}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        who = f"pid {holder}" if holder else "pid unknown"
        raise LockHeldError(f"another coda-sync process ({who}) holds {path}") from None
    except OSError as error:
        os.close(fd)
        raise StoreError(f"cannot lock {path}: {error.strerror}") from error
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        logger.warning("could not write our pid into %s", path)
    return LockHandle(path, fd)


def acquire_lock_for_url(url: str) -> LockHandle:
    """The SQLite lock for a database URL; a no-op handle for PostgreSQL and :memory:."""
    return acquire_sqlite_lock(sqlite_path(url))


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class PgLeader:
    """Leadership of one binding among instances sharing a PostgreSQL database."""

    def __init__(
        self,
        url: str,
        binding: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        check_timeout_seconds: float | None = None,
    ) -> None:
        self.binding = binding
        self.key = advisory_key(f"coda-sync:{binding}")
        self.check_timeout_seconds = (
            check_timeout_seconds
            if check_timeout_seconds is not None
            else max(1.0, min(5.0, lease_seconds / 3))
        )
        idle = max(1, int(lease_seconds / 3))
        interval = max(1, int(lease_seconds / 9))
        self._engine: AsyncEngine = create_async_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "timeout": self.check_timeout_seconds * 2,
                "server_settings": {
                    "application_name": f"coda-sync leader {binding}"[:63],
                    "tcp_keepalives_idle": str(idle),
                    "tcp_keepalives_interval": str(interval),
                    "tcp_keepalives_count": "3",
                    # keepalives do not apply while a reply is unacknowledged: bound that too
                    "tcp_user_timeout": str(int(lease_seconds * 2000 / 3)),
                },
            },
        )
        self._conn: AsyncConnection | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """True while we believe we hold the lock (confirm with `check`)."""
        return self._held

    async def try_acquire(self) -> bool:
        """Take the lock if free; True when we hold it (also when we already did)."""
        if self._held and self._conn is not None:
            return True
        try:
            if self._conn is None:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            stmt = sa.text("SELECT pg_try_advisory_lock(:key)")
            with anyio.fail_after(self.check_timeout_seconds * 2):
                got = (await self._conn.execute(stmt, {"key": self.key})).scalar_one()
        except (exc.SQLAlchemyError, OSError, TimeoutError) as error:
            await self._drop_connection()
            raise StoreError(
                f"taking the leader lock of binding {self.binding!r} failed: {describe(error)}"
            ) from error
        self._held = bool(got)
        if self._held:
            logger.info("leader of binding %s", self.binding)
        return self._held

    async def check(self) -> bool:
        """True while the lock's connection answers; False = leadership lost, stop writing."""
        if not self._held or self._conn is None:
            return False
        try:
            with anyio.fail_after(self.check_timeout_seconds):
                await self._conn.execute(sa.text("SELECT 1"))
        except (exc.SQLAlchemyError, OSError, TimeoutError) as error:
            logger.warning("lost leadership of binding %s: %s", self.binding, describe(error))
            self._held = False
            await self._drop_connection()
            return False
        return True

    async def release(self) -> None:
        """Give the lock up and close the dedicated connection (safe to call twice)."""
        if self._conn is not None and self._held:
            with contextlib.suppress(exc.SQLAlchemyError, OSError, TimeoutError):
                with anyio.fail_after(self.check_timeout_seconds):
                    await self._conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                    )
        self._held = False
        await self._drop_connection()

    async def close(self) -> None:
        await self.release()
        await self._engine.dispose()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.check_timeout_seconds):
            try:
                await conn.invalidate()
                await conn.close()
            except (exc.SQLAlchemyError, OSError):
                logger.debug("closing the leader connection of %s failed", self.binding)
