"""The state store: migrations, column types, `StateRepo` operations, errors, transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from daemon.errors import StoreError
from daemon.model import Conflict, ConflictRule, Side, SyncKey
from daemon.store.db import VERSION_TABLE, Store, open_store
from daemon.store.repo import (
    BindingState,
    DeleteAudit,
    MutationKind,
    MutationState,
    QuarantineItem,
    RowState,
    RunRecord,
    StateRepo,
)
from daemon.store.tables import STATE_TABLES, StateBase
from tests.integration.db_fixtures import db_url  # noqa: F401

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
repo = StateRepo()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:  # noqa: F811
    store = await open_store(db_url)
    try:
        yield store
    finally:
        await store.close()


def _diffs(conn: Connection) -> list[object]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, StateBase.metadata))


def _state(key: str, **kw: object) -> RowState:
    fields: dict[str, object] = {
        "binding": "b",
        "key": SyncKey(key),
        "base": {"activity": "Run", "tags": ("a", "b"), "hours": "1.5", "ok": True, "x": None},
        "base_hash": f"h-{key}",
        "synced_at": T0,
    }
    fields.update(kw)
    return RowState(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- migrations


async def test_migrated_schema_matches_models(store: Store) -> None:
    """Alembic's migrated schema equals tables.py's metadata (no autogenerate diffs)."""
    async with store.connect() as conn:
        assert await conn.run_sync(_diffs) == []
    assert await store.current_revision() == "0002"


async def test_migrations_twice_are_a_no_op(db_url: str) -> None:  # noqa: F811
    """Opening the store again (running upgrade head again) changes nothing and keeps data."""
    first = await open_store(db_url)
    async with first.begin() as conn:
        await repo.save_binding_state(conn, BindingState(binding="b", updated_at=T0))
    await first.migrate()
    await first.close()
    second = await open_store(db_url)
    try:
        async with second.connect() as conn:
            assert await conn.run_sync(_diffs) == []
            versions = (await conn.execute(sa.text(f"SELECT * FROM {VERSION_TABLE}"))).all()
            assert [tuple(v) for v in versions] == [("0002",)]
            assert await repo.get_binding_state(conn, "b") is not None
    finally:
        await second.close()


async def test_concurrent_first_starts_migrate_once(db_url: str) -> None:  # noqa: F811
    """Two instances opening a fresh database at once both start; the schema is built once."""
    stores: list[Store] = []

    async def start() -> None:
        stores.append(await open_store(db_url))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(start)
            tg.start_soon(start)
        async with stores[0].connect() as conn:
            versions = (await conn.execute(sa.text(f"SELECT * FROM {VERSION_TABLE}"))).all()
            assert [tuple(v) for v in versions] == [("0002",)]
            assert await conn.run_sync(_diffs) == []
    finally:
        for store in stores:
            await store.close()


async def test_downgrade_to_base_drops_state_tables(store: Store) -> None:
    """downgrade("base") removes every state table; upgrade brings them back."""
    await store.downgrade("base")
    async with store.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert not names & {t.name for t in STATE_TABLES}
    await store.migrate()
    async with store.connect() as conn:
        assert await conn.run_sync(_diffs) == []


async def test_application_alembic_version_is_left_alone(db_url: str) -> None:  # noqa: F811
    """The app's own `alembic_version` table is untouched: ours is coda_sync_alembic_version."""
    bare = await open_store(db_url, migrate=False)
    async with bare.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        await conn.execute(sa.text("INSERT INTO alembic_version VALUES ('app_rev_42')"))
    await bare.close()
    store = await open_store(db_url)
    try:
        async with store.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
        assert [r[0] for r in rows] == ["app_rev_42"]
        assert await store.current_revision() == "0002"
    finally:
        await store.close()


