"""`BoundTable`: creating/checking the application's table, reading changes, writing rows."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from daemon import config
from daemon.config import Binding
from daemon.errors import StoreError, StoreSchemaError
from daemon.model import ColumnSpec, ColumnType, DeletePolicy, SyncKey
from daemon.store.bound import BoundTable, LocalRow
from daemon.store.db import Store, open_store
from daemon.store.participation import AppBase, Participation
from daemon.store.repo import RowState, StateRepo
from tests.integration.db_fixtures import db_url  # noqa: F401

pytestmark = pytest.mark.anyio

CONFIG = Path(__file__).resolve().parents[2] / "config" / "coda-sync.toml"
T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def participation_binding(*, create_table: bool = True) -> Binding:
    settings = config.load(CONFIG, env={"CODA_API_TOKEN": "test-token"})
    return dataclasses.replace(settings.binding("participation"), create_table=create_table)


def all_types_binding(*, soft_delete: bool = False) -> Binding:
    columns = tuple(
        ColumnSpec(local=f"c_{t.value}", coda=f"c-{t.value}", type=t) for t in ColumnType
    )
    return Binding(
        name="everything",
        doc_id="d",
        table_id="t",
        local_table="everything",
        local_key="id",
        local_updated_at="updated_at",
        coda_key_column="c-key",
        deletes=DeletePolicy.SOFT if soft_delete else DeletePolicy.PROPAGATE,
        soft_delete_column="deleted_at" if soft_delete else None,
        natural_key=(),
        create_table=True,
        columns=columns,
    )


SAMPLE = {
    "c_text": "héllo, мир",
    "c_number": 1.5,
    "c_percent": 0.25,
    "c_currency": Decimal("12.34"),
    "c_date": date(2026, 3, 1),
    "c_datetime": datetime(2026, 3, 1, 15, 30, 0, 1000, tzinfo=timezone(timedelta(hours=3))),
    "c_time": time(9, 30, 15),
    "c_checkbox": True,
    "c_select": "Lead",
    "c_multiselect": ["a", "b"],
    "c_person": "ann@example.com",
    "c_people": ["ann@example.com", "bob@example.com"],
    "c_email": "ann@example.com",
    "c_link": "https://example.com/x?y=1",
    "c_lookup": "i-abc",
    "c_lookups": ["i-abc", "i-def"],
}


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:  # noqa: F811
    store = await open_store(db_url)
    try:
        yield store
    finally:
        await store.close()


async def ready(store: Store, binding: Binding) -> BoundTable:
    bound = BoundTable(binding)
    async with store.begin() as conn:
        await bound.ensure(conn)
    return bound


async def all_rows(store: Store, bound: BoundTable, **kw: object) -> list[list[LocalRow]]:
    async with store.connect() as conn:
        return [batch async for batch in bound.iter_rows(conn, **kw)]  # type: ignore[arg-type]


def _only_participation(name: str | None, type_: str, _parents: object) -> bool:
    # The state tables share the database; only the application's table is compared.
    return type_ != "table" or name == "participation"


def _app_diffs(conn: Connection) -> list[object]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_name": _only_participation}
    )
    return list(compare_metadata(context, AppBase.metadata))


# --------------------------------------------------------------------------- ensure


async def test_ensure_creates_missing_table_then_accepts_it(store: Store) -> None:
    """With create_table, a missing table is created (with its updated_at index); again: no-op."""
    await ready(store, participation_binding())
    await ready(store, participation_binding(create_table=False))
    async with store.connect() as conn:
        indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("participation"))
    assert [i["column_names"] for i in indexes] == [["updated_at", "id"]]


async def test_missing_table_without_create_table(store: Store) -> None:
    """Without create_table, a missing table is a StoreSchemaError saying who owns it."""
    with pytest.raises(StoreSchemaError) as caught:
        await ready(store, participation_binding(create_table=False))
    assert str(caught.value) == (
        "table 'participation' does not exist; the application owns it (or set create_table = true)"
    )


async def test_participation_model_matches_bound_table(store: Store) -> None:
    """The Participation ORM model and the table BoundTable creates from the config agree."""
    await ready(store, participation_binding())
    async with store.connect() as conn:
        assert await conn.run_sync(_app_diffs) == []


async def test_bound_table_accepts_table_created_by_the_model(store: Store) -> None:
    """A table the application created from its model passes the check unchanged."""
    async with store.begin() as conn:
        await conn.run_sync(AppBase.metadata.create_all)
    bound = BoundTable(participation_binding(create_table=False))
    original = {c.name: type(c.type) for c in bound.table.columns}
    async with store.begin() as conn:
        await bound.ensure(conn)
    assert {c.name: type(c.type) for c in bound.table.columns} == original


async def test_ensure_lists_every_problem(store: Store) -> None:
    """A mismatching table is refused with every problem: name, expected and found type."""
    async with store.begin() as conn:
        await conn.execute(
            sa.text(
                "CREATE TABLE participation (id TEXT, employee_email TEXT, email TEXT, "
                "activity TEXT, activity_date TEXT, role TEXT, hours VARCHAR(10), "
                "confirmed BOOLEAN, comment TEXT, year REAL, owner TEXT NOT NULL)"
            )
        )
    with pytest.raises(StoreSchemaError) as caught:
        await ready(store, participation_binding(create_table=False))
    message = str(caught.value)
    assert message.startswith("table 'participation' does not match binding 'participation':")
    problems = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(problems) == 6, message
    assert "column 'activity_date': expected DATE, found TEXT" in message
    assert "column 'hours': expected a number" in message and "found VARCHAR(10)" in message
    assert "column 'tags': missing (expected JSON" in message
    assert "column 'updated_at': missing (expected a timestamp" in message
    assert "column 'owner': NOT NULL without a default and not mapped" in message
    assert "column 'id' (the sync key) must be the primary key or unique" in message


# --------------------------------------------------------------------------- write + read


async def test_every_column_type_round_trips(store: Store) -> None:
    """Each ColumnType's Python value is written and read back equal (datetimes aware UTC)."""
    bound = await ready(store, all_types_binding())
    empty = dict.fromkeys(SAMPLE)
    async with store.begin() as conn:
        assert await bound.upsert_rows(conn, [("k1", SAMPLE), ("k2", empty)], updated_at=T0) == 2
    async with store.connect() as conn:
        rows = await bound.get_rows(conn, ["k1", "k2", "nope"])
    assert set(rows) == {"k1", "k2"}
    got = rows["k1"]
    assert got.values == SAMPLE
    assert got.values["c_datetime"].tzinfo is UTC
    assert isinstance(got.values["c_currency"], Decimal)
    assert isinstance(got.values["c_number"], float)
    assert got.updated_at == T0 and got.updated_at.tzinfo is UTC
    assert not got.soft_deleted
    assert rows["k2"].values == empty


