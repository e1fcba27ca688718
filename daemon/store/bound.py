"""`BoundTable`: the application's SQL table of one binding (check, read, write).

The application owns this table; the daemon only reads changed rows and writes synced ones,
inside the caller's transaction (the same one that advances the row state). The table is
described by the binding's mapping: a Text key column (the sync key), one column per mapped
`ColumnSpec`, `updated_at`, and the soft-delete column when configured. `ensure` creates it
(only with `create_table`) or checks an existing one and reports EVERY mismatch at once.
Must not import httpx.

SQL types per column type (what `ensure` creates, and what it accepts in an existing table):

    text select person email link lookup   TEXT              any string type, UUID
    number percent                          DOUBLE            float, numeric, integer
    currency                                NUMERIC(18, 6)    numeric, float, integer
    date / datetime / time                  DATE / UTCDateTime / TIME
    checkbox                                BOOLEAN           (SQLite: also INTEGER)
    multiselect people lookups              JSON(B)           (SQLite: also TEXT)

An existing table may differ in ways we adapt to: a PostgreSQL `uuid` key (read back as
text), `timestamp without time zone` (stored as naive UTC), an INTEGER number column.

Reading pages by keyset on (updated_at, key), never loading the table. On SQLite the page
cursor is the stored text of updated_at, so rows written with another timestamp format (e.g.
CURRENT_TIMESTAMP, without microseconds) are neither skipped nor repeated at page edges.

Changed rows on PostgreSQL, by transaction id (`xid_marks`, `iter_rows(since_xid=...)`): an
`updated_at` watermark misses a row whose transaction commits after the watermark passed its
`updated_at` (the value is set when the transaction writes, or even starts, not when it
commits). So before each read we note `pg_snapshot_xmin(pg_current_snapshot())` = M, the
oldest transaction still running; every transaction whose rows that read cannot see was
running then or began later, so its xid is >= M. The next read takes every row whose `xmin`
(the xid that wrote its current version) is >= M, whatever its `updated_at`: nothing is
missed, however long the transaction ran. `xmin` is 32 bits; it is widened against the read's
own snapshot (valid for the 2^31 most recent xids; PostgreSQL >= 9.4 keeps it in frozen rows;
a row untouched for over 2^32 transactions is at worst re-read, never missed). A mark ahead of
the server's next xid (a restored or different cluster) is not used: the read falls back to
the `updated_at` watermark minus the overlap. The xmin filter cannot use an index (one
sequential scan per cycle: milliseconds for tables of Coda's sizes).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from daemon.config import Binding
from daemon.errors import StoreError, StoreSchemaError
from daemon.model import ColumnType
from daemon.store.db import (
    IN_CHUNK,
    WRITE_CHUNK,
    JSONType,
    UTCDateTime,
    advisory_key,
    chunks,
    store_error,
    upsert,
    wrap_errors,
)
from daemon.store.tables import RowStateRow

logger = logging.getLogger(__name__)

_TEXT_TYPES = frozenset(
    {
        ColumnType.TEXT,
        ColumnType.SELECT,
        ColumnType.PERSON,
        ColumnType.EMAIL,
        ColumnType.LINK,
        ColumnType.LOOKUP,
    }
)


class IntegralNumber(sa.TypeDecorator[Any]):
    """An INTEGER column holding a `number`: integral floats/decimals are bound as int."""

    impl = sa.Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, float | Decimal) and value == int(value):
            return int(value)
        return value


def sql_type(column_type: ColumnType) -> TypeEngine[Any]:
    """The SQL type `ensure` creates for a mapped column."""
    if column_type in _TEXT_TYPES:
        return sa.Text()
    if column_type in (ColumnType.NUMBER, ColumnType.PERCENT):
        return sa.Double()
    if column_type is ColumnType.CURRENCY:
        return sa.Numeric(18, 6)
    if column_type is ColumnType.DATE:
        return sa.Date()
    if column_type is ColumnType.DATETIME:
        return UTCDateTime()
    if column_type is ColumnType.TIME:
        return sa.Time()
    if column_type is ColumnType.CHECKBOX:
        return sa.Boolean()
    if column_type.is_array:
        return JSONType
    raise AssertionError(f"unmapped column type {column_type}")  # pragma: no cover


# What an existing column may be, per kind: (expected, for messages; accepted SQL type classes).
_KIND_ACCEPTS: dict[str, tuple[str, tuple[type[Any], ...]]] = {
    "key": ("text (TEXT/VARCHAR/UUID)", (sa.String, sa.Uuid)),
    "text": ("text (TEXT/VARCHAR)", (sa.String, sa.Uuid)),
    "number": ("a number (DOUBLE/REAL/NUMERIC/INTEGER)", (sa.Numeric, sa.Integer)),
    "date": ("DATE", (sa.Date,)),
    "datetime": ("a timestamp (TIMESTAMPTZ/DATETIME)", (sa.DateTime,)),
    "time": ("TIME", (sa.Time,)),
    "checkbox": ("BOOLEAN", (sa.Boolean,)),
    "json": ("JSON (JSONB on PostgreSQL)", (sa.JSON,)),
}
_SQLITE_EXTRA: dict[str, tuple[type[Any], ...]] = {"checkbox": (sa.Integer,), "json": (sa.String,)}


def _kind(column_type: ColumnType) -> str:
    if column_type in _TEXT_TYPES:
        return "text"
    if column_type in (ColumnType.NUMBER, ColumnType.PERCENT, ColumnType.CURRENCY):
        return "number"
    if column_type.is_array:
        return "json"
    return column_type.value


def _describe_type(found: TypeEngine[Any], dialect: Dialect) -> str:
    try:
        return str(found.compile(dialect=dialect))
    except exc.SQLAlchemyError:
        return type(found).__name__


@dataclass(frozen=True, slots=True)
class LocalRow:
    """One row of the application's table, as raw Python values of the mapped columns."""

    key: str
    values: dict[str, Any]
    updated_at: datetime
    """Aware UTC."""
    soft_deleted: bool = False