async def test_sqlite_pragmas(store: Store) -> None:
    """SQLite connections run in WAL with busy_timeout, foreign keys and synchronous=NORMAL."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite only")
    async with store.connect() as conn:
        pragma = {
            name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": 10000,
        "foreign_keys": 1,
        "synchronous": 1,
    }


async def test_open_store_unreachable_database_is_store_error() -> None:
    """A database that cannot be opened is reported as StoreError naming the operation."""
    with pytest.raises(StoreError, match="connecting to .* directory /nonexistent-dir/x does not"):
        await open_store("sqlite+aiosqlite:////nonexistent-dir/x/y.db")
    with pytest.raises(StoreError, match="connecting to"):
        await open_store("postgresql+asyncpg://nobody@127.0.0.1:1/none")


# --------------------------------------------------------------------------- types


async def test_utc_datetime_round_trips_aware_utc(store: Store) -> None:
    """Aware non-UTC input comes back as the same instant in UTC; naive input is taken as UTC."""
    plus3 = timezone(timedelta(hours=3))
    async with store.begin() as conn:
        await repo.save_binding_state(
            conn,
            BindingState(
                binding="b",
                updated_at=datetime(2026, 3, 1, 15, 0, 0, 5, tzinfo=plus3),
                local_watermark=datetime(2026, 3, 1, 12, 0, 0, 5),  # naive = UTC
            ),
        )
    async with store.connect() as conn:
        state = await repo.get_binding_state(conn, "b")
    assert state is not None
    assert state.updated_at == datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC)
    assert state.updated_at.tzinfo is UTC
    assert state.local_watermark == datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC)
    assert state.local_watermark.tzinfo is UTC


async def test_binding_state_upsert(store: Store) -> None:
    """save_binding_state inserts, then replaces every field."""
    async with store.begin() as conn:
        assert await repo.get_binding_state(conn, "b") is None
        await repo.save_binding_state(conn, BindingState(binding="b", updated_at=T0))
        full = BindingState(
            binding="b",
            updated_at=T0 + timedelta(seconds=1),
            sync_token="tok",
            remote_watermark=T0,
            local_watermark=T0,
            last_full_scan_at=T0,
            last_local_full_scan_at=T0,
            schema_fingerprint="fp",
        )
        await repo.save_binding_state(conn, full)
        assert await repo.get_binding_state(conn, "b") == full


# --------------------------------------------------------------------------- row state


async def test_row_states_round_trip_canonical_values(store: Store) -> None:
    """base and pending_values come back as the same canonical Values (lists -> tuples)."""
    state = _state(
        "k1",
        coda_row_id="i-1",
        remote_updated_at=T0,
        local_updated_at=T0,
        pending_values={"tags": ("x",), "hours": None},
        fence_until=T0,
        recheck=True,
    )
    async with store.begin() as conn:
        await repo.put_row_states(conn, [state])
    async with store.connect() as conn:
        got = await repo.get_row_states(conn, "b", ["k1", "missing"])
    assert got == {"k1": state}
    assert got[SyncKey("k1")].base["tags"] == ("a", "b")


async def test_put_row_states_upserts_in_bulk(store: Store) -> None:
    """1200 states (more than one IN chunk) insert, then update in place; reads are chunked."""
    keys = [f"k{i:05d}" for i in range(1200)]
    async with store.begin() as conn:
        await repo.put_row_states(conn, [_state(k) for k in keys])
        await repo.put_row_states(
            conn, [_state(k, base={"activity": "Swim"}, base_hash="new") for k in keys[::2]]
        )
    async with store.connect() as conn:
        got = await repo.get_row_states(conn, "b", keys)
        assert len(got) == 1200
        assert got[SyncKey("k00000")].base == {"activity": "Swim"}
        assert got[SyncKey("k00001")].base_hash == "h-k00001"
        assert await repo.count_row_states(conn, "b") == 1200
        assert await repo.count_row_states(conn, "other") == 0


async def test_iter_row_states_pages_by_key(store: Store) -> None:
    """iter_row_states yields every state once, in key order, in batches; detached optional."""
    keys = [f"k{i:03d}" for i in range(25)]
    async with store.begin() as conn:
        await repo.put_row_states(conn, [_state(k, detached=k.endswith("0")) for k in keys])
        await repo.put_row_states(conn, [_state("z", binding="other")])
    async with store.connect() as conn:
        batches = [b async for b in repo.iter_row_states(conn, "b", batch=10)]
        live = [s async for b in repo.iter_row_states(conn, "b", include_detached=False) for s in b]
        assert await repo.count_row_states(conn, "b") == 22
        assert await repo.count_row_states(conn, "b", include_detached=True) == 25
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [s.key for b in batches for s in b] == keys
    assert len(live) == 22 and not any(s.detached for s in live)


async def test_row_states_by_coda_id_and_delete(store: Store) -> None:
    """Lookup by Coda row id; delete_row_states removes only the given keys of the binding."""
    async with store.begin() as conn:
        await repo.put_row_states(conn, [_state(f"k{i}", coda_row_id=f"i-{i}") for i in range(5)])
        await repo.put_row_states(conn, [_state("k1", binding="other", coda_row_id="i-1")])
        by_id = await repo.get_row_states_by_coda_ids(conn, "b", ["i-1", "i-3", "i-9"])
        assert {k: s.key for k, s in by_id.items()} == {"i-1": "k1", "i-3": "k3"}
        assert await repo.delete_row_states(conn, "b", ["k1", "k2", "nope"]) == 2
        assert set(await repo.get_row_states(conn, "b", ["k0", "k1", "k2"])) == {"k0"}
        assert set(await repo.get_row_states(conn, "other", ["k1"])) == {"k1"}


# --------------------------------------------------------------------------- mutations


async def test_mutation_lifecycle_and_pending_rows(store: Store) -> None:
    """intent -> sent -> confirmed; open mutations listed; pending rows found and cleared."""
    async with store.begin() as conn:
        m1 = await repo.create_mutation(
            conn,
            binding="b",
            kind=MutationKind.UPSERT,
            at=T0,
            row_count=2,
            payload={"keys": ["k1", "k2"]},
        )
        m2 = await repo.create_mutation(
            conn, binding="b", kind=MutationKind.DELETE, at=T0, row_count=1
        )
        await repo.put_row_states(
            conn,
            [
                _state("k1", pending_mutation_id=m1, pending_values={"hours": "2"}),
                _state("k2", pending_mutation_id=m1),
                _state("k3"),
            ],
        )
    async with store.begin() as conn:
        assert [m.id for m in await repo.list_open_mutations(conn, "b")] == [m1, m2]
        assert await repo.keys_with_pending(conn, "b") == ["k1", "k2"]
        assert [s.key for s in await repo.pending_row_states(conn, "b")] == ["k1", "k2"]
        await repo.mark_sent(conn, m1, request_id="req-1", at=T0 + timedelta(seconds=1))
        sent = await repo.get_mutation(conn, m1)
        assert sent is not None
        assert (sent.state, sent.request_id, sent.attempts) == (MutationState.SENT, "req-1", 1)
        assert sent.payload == {"keys": ["k1", "k2"]}
        await repo.mark_confirmed(conn, [m1], at=T0 + timedelta(seconds=2))
        await repo.mark_lost(conn, [m2, m1])  # a confirmed mutation never becomes lost
        assert await repo.clear_pending(conn, "b", [m1]) == 2
    async with store.connect() as conn:
        done = await repo.get_mutation(conn, m1)
        lost = await repo.get_mutation(conn, m2)
        assert done is not None and done.state is MutationState.CONFIRMED
        assert done.confirmed_at == T0 + timedelta(seconds=2)
        assert lost is not None and lost.state is MutationState.LOST
        assert await repo.list_open_mutations(conn, "b") == []
        assert await repo.keys_with_pending(conn, "b") == []


async def test_pending_mutation_foreign_key_is_enforced(store: Store) -> None:
    """A row state cannot point at a mutation that does not exist (FKs are on, SQLite too)."""
    with pytest.raises(StoreError, match="writing row states failed"):
        async with store.begin() as conn:
            await repo.put_row_states(conn, [_state("k1", pending_mutation_id=999)])


async def test_prune_mutations_keeps_open_ones(store: Store) -> None:
    """prune_mutations deletes old confirmed/lost ones; row states' references become NULL."""
    async with store.begin() as conn:
        old = await repo.create_mutation(
            conn, binding="b", kind=MutationKind.UPSERT, at=T0, row_count=1
        )
        open_ = await repo.create_mutation(
            conn, binding="b", kind=MutationKind.UPSERT, at=T0, row_count=1
        )
        await repo.put_row_states(conn, [_state("k1", pending_mutation_id=old)])
        await repo.mark_confirmed(conn, [old], at=T0)
        assert await repo.prune_mutations(conn, older_than=T0 + timedelta(days=1)) == 1
        assert await repo.get_mutation(conn, old) is None
        assert await repo.get_mutation(conn, open_) is not None
        states = await repo.get_row_states(conn, "b", ["k1"])
        assert states[SyncKey("k1")].pending_mutation_id is None