async def test_upsert_updates_only_given_columns(store: Store) -> None:
    """An upsert updates the given mapped columns + updated_at; other columns keep values."""
    async with store.begin() as conn:
        await conn.run_sync(AppBase.metadata.create_all)
        await conn.execute(sa.text("ALTER TABLE participation ADD COLUMN note TEXT"))
    bound = await ready(store, participation_binding(create_table=False))
    later = T0 + timedelta(minutes=1)
    async with store.begin() as conn:
        await bound.upsert_rows(conn, [("k1", {"activity": "Run", "hours": 1.0})], updated_at=T0)
        await conn.execute(sa.text("UPDATE participation SET note = 'app only'"))
        await bound.upsert_rows(conn, [("k1", {"hours": 2.5})], updated_at=later)
        row = (await bound.get_rows(conn, ["k1"]))["k1"]
        note = (await conn.execute(sa.text("SELECT note FROM participation"))).scalar_one()
    assert (row.values["activity"], row.values["hours"], row.updated_at) == ("Run", 2.5, later)
    assert note == "app only"


async def test_upsert_rejects_unmapped_columns(store: Store) -> None:
    """Writing a column the binding does not map is refused before touching the database."""
    bound = await ready(store, participation_binding())
    with pytest.raises(StoreError, match=r"\['salary'\] are not mapped"):
        async with store.begin() as conn:
            await bound.upsert_rows(conn, [("k1", {"salary": 1})], updated_at=T0)


