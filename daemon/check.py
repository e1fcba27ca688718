"""`coda-sync check`: everything that can be verified before the first sync, as a list of problems.

Owns the pre-flight checks of a loaded `Settings`, online (with the real `CodaClient`) and local
(the database), and nothing else: it never writes to Coda, and the database is only touched in
a transaction that is rolled back. Every problem is collected (not just the first), each naming
the binding and column it is about, so an operator fixes a config in one round:

    coda        token valid (GET /whoami), each doc under the API size limit (GET /docs/{id})
    binding     table exists and is a base table (upserts only work on base tables)
    columns     every mapped column id exists; its Coda format fits the configured type
                (`model.CODA_FORMATS`); `readonly` matches Coda's `calculated`
    key column  exists, is a text column, is not a formula, holds no duplicate values
                (one full listing of the table's rows)
    database    reachable; each bound table exists with the mapped columns and types
                (`BoundTable.ensure` inside a rolled-back transaction)

A bad token stops the online checks (every other request would fail the same way); the local
checks still run. Must not import `daemon.service` (check works while the daemon runs).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from daemon import normalize
from daemon.clock import SystemClock
from daemon.coda.client import ClientSettings, CodaClient
from daemon.coda.pacing import RateLimiter
from daemon.coda.schema import ColumnInfo
from daemon.config import Binding, Settings
from daemon.errors import (
    CodaAuthError,
    CodaError,
    CodaForbidden,
    CodaNotFound,
    RowError,
    StoreError,
    StoreSchemaError,
)
from daemon.model import CODA_FORMATS, ColumnSpec, ColumnType
from daemon.store.bound import BoundTable
from daemon.store.db import Store, open_store, sqlite_path

#: Attempts per request during a check: enough to ride over one 429 or 5xx, few enough that a
#: dead endpoint is reported within seconds rather than minutes.
CHECK_MAX_ATTEMPTS = 3
#: Duplicate keys named in a problem (the count is always given).
MAX_EXAMPLES = 5

Note = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that would make the sync fail or misbehave; `where` names what it is about."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _ignore(_: str) -> None:
    return None


def _col_where(binding: Binding, spec: ColumnSpec) -> str:
    return f"binding {binding.name!r}, column {spec.local!r} ({spec.coda})"


@asynccontextmanager
async def open_client(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[CodaClient]:
    """A `CodaClient` for one-off commands: the configured limits, a short retry budget."""
    clock = SystemClock()
    window = settings.coda.rate_window_seconds
    limiter = RateLimiter(
        clock,
        limits={
            "read": (settings.coda.read_limit, window),
            "write": (settings.coda.write_limit, window),
        },
    )
    client_settings = ClientSettings(
        timeout_seconds=settings.coda.timeout_seconds,
        max_attempts=min(settings.coda.max_attempts, CHECK_MAX_ATTEMPTS),
        max_retry_elapsed_seconds=min(60.0, settings.coda.timeout_seconds * 2),
        page_size=settings.coda.page_size,
    )
    async with httpx.AsyncClient(transport=transport) as http:
        yield CodaClient(
            http,
            token=settings.coda_token.get(),
            base_url=settings.coda.api_base_url,
            limiter=limiter,
            clock=clock,
            rng=random.Random(),
            settings=client_settings,
        )


async def run(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    note: Note | None = None,
) -> list[Problem]:
    """Run every check; returns the problems found (empty = all good).

    `note` receives one line per thing verified or worth knowing (rows without a key, tables
    that will be created), for the CLI to show; `transport` lets tests talk to an in-process
    emulator.
    """
    say = note or _ignore
    problems: list[Problem] = []
    async with open_client(settings, transport=transport) as client:
        problems += await _check_coda(settings, client, say)
    problems += await _check_database(settings, say)
    return problems


# --------------------------------------------------------------------------- Coda side


async def _check_coda(settings: Settings, client: CodaClient, say: Note) -> list[Problem]:
    where = f"coda ({settings.coda.api_base_url})"
    try:
        user = await client.whoami()
    except CodaAuthError:
        return [Problem(where, "the API token is invalid (401); online checks skipped")]
    except CodaForbidden:
        return [Problem(where, "the API token was refused (403); online checks skipped")]
    except CodaError as exc:
        return [Problem(where, f"cannot talk to Coda: {exc}; online checks skipped")]
    say(f"coda: token OK (user {user.name or user.login_id}, token {user.token_name or '?'})")
    problems: list[Problem] = []
    usable_docs: set[str] = set()
    for doc_id in dict.fromkeys(b.doc_id for b in settings.bindings):
        doc_where = f"doc {doc_id!r}"
        try:
            doc = await client.get_doc(doc_id)
        except CodaNotFound:
            problems.append(Problem(doc_where, "not found, or not shared with the token's owner"))
            continue
        except CodaError as exc:
            problems.append(Problem(doc_where, f"cannot read it: {exc}"))
            continue
        if doc.over_api_size_limit:
            problems.append(
                Problem(
                    doc_where,
                    f"{doc.name!r} is over Coda's API size limit: the API "
                    "cannot read its rows (make the doc smaller)",
                )
            )
            continue
        say(f"{doc_where}: {doc.name!r} OK")
        usable_docs.add(doc_id)
    for binding in settings.bindings:
        if binding.doc_id in usable_docs:
            problems += await _check_binding(binding, client, say)
    return problems


async def _check_binding(binding: Binding, client: CodaClient, say: Note) -> list[Problem]:
    where = f"binding {binding.name!r}"
    problems: list[Problem] = []
    try:
        table = await client.get_table(binding.doc_id, binding.table_id)
        columns = await client.list_columns(binding.doc_id, binding.table_id)
    except CodaNotFound:
        return [Problem(where, f"table {binding.table_id!r} not found in doc {binding.doc_id!r}")]
    except CodaError as exc:
        return [Problem(where, f"cannot read table {binding.table_id!r}: {exc}")]
    if table.table_type != "table":
        problems.append(
            Problem(
                where,
                f"table_id {binding.table_id!r} ({table.name!r}) is a {table.table_type}"
                ", not a base table: upserts only work on base tables (use the grid-… id "
                "of the table the view shows)",
            )
        )
    by_ref = {c.id: c for c in columns} | {c.name: c for c in columns if c.name}
    for spec in binding.columns:
        problems += _check_column(binding, spec, by_ref.get(spec.coda), columns)
    key_col = by_ref.get(binding.coda_key_column)
    key_where = f"{where}, key column {binding.coda_key_column!r}"
    if key_col is None:
        problems.append(Problem(key_where, "not found in the table" + _known(columns)))
    else:
        if key_col.type != "text":
            problems.append(
                Problem(
                    key_where,
                    f"{key_col.name!r} is a {key_col.type} column; "
                    "the sync key needs a plain text column",
                )
            )
        if key_col.calculated:
            problems.append(
                Problem(
                    key_where,
                    f"{key_col.name!r} is a formula column; the "
                    "daemon must be able to write keys into it",
                )
            )
        if table.table_type == "table":
            problems += await _check_keys(binding, client, key_col, say)
    if not problems:
        say(f"{where}: table {table.name!r} and {len(binding.columns)} mapped columns OK")
    return problems


def _known(columns: list[ColumnInfo]) -> str:
    listed = ", ".join(f"{c.id} {c.name!r}" for c in columns[:20])
    more = f", … ({len(columns)} in all)" if len(columns) > 20 else ""
    return f" (the table has: {listed}{more})" if columns else ""


def _check_column(
    binding: Binding, spec: ColumnSpec, col: ColumnInfo | None, columns: list[ColumnInfo]
) -> list[Problem]:
    where = _col_where(binding, spec)
    if col is None:
        return [Problem(where, "no such column in the Coda table" + _known(columns))]
    problems: list[Problem] = []
    allowed = CODA_FORMATS[spec.type]
    if col.type not in allowed:
        problems.append(
            Problem(
                where,
                f"configured type {spec.type.value!r} does not fit Coda column "
                f"{col.name!r} of type {col.type!r} (fits: {', '.join(sorted(allowed))})",
            )
        )
    elif col.type in ("select", "person", "lookup") and spec.type.is_array != col.is_array:
        many = {
            ColumnType.SELECT: "multiselect",
            ColumnType.PERSON: "people",
            ColumnType.LOOKUP: "lookups",
        }
        one = {v: k.value for k, v in many.items()}
        better = many.get(spec.type, "") if col.is_array else one.get(spec.type.value, "")
        kind = "holds several values" if col.is_array else "holds one value"
        problems.append(
            Problem(
                where,
                f"Coda column {col.name!r} {kind}; configured type "
                f"{spec.type.value!r} does not match" + (f" (use {better!r})" if better else ""),
            )
        )
    if col.calculated and not spec.readonly:
        problems.append(
            Problem(where, f"Coda column {col.name!r} is a formula: set readonly = true")
        )
    elif spec.readonly and not col.calculated:
        problems.append(
            Problem(
                where,
                f"readonly = true, but Coda column {col.name!r} is editable: local "
                "edits would never reach Coda (remove readonly)",
            )
        )
    if col.id != spec.coda:
        problems.append(
            Problem(
                where,
                f"refers to the column by name; use its id {col.id!r} (names break "
                "when someone renames the column)",
            )
        )
    return problems


async def _check_keys(
    binding: Binding, client: CodaClient, key_col: ColumnInfo, say: Note
) -> list[Problem]:
    where = f"binding {binding.name!r}, key column {binding.coda_key_column!r}"
    seen: Counter[str] = Counter()
    rows = keyless = 0
    try:
        async for page in client.list_rows(binding.doc_id, binding.table_id, value_format="rich"):
            for row in page.items:
                rows += 1
                try:
                    key = normalize.canon_key(row.values.get(key_col.id, ""))
                except RowError:
                    key = None  # not text: the engine quarantines such a row
                if key:
                    seen[key] += 1
                else:
                    keyless += 1
    except CodaError as exc:
        return [Problem(where, f"cannot list the rows: {exc}")]
    dups = [(key, n) for key, n in seen.items() if n > 1]
    say(
        f"binding {binding.name!r}: {rows} rows in Coda, {keyless} without a sync key yet "
        "(the daemon assigns them)"
    )
    if not dups:
        return []
    examples = ", ".join(f"{key!r} x{n}" for key, n in sorted(dups)[:MAX_EXAMPLES])
    return [
        Problem(
            where,
            f"{len(dups)} duplicate key value(s) in Coda ({examples}); each key must "
            "be unique: clear or fix the copies (e.g. rows duplicated by hand) first",
        )
    ]


# --------------------------------------------------------------------------- database side


async def _check_database(settings: Settings, say: Note) -> list[Problem]:
    url = settings.database.url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return _missing_sqlite(settings, path, say)
    try:
        store = await open_store(settings.database, migrate=False)
    except StoreError as exc:
        return [Problem("database", f"not reachable: {exc}")]
    try:
        say(f"database: reachable ({store.dialect})")
        if await store.current_revision() is None:
            say("database: the daemon's state tables will be created at first start")
        problems: list[Problem] = []
        for binding in settings.bindings:
            problems += await _check_table(store, binding, say)
        return problems
    finally:
        await store.close()


def _missing_sqlite(settings: Settings, path: Path, say: Note) -> list[Problem]:
    parent = path.parent
    if not parent.is_dir():
        return [Problem("database", f"directory {str(parent)!r} of the SQLite file does not exist")]
    problems = [
        Problem(
            f"binding {binding.name!r}",
            f"table {binding.local_table!r} does not exist: the SQLite file {str(path)!r} "
            "does not exist yet (and create_table is off)",
        )
        for binding in settings.bindings
        if not binding.create_table
    ]
    if not problems:
        say(
            f"database: {str(path)!r} does not exist yet; it and its tables are created at "
            "first start"
        )
    return problems


async def _check_table(store: Store, binding: Binding, say: Note) -> list[Problem]:
    where = f"binding {binding.name!r}, table {binding.local_table!r}"
    bound = BoundTable(binding)
    try:
        async with store.connect() as conn:
            exists = await conn.run_sync(lambda c: sa.inspect(c).has_table(binding.local_table))
            if not exists and binding.create_table:
                say(f"{where}: does not exist yet; created at first start (create_table)")
                return []
            try:
                await bound.ensure(conn)
            finally:
                await conn.rollback()  # NB: ensure() never leaves a trace, whatever it did
    except StoreSchemaError as exc:
        lines = [line.strip().removeprefix("- ") for line in str(exc).splitlines()[1:]]
        return [Problem(where, line) for line in lines if line] or [Problem(where, str(exc))]
    except StoreError as exc:
        return [Problem(where, str(exc))]
    say(f"{where}: columns OK")
    return []