# --------------------------------------------------------------------------- journal, audit


def _conflict(key: str, column: str | None = "hours") -> Conflict:
    return Conflict(
        key=SyncKey(key),
        column=column,
        local_value="2",
        remote_value=("a", "b"),
        base_value=None,
        winner=Side.REMOTE,
        rule=ConflictRule.LWW,
        local_at=T0,
        remote_at=T0 + timedelta(seconds=9),
    )


async def test_conflict_journal_append_and_read(store: Store) -> None:
    """Conflicts are journaled with both values, the rule and the winner, and read back."""
    conflicts = [_conflict("k1"), _conflict("k2", None)]
    async with store.begin() as conn:
        assert await repo.journal_conflicts(conn, "b", conflicts, at=T0) == 2
    async with store.connect() as conn:
        records = await repo.list_conflicts(conn, "b")
        assert await repo.count_conflicts(conn, "b") == 2
    assert [r.conflict for r in records] == conflicts[::-1]
    assert records[0].recorded_at == T0


async def test_delete_audit_append_and_read(store: Store) -> None:
    """Deletes are audited with the old values, so any delete is recoverable."""
    audits = [
        DeleteAudit(SyncKey("k1"), "local", {"tags": ("x",), "hours": "3"}, "i-1"),
        DeleteAudit(SyncKey("k2"), "remote", None),
    ]
    async with store.begin() as conn:
        assert await repo.audit_deletes(conn, "b", audits, at=T0) == 2
    async with store.connect() as conn:
        records = await repo.list_deletes(conn, "b")
    assert [r.audit for r in records] == audits[::-1]