async def test_iter_rows_orders_filters_and_pages(store: Store) -> None:
    """iter_rows: updated_at >= since, ordered by (updated_at, key), each row once per scan."""
    bound = await ready(store, participation_binding())
    stamps = [T0 + timedelta(seconds=i // 4) for i in range(23)]  # 4 rows share each stamp
    async with store.begin() as conn:
        for i, stamp in enumerate(stamps):
            await bound.upsert_rows(
                conn, [(f"k{22 - i:02d}", {"hours": float(i)})], updated_at=stamp
            )
    batches = await all_rows(store, bound, batch=3)
    flat = [r for b in batches for r in b]
    assert all(len(b) == 3 for b in batches[:-1])
    assert [(r.updated_at, r.key) for r in flat] == sorted((r.updated_at, r.key) for r in flat)
    assert len(flat) == 23 and len({r.key for r in flat}) == 23
    since = T0 + timedelta(seconds=4)
    recent = [r for b in await all_rows(store, bound, since=since, batch=2) for r in b]
    assert {r.key for r in recent} == {r.key for r in flat if r.updated_at >= since}
    assert len(recent) == 7
    async with store.connect() as conn:
        assert await bound.count(conn) == 23
        assert await bound.max_updated_at(conn) == T0 + timedelta(seconds=5)


async def test_sqlite_paging_with_foreign_timestamp_format(store: Store) -> None:
    """SQLite rows stamped by CURRENT_TIMESTAMP (no microseconds) are paged without loss."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite only: the text timestamp format")
    bound = await ready(store, participation_binding())
    async with store.begin() as conn:
        for i in range(7):
            await conn.execute(
                sa.text(
                    "INSERT INTO participation (id, updated_at) "
                    f"VALUES ('k{i}', '2026-03-01 12:00:0{i // 3}')"
                )
            )
    flat = [r for b in await all_rows(store, bound, batch=2) for r in b]
    assert [r.key for r in flat] == [f"k{i}" for i in range(7)]
    assert flat[0].updated_at == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


async def test_empty_table_reads(store: Store) -> None:
    """An empty table yields no batches, counts 0 and has no max updated_at."""
    bound = await ready(store, participation_binding())
    assert await all_rows(store, bound) == []
    async with store.connect() as conn:
        assert await bound.count(conn) == 0
        assert await bound.max_updated_at(conn) is None


async def test_delete_and_soft_delete(store: Store) -> None:
    """delete_rows removes rows; soft_delete_rows marks them once (first time is kept)."""
    bound = await ready(store, all_types_binding(soft_delete=True))
    later = T0 + timedelta(hours=1)
    async with store.begin() as conn:
        await bound.upsert_rows(
            conn, [(f"k{i}", {"c_text": str(i)}) for i in range(4)], updated_at=T0
        )
        assert await bound.delete_rows(conn, ["k0", "nope"]) == 1
        assert await bound.soft_delete_rows(conn, ["k1", "k2"], T0) == 2
        assert await bound.soft_delete_rows(conn, ["k1"], later) == 0
        rows = await bound.get_rows(conn, ["k0", "k1", "k2", "k3"])
        raw = await conn.execute(sa.text("SELECT deleted_at FROM everything WHERE id = 'k1'"))
        assert raw.scalar_one() is not None
    assert set(rows) == {"k1", "k2", "k3"}
    assert [rows[k].soft_deleted for k in ("k1", "k2", "k3")] == [True, True, False]
    assert rows["k1"].updated_at == T0


async def test_soft_delete_needs_a_column(store: Store) -> None:
    """soft_delete_rows on a binding without soft_delete_column is refused."""
    bound = await ready(store, participation_binding())
    async with store.begin() as conn:
        with pytest.raises(StoreError, match="no soft_delete_column"):
            await bound.soft_delete_rows(conn, ["k1"], T0)


async def test_missing_keys_anti_join(store: Store) -> None:
    """missing_keys: live row states of this binding whose local row is gone."""
    bound = await ready(store, participation_binding())
    repo = StateRepo()

    def state(key: str, *, binding: str = "participation", detached: bool = False) -> RowState:
        return RowState(binding, SyncKey(key), {}, "h", T0, detached=detached)

    async with store.begin() as conn:
        await bound.upsert_rows(conn, [("k1", {}), ("k4", {})], updated_at=T0)
        await repo.put_row_states(
            conn,
            [state("k1"), state("k2"), state("k3", detached=True), state("k5", binding="other")],
        )
        assert await bound.missing_keys(conn, "participation") == ["k2"]


async def test_local_write_and_state_write_share_one_transaction(store: Store) -> None:
    """A pull (local row + row state) rolls back as a whole when the transaction fails."""
    bound = await ready(store, participation_binding())
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await bound.upsert_rows(conn, [("k1", {"activity": "Run"})], updated_at=T0)
            await StateRepo().put_row_states(
                conn, [RowState("participation", SyncKey("k1"), {"activity": "Run"}, "h", T0)]
            )
            raise RuntimeError("crash before commit")
    async with store.connect() as conn:
        assert await bound.count(conn) == 0
        assert await StateRepo().count_row_states(conn, "participation") == 0


async def test_application_edits_through_the_model_are_seen(store: Store) -> None:
    """Rows the app writes through the Participation model are read back; updated_at bumps."""
    bound = await ready(store, participation_binding())
    async with store.sessionmaker() as session, session.begin():
        session.add(
            Participation(
                id="k1",
                activity="Run",
                activity_date=date(2026, 3, 1),
                hours=1.5,
                confirmed=True,
                tags=["x"],
            )
        )
    first = (await all_rows(store, bound))[0][0]
    async with store.sessionmaker() as session, session.begin():
        row = await session.get(Participation, "k1")
        assert row is not None
        row.hours = 2.0
    second = (await all_rows(store, bound))[0][0]
    assert first.values["activity"] == "Run" and first.values["tags"] == ["x"]
    assert second.values["hours"] == 2.0
    assert second.updated_at > first.updated_at


async def test_postgres_existing_table_variants_are_adapted(store: Store) -> None:
    """PostgreSQL: a uuid key, timestamp without time zone and an integer number column work."""
    if store.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    async with store.begin() as conn:
        await conn.execute(
            sa.text(
                "CREATE TABLE participation (id uuid PRIMARY KEY, employee_email text,"
                " email varchar(200), activity text, activity_date date, role text,"
                " hours numeric, confirmed boolean, tags jsonb, comment text, year integer,"
                " updated_at timestamp NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
        )
    bound = await ready(store, participation_binding(create_table=False))
    key = "0b6f4f3e-8a59-4a43-9d43-4c3f6f0a6b1e"
    async with store.begin() as conn:
        await bound.upsert_rows(
            conn, [(key, {"hours": 1.25, "year": 2026.0, "tags": ["a"]})], updated_at=T0
        )
        others = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(3)]
        await bound.upsert_rows(conn, [(k, {}) for k in others], updated_at=T0 - timedelta(1))
        await StateRepo().put_row_states(
            conn,
            [
                RowState(
                    "participation", SyncKey("b0b0b0b0-0000-4000-8000-000000000000"), {}, "h", T0
                )
            ],
        )
        stored = (await conn.execute(sa.text("SELECT updated_at FROM participation"))).scalar()
        assert await bound.missing_keys(conn, "participation") == [
            "b0b0b0b0-0000-4000-8000-000000000000"
        ]
    assert stored == T0.replace(tzinfo=None)  # naive UTC in a timestamp column
    paged = [r.key for b in await all_rows(store, bound, batch=2) for r in b]
    assert paged == [*others, key]  # keyset paging over naive timestamps and uuid keys
    rows = [r for b in await all_rows(store, bound, since=T0) for r in b]
    assert [(r.key, r.values["hours"], r.values["year"], r.updated_at) for r in rows] == [
        (key, 1.25, 2026.0, T0)
    ]
