"""One syncing process per binding: the SQLite flock and the PostgreSQL advisory-lock leader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa

from daemon.errors import LockHeldError, StoreError
from daemon.store.db import advisory_key, make_engine
from daemon.store.lock import PgLeader, acquire_lock_for_url, acquire_sqlite_lock, lock_path_for
from tests.integration.db_fixtures import PG_SKIP_REASON, pg_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

_TRY = textwrap.dedent(
    """
    import sys
    from daemon.errors import LockHeldError
    from daemon.store.lock import acquire_sqlite_lock
    try:
        acquire_sqlite_lock(sys.argv[1]).close()
    except LockHeldError as e:
        print(e)
        sys.exit(3)
    print("acquired")
    """
)

_HOLD = textwrap.dedent(
    """
    import sys, time
    from daemon.store.lock import acquire_sqlite_lock
    handle = acquire_sqlite_lock(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
    """
)


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _try_in_subprocess(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _python(_TRY, str(db)), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    db = tmp_path / "db.sqlite"
    proc = subprocess.Popen(_python(_HOLD, str(db)), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_second_process_is_refused_until_release(tmp_path: Path) -> None:
    """While we hold the lock, another process gets LockHeldError naming us; then it may."""
    db = tmp_path / "db.sqlite"
    handle = acquire_sqlite_lock(db)
    assert handle.held and handle.path == lock_path_for(db)
    refused = _try_in_subprocess(db)
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.strip() == (
        f"another coda-sync process (pid {os.getpid()}) holds {db}.lock"
    )
    handle.close()
    handle.close()  # idempotent
    assert not handle.held
    allowed = _try_in_subprocess(db)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "acquired"), allowed.stderr


def test_lock_is_released_when_the_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """flock dies with its process: after SIGKILL of the holder, the lock can be taken."""
    db = tmp_path / "db.sqlite"
    with pytest.raises(LockHeldError, match=f"pid {holder.pid}"):
        acquire_sqlite_lock(db)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with acquire_sqlite_lock(db) as handle:
        assert handle.held


def test_same_process_cannot_take_it_twice(tmp_path: Path) -> None:
    """A second acquisition in the same process is refused too (one lock per open file)."""
    db = tmp_path / "db.sqlite"
    with acquire_sqlite_lock(db), pytest.raises(LockHeldError):
        acquire_sqlite_lock(db)


def test_memory_and_postgres_urls_need_no_file_lock(tmp_path: Path) -> None:
    """:memory: and PostgreSQL URLs give a no-op handle; SQLite file URLs lock <db>.lock."""
    assert not acquire_sqlite_lock(":memory:").held
    assert not acquire_sqlite_lock(None).held
    assert not acquire_lock_for_url("sqlite+aiosqlite:///:memory:").held
    assert not acquire_lock_for_url("postgresql+asyncpg://u@h/db").held
    with acquire_lock_for_url(f"sqlite+aiosqlite:///{tmp_path}/x.db") as handle:
        assert handle.path == tmp_path / "x.db.lock"


def test_unwritable_lock_location_is_a_store_error(tmp_path: Path) -> None:
    """A lock file that cannot be created is a StoreError, not an OSError."""
    with pytest.raises(StoreError, match="cannot open lock file"):
        acquire_sqlite_lock(tmp_path / "no-such-dir" / "db.sqlite")


def test_advisory_key_is_stable() -> None:
    """The advisory key is a fixed signed 64-bit value per name (same on every host)."""
    key = advisory_key("coda-sync:participation")
    assert key == advisory_key("coda-sync:participation")
    assert key != advisory_key("coda-sync:other")
    assert -(2**63) <= key < 2**63
    assert key == -7657105557015749040  # pinned: changing it would let two versions both lead


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.anyio
@pytest.mark.postgres
async def test_only_one_leader_per_binding(pg_url: str) -> None:  # noqa: F811
    """Two leaders of one binding: one acquires, the other does not; release hands it over."""
    a, b = PgLeader(pg_url, "participation"), PgLeader(pg_url, "participation")
    other = PgLeader(pg_url, "other-binding")
    try:
        assert await a.try_acquire()
        assert await a.try_acquire()  # re-entrant for the holder
        assert not await b.try_acquire()
        assert await other.try_acquire()  # bindings are independent
        assert await a.check() and not await b.check()
        await a.release()
        assert not a.held
        assert await b.try_acquire()
        assert not await a.try_acquire()
    finally:
        for leader in (a, b, other):
            await leader.close()


@pytest.mark.anyio
@pytest.mark.postgres
async def test_lost_connection_loses_leadership(pg_url: str) -> None:  # noqa: F811
    """When the holder's connection dies, check() says False and the other leader takes over."""
    a = PgLeader(pg_url, "participation", check_timeout_seconds=2)
    b = PgLeader(pg_url, "participation")
    engine = make_engine(pg_url)
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        async with engine.connect() as admin:
            killed = await admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'coda-sync leader participation'"
                    " AND datname = current_database() AND pid <> pg_backend_pid()"
                    " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
                )
            )
            assert killed.scalars().all() == [True]
        for _ in range(200):  # the server ends the session asynchronously
            if await b.try_acquire():
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the second leader never acquired the lock")
        assert not await a.check()
        assert not a.held
        assert await b.check()
    finally:
        await a.close()
        await b.close()
        await engine.dispose()


@pytest.mark.anyio
async def test_unreachable_server_is_a_store_error() -> None:
    """try_acquire against a server that does not answer raises StoreError."""
    leader = PgLeader("postgresql+asyncpg://nobody@127.0.0.1:1/none", "b", check_timeout_seconds=1)
    try:
        with pytest.raises(StoreError, match="leader lock of binding 'b'"):
            await leader.try_acquire()
    finally:
        await leader.close()


def test_pg_skip_reason_is_clear() -> None:
    """The skip reason names the environment variable to set."""
    assert "CODA_SYNC_TEST_PG_URL" in PG_SKIP_REASON