@pytest.mark.parametrize("table", ["coda_sync_conflicts", "coda_sync_deletes"])
@pytest.mark.parametrize("statement", ["UPDATE {t} SET binding = 'x'", "DELETE FROM {t}"])
async def test_journal_and_audit_are_append_only(store: Store, table: str, statement: str) -> None:
    """The database itself refuses UPDATE and DELETE on the conflict journal and delete audit."""
    async with store.begin() as conn:
        await repo.journal_conflicts(conn, "b", [_conflict("k1")], at=T0)
        await repo.audit_deletes(conn, "b", [DeleteAudit(SyncKey("k1"), "local", None)], at=T0)
    with pytest.raises(StoreError, match="append-only"):
        async with store.begin() as conn:
            await conn.execute(sa.text(statement.format(t=table)))
    async with store.connect() as conn:
        count = (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
    assert count == 1


# --------------------------------------------------------------------------- quarantine, runs


async def test_quarantine_put_count_clear(store: Store) -> None:
    """Quarantining twice bumps the count and keeps first_seen_at; clearing removes the rows."""
    later = T0 + timedelta(minutes=5)
    async with store.begin() as conn:
        await repo.quarantine_put(
            conn, "b", [QuarantineItem("remote", "i-1", "bad date", {"c-1": "x"})], at=T0
        )
        await repo.quarantine_put(
            conn,
            "b",
            [QuarantineItem("remote", "i-1", "bad date again"), QuarantineItem("local", "k2", "?")],
            at=later,
        )
        entries = {e.item.ref: e for e in await repo.quarantine_list(conn, "b")}
        assert await repo.quarantine_count(conn, "b") == 2
        again = entries["i-1"]
        assert (again.count, again.first_seen_at, again.last_seen_at) == (2, T0, later)
        assert again.item.reason == "bad date again"
        assert await repo.quarantine_clear(conn, "b", ["k2"], side="remote") == 0
        assert await repo.quarantine_clear(conn, "b", ["k2", "i-1"]) == 2
        assert await repo.quarantine_count(conn, "b") == 0


async def test_runs_put_get_prune(store: Store) -> None:
    """Runs are upserted by id and pruned to the most recent N."""
    async with store.begin() as conn:
        for i in range(12):
            await repo.put_run(
                conn,
                RunRecord(
                    run_id=f"r{i:02d}", state="queued", requested_at=T0 + timedelta(seconds=i)
                ),
            )
        done = RunRecord(
            run_id="r11",
            state="done",
            requested_at=T0 + timedelta(seconds=11),
            binding="b",
            full=True,
            started_at=T0,
            finished_at=T0,
            result={"pulled": 3},
            error=None,
        )
        await repo.put_run(conn, done)
        assert await repo.get_run(conn, "r11") == done
        assert await repo.prune_runs(conn, keep=5) == 7
        assert await repo.get_run(conn, "r06") is None
        assert await repo.get_run(conn, "r07") is not None


# --------------------------------------------------------------------------- transactions


async def test_failed_transaction_rolls_back_everything(store: Store) -> None:
    """An error inside store.begin() rolls back every write of that transaction."""
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await repo.put_row_states(conn, [_state("k1")])
            await repo.save_binding_state(conn, BindingState(binding="b", updated_at=T0))
            raise RuntimeError("boom")
    async with store.connect() as conn:
        assert await repo.get_row_states(conn, "b", ["k1"]) == {}
        assert await repo.get_binding_state(conn, "b") is None


async def test_concurrent_read_then_write_transactions_both_commit(store: Store) -> None:
    """Two writers that each read then write both succeed (SQLite: BEGIN IMMEDIATE waits)."""
    async with store.begin() as conn:
        await repo.put_row_states(conn, [_state("k0")])

    async def writer(i: int) -> None:
        async with store.begin() as conn:
            await repo.get_row_states(conn, "b", ["k0"])
            await anyio.sleep(0.05)
            await repo.put_row_states(conn, [_state(f"w{i}")])

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(writer, i)
    async with store.connect() as conn:
        assert await repo.count_row_states(conn, "b") == 4


async def test_errors_are_store_errors_naming_the_operation(store: Store) -> None:
    """A database error leaves the repository as StoreError with the operation, not raw SQL."""
    async with store.begin() as conn:
        await conn.execute(sa.text("DROP TABLE coda_sync_quarantine"))
    async with store.connect() as conn:
        with pytest.raises(StoreError, match="counting the quarantine failed") as caught:
            await repo.quarantine_count(conn, "b")
    assert "SELECT" not in str(caught.value)
    assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)