class LocalRowHead(NamedTuple):
    """Key, updated_at and soft-delete flag of a local row, without its mapped values: what a
    change scan needs to pick the rows worth reading in full (see `iter_row_heads`)."""

    key: str
    updated_at: datetime
    """Aware UTC."""
    soft_deleted: bool = False


class BoundTable:
    """The SQL side of one binding."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.name = binding.local_table
        self.key = binding.local_key
        self.updated_at = binding.local_updated_at
        self.soft_delete = binding.soft_delete_column
        self.columns: tuple[str, ...] = tuple(c.local for c in binding.columns)
        self._mapped = frozenset(self.columns)
        self.table = self._build({})

    def _build(self, overrides: dict[str, TypeEngine[Any]]) -> sa.Table:
        def typ(name: str, default: TypeEngine[Any]) -> TypeEngine[Any]:
            return overrides.get(name, default)

        columns = [sa.Column(self.key, typ(self.key, sa.Text()), primary_key=True)]
        columns += [
            sa.Column(c.local, typ(c.local, sql_type(c.type))) for c in self.binding.columns
        ]
        columns.append(
            sa.Column(self.updated_at, typ(self.updated_at, UTCDateTime()), nullable=False)
        )
        if self.soft_delete:
            columns.append(sa.Column(self.soft_delete, typ(self.soft_delete, UTCDateTime())))
        table = sa.Table(self.name, sa.MetaData(), *columns)
        sa.Index(f"ix_{self.name}_{self.updated_at}", table.c[self.updated_at], table.c[self.key])
        return table

    # ------------------------------------------------------------------ schema

    async def ensure(self, conn: AsyncConnection) -> None:
        """Create the table (create_table) or check it matches the mapping (StoreSchemaError)."""
        try:
            await conn.run_sync(self._ensure)
        except exc.SQLAlchemyError as error:
            raise store_error(f"checking table {self.name!r}", error) from error

    def _ensure(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            # Instances starting together: the second waits here, then finds the table (two
            # concurrent CREATE TABLEs fail with a duplicate pg_type row).
            key = advisory_key(f"coda-sync:table:{self.name}")
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        inspector = sa.inspect(conn)
        if not inspector.has_table(self.name):
            if not self.binding.create_table:
                raise StoreSchemaError(
                    f"table {self.name!r} does not exist; the application owns it "
                    "(or set create_table = true)"
                )
            self.table.create(conn)
            logger.info("created table %s for binding %s", self.name, self.binding.name)
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", exc.SAWarning)  # unknown types reflect as NullType
            reflected = {c["name"]: c for c in inspector.get_columns(self.name)}
            pk = inspector.get_pk_constraint(self.name).get("constrained_columns") or []
            uniques = [list(u["column_names"]) for u in inspector.get_unique_constraints(self.name)]
            uniques += [
                [str(c) for c in i["column_names"]]
                for i in inspector.get_indexes(self.name)
                if i["unique"]
            ]
        for w in caught:
            logger.debug("reflecting %s: %s", self.name, w.message)
        problems, overrides = self._check(conn.dialect, reflected)
        if [self.key] != list(pk) and [self.key] not in uniques:
            problems.append(
                f"column {self.key!r} (the sync key) must be the primary key or unique "
                "(upserts use ON CONFLICT on it)"
            )
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise StoreSchemaError(
                f"table {self.name!r} does not match binding {self.binding.name!r}:\n{lines}"
            )
        if overrides:
            self.table = self._build(overrides)

    def _expected(self) -> list[tuple[str, str]]:
        out = [(self.key, "key")]
        out += [(c.local, _kind(c.type)) for c in self.binding.columns]
        out.append((self.updated_at, "datetime"))
        if self.soft_delete:
            out.append((self.soft_delete, "datetime"))
        return out

    def _check(
        self, dialect: Dialect, reflected: dict[str, Any]
    ) -> tuple[list[str], dict[str, TypeEngine[Any]]]:
        problems: list[str] = []
        overrides: dict[str, TypeEngine[Any]] = {}
        for name, kind in self._expected():
            expected, accepts = _KIND_ACCEPTS[kind]
            if dialect.name == "sqlite":
                accepts += _SQLITE_EXTRA.get(kind, ())
            if name not in reflected:
                problems.append(f"column {name!r}: missing (expected {expected})")
                continue
            found: TypeEngine[Any] = reflected[name]["type"]
            if isinstance(found, sa.types.NullType):
                continue  # a type SQLAlchemy does not know (e.g. citext): give it the benefit
            if not isinstance(found, accepts):
                problems.append(
                    f"column {name!r}: expected {expected}, found {_describe_type(found, dialect)}"
                )
                continue
            adapted = self._adapt(dialect, kind, found)
            if adapted is not None:
                overrides[name] = adapted
        for name, column in reflected.items():
            if name in self._mapped or name in (self.key, self.updated_at, self.soft_delete):
                continue
            required = not column["nullable"] and column.get("default") is None
            generated = column.get("autoincrement") is True or column.get("computed")
            if required and not generated and not column.get("identity"):
                problems.append(
                    f"column {name!r}: NOT NULL without a default and not mapped "
                    "(rows created in Coda could not be inserted)"
                )
        return problems, overrides

    @staticmethod
    def _adapt(dialect: Dialect, kind: str, found: TypeEngine[Any]) -> TypeEngine[Any] | None:
        if kind in ("key", "text") and isinstance(found, sa.Uuid):
            return sa.Uuid(as_uuid=False)
        if kind == "datetime" and dialect.name != "sqlite" and not getattr(found, "timezone", True):
            return UTCDateTime(timezone=False)
        if kind == "number" and isinstance(found, sa.Integer):
            return IntegralNumber()
        return None

    # ------------------------------------------------------------------ reading

    def _key_as_text(self) -> sa.ColumnElement[Any]:
        column = self.table.c[self.key]
        return column if isinstance(column.type, sa.String) else sa.cast(column, sa.Text)

    def _select(self) -> sa.Select[Any]:
        t = self.table
        cols: list[sa.ColumnElement[Any]] = [
            t.c[self.key],
            t.c[self.updated_at],
            *(t.c[c] for c in self.columns),
        ]
        if self.soft_delete:
            cols.append(t.c[self.soft_delete].is_not(None).label("_soft_deleted"))
        return sa.select(*cols)

    def _local_row(self, row: sa.Row[Any]) -> LocalRow:
        m = row._mapping
        return LocalRow(
            key=str(m[self.key]),
            values={c: m[c] for c in self.columns},
            updated_at=m[self.updated_at],
            soft_deleted=bool(m["_soft_deleted"]) if self.soft_delete else False,
        )

    async def xid_marks(
        self, conn: AsyncConnection, previous: int | None
    ) -> tuple[int | None, int | None]:
        """PostgreSQL: (the mark for the NEXT read, `previous` if usable now); SQLite: None.

        Take it before reading: the mark must not be newer than the read's snapshot.
        """
        if conn.dialect.name != "postgresql":
            return None, None
        stmt = sa.text(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
            "FROM pg_current_snapshot() AS s"
        )
        try:
            xmin, xmax = (await conn.execute(stmt)).one()
        except exc.SQLAlchemyError as error:
            raise store_error(f"reading the transaction mark for {self.name!r}", error) from error
        if previous is not None and previous > int(xmax):
            logger.warning(
                "binding %s: the saved transaction mark %d is ahead of this server (%d): a "
                "restored or different database; reading by updated_at this time",
                self.binding.name,
                previous,
                xmax,
            )
            previous = None
        return int(xmin), previous

    def _xid_since(self, conn: AsyncConnection, mark: int) -> sa.ColumnElement[bool]:
        """`xmin` (widened to 64 bits against this statement's snapshot) >= mark."""
        table = conn.dialect.identifier_preparer.quote(self.name)
        now = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        wrap = 4294967296  # 2^32
        full = f"({now} - (({now} % {wrap} - {table}.xmin::text::bigint + {wrap}) % {wrap}))"
        return sa.literal_column(full, sa.BigInteger()) >= sa.bindparam(
            "xid_mark", mark, sa.BigInteger()
        )

    async def iter_rows(
        self,
        conn: AsyncConnection,
        *,
        since: datetime | None = None,
        since_xid: int | None = None,
        batch: int = 1000,
    ) -> AsyncIterator[list[LocalRow]]:
        """Rows with updated_at >= since (all when None), by (updated_at, key), in batches.

        `since_xid` (PostgreSQL): instead, rows written by a transaction >= that mark.
        """
        pages = self._pages(conn, self._select(), since=since, since_xid=since_xid, batch=batch)
        async for rows in pages:
            yield [self._local_row(r) for r in rows]

    async def iter_row_heads(
        self,
        conn: AsyncConnection,
        *,
        since: datetime | None = None,
        since_xid: int | None = None,
        batch: int = 1000,
    ) -> AsyncIterator[list[LocalRowHead]]:
        """`iter_rows` (same rows, order and batches) without the mapped values: a fraction of
        the cost per row; `get_rows` reads the ones that turn out to be needed."""
        t = self.table
        cols: list[sa.ColumnElement[Any]] = [t.c[self.key], t.c[self.updated_at]]
        if self.soft_delete:
            cols.append(t.c[self.soft_delete].is_not(None).label("_soft_deleted"))
        pages = self._pages(conn, sa.select(*cols), since=since, since_xid=since_xid, batch=batch)
        soft = bool(self.soft_delete)
        async for rows in pages:
            yield [LocalRowHead(str(r[0]), r[1], bool(r[2]) if soft else False) for r in rows]

    async def _pages(
        self,
        conn: AsyncConnection,
        select: sa.Select[Any],
        *,
        since: datetime | None,
        since_xid: int | None,
        batch: int,
    ) -> AsyncIterator[Sequence[sa.Row[Any]]]:
        """The keyset paging of `iter_rows` over `select` (whose columns it extends)."""
        t = self.table
        updated = t.c[self.updated_at]
        key = t.c[self.key]
        # SQLite: page on the stored text (see the module docstring); PostgreSQL: the value.
        cursor_col: sa.ColumnElement[Any] = (
            sa.type_coerce(updated, sa.Text) if conn.dialect.name == "sqlite" else updated
        )
        after: tuple[Any, Any] | None = None
        while True:
            stmt = select.add_columns(cursor_col.label("_cursor"))
            if since_xid is not None:
                stmt = stmt.where(self._xid_since(conn, since_xid))
            elif since is not None:
                stmt = stmt.where(updated >= since)
            if after is not None:
                last_cursor, last_key = after
                # (updated_at, key) > cursor: a row-value range on the (updated_at, key) index
                # on both dialects. PostgreSQL only uses an index on updated_at alone with the
                # redundant first term, which would stop SQLite using the composite range.
                bound_cursor = sa.literal(last_cursor, cursor_col.type)
                stmt = stmt.where(
                    sa.tuple_(cursor_col, key)
                    > sa.tuple_(bound_cursor, sa.literal(last_key, key.type))
                )
                if conn.dialect.name != "sqlite":
                    stmt = stmt.where(cursor_col >= bound_cursor)
            stmt = stmt.order_by(updated, key).limit(batch)
            try:
                rows = (await conn.execute(stmt)).all()
            except exc.SQLAlchemyError as error:
                raise store_error(f"reading changed rows of {self.name!r}", error) from error
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            last = rows[-1]._mapping
            after = (last["_cursor"], last[self.key])

    @wrap_errors("reading local rows")
    async def get_rows(self, conn: AsyncConnection, keys: Iterable[str]) -> dict[str, LocalRow]:
        out: dict[str, LocalRow] = {}
        key = self.table.c[self.key]
        for chunk in chunks(sorted(set(keys)), IN_CHUNK):
            for row in await conn.execute(self._select().where(key.in_(chunk))):
                local = self._local_row(row)
                out[local.key] = local
        return out

    @wrap_errors("reading the newest local updated_at")
    async def max_updated_at(self, conn: AsyncConnection) -> datetime | None:
        result = await conn.execute(sa.select(sa.func.max(self.table.c[self.updated_at])))
        value = result.scalar_one_or_none()
        return value if isinstance(value, datetime) or value is None else None

    @wrap_errors("counting local rows")
    async def count(self, conn: AsyncConnection) -> int:
        stmt = sa.select(sa.func.count()).select_from(self.table)
        return int((await conn.execute(stmt)).scalar_one())

    @wrap_errors("finding keys missing locally")
    async def missing_keys(self, conn: AsyncConnection, binding_name: str) -> list[str]:
        """Keys with a live (non-detached) row state but no local row: one anti-join."""
        rs = RowStateRow.__table__
        present = sa.exists().where(self._key_as_text() == rs.c.sync_key)
        stmt = (
            sa.select(rs.c.sync_key)
            .where(rs.c.binding == binding_name, rs.c.detached.is_(False), ~present)
            .order_by(rs.c.sync_key)
        )
        return [str(k) for k in (await conn.execute(stmt)).scalars()]

    # ------------------------------------------------------------------ writing

    @wrap_errors("writing local rows")
    async def upsert_rows(
        self,
        conn: AsyncConnection,
        rows: Sequence[tuple[str, dict[str, Any]]],
        *,
        updated_at: datetime,
    ) -> int:
        """Insert or update rows by key: only the given mapped columns, plus updated_at."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, values in rows:
            unknown = set(values) - self._mapped
            if unknown:
                raise StoreError(
                    f"writing {self.name!r}: {sorted(unknown)} are not mapped columns of "
                    f"binding {self.binding.name!r}"
                )
            params = {**values, self.key: key, self.updated_at: updated_at}
            groups.setdefault(tuple(sorted(values)), []).append(params)
        t = self.table
        for columns, params_list in groups.items():
            stmt = upsert(conn, t)
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.c[self.key]],
                set_={c: stmt.excluded[c] for c in (*columns, self.updated_at)},
            )
            for chunk in chunks(params_list, WRITE_CHUNK):
                await conn.execute(stmt, list(chunk))
        return len(rows)

    @wrap_errors("deleting local rows")
    async def delete_rows(self, conn: AsyncConnection, keys: Iterable[str]) -> int:
        deleted = 0
        key = self.table.c[self.key]
        for chunk in chunks(sorted(set(keys)), IN_CHUNK):
            deleted += (await conn.execute(sa.delete(self.table).where(key.in_(chunk)))).rowcount
        return deleted

    @wrap_errors("soft-deleting local rows")
    async def soft_delete_rows(
        self, conn: AsyncConnection, keys: Iterable[str], at: datetime
    ) -> int:
        """Set the soft-delete column (and updated_at) to `at` on rows not yet soft-deleted."""
        if not self.soft_delete:
            raise StoreError(f"binding {self.binding.name!r} has no soft_delete_column")
        t = self.table
        marked = 0
        for chunk in chunks(sorted(set(keys)), IN_CHUNK):
            stmt = (
                sa.update(t)
                .where(t.c[self.key].in_(chunk), t.c[self.soft_delete].is_(None))
                .values({self.soft_delete: at, self.updated_at: at})
            )
            marked += (await conn.execute(stmt)).rowcount
        return marked
