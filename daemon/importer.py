"""`coda-sync import`: load exported rows (Coda CSV / saved API JSON) into a binding's table.

    coda-sync import --config F --binding NAME FILE... [--dry-run] [--strict] [--year 2023]

The point is the NEXT sync cycle: after an import it must link every imported row to the Coda
row it came from, push only the rows Coda lacks, and duplicate nothing. So the importer
canonicalises exactly like the engine (`normalize.canon_from_coda`, `canon_key`, `row_hash`)
and writes the local rows together with the row states the engine would have written:

    1 columns   Coda's column list (online) or name hints -> display names, select options
    2 files     read + map headers; unmapped = warning, missing mapped column = error (exit 2)
                -- reported BEFORE anything is read from Coda's rows or the database
    3 indexes   Coda rows (rich, online) + local rows + row states: by key, row id, natural key
    4 plan      per row: canonicalise (a bad date rejects at once) -> --year filter (others
                are skipped) -> other bad cells -> people names to emails -> select options
                (another case takes Coda's spelling) and natural key present -> duplicate in
                the files? (first one wins) -> match -> local write + row state
    5 write     batches of `batch_size` rows, each in ONE transaction: local rows + row states
                (+ key write-back intents); --dry-run stops before 5, --strict too if any row
                was rejected

How a row is matched and what the next cycle then does (K = sync key):

    file row                 Coda row found          written here              next cycle
    ---------------------    ---------------------   -----------------------   -------------
    key K / natural key      has K, values equal     row K + state (base =     nothing (SKIP)
                                                     Coda values, row id)
    key K / natural key      has K, values differ    row K, no state           MERGE (base None:
                                                                               newer side wins)
    natural key / row id     has no key              row K' (new or the local  writes K' into
                                                     match) + state (base =    the Coda row, then
                                                     Coda values, row id) +    pushes what the
                                                     KEY intent                import changed
    anything                 none                    row (file key or local    PUSH (keyed upsert)
                                                     match or new uuid4)

An existing row state is never touched: that key is already synced, and an import that changes
its values is a local edit the engine pushes. A row whose natural key matches two rows (in
Coda, locally, or one of each under different keys) is rejected, never guessed. Writing takes
the binding's process lock (the daemon's): while coda-sync runs on the database, an import
refuses to write (exit 69); a dry run only reads.

Online (a client) is the safe mode. Offline the importer matches local rows only; a row
without a key that already exists in Coda then gets a new key and the first cycle pushes it
as a second Coda row. Prefer online imports, or files that carry the sync key column.

Must not be imported by the engine; it is called by the CLI (`add_import_parser`,
`import_command`) and by tests (`run_import`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

import anyio
import httpx
import sqlalchemy as sa

from daemon import normalize
from daemon.check import open_client
from daemon.clock import Clock, SystemClock, own_stamp
from daemon.coda.client import CodaClient
from daemon.coda.schema import RawRow
from daemon.config import DEFAULT_CONFIG_PATH, Binding, Settings
from daemon.config import load as load_config
from daemon.errors import (
    CodaAuthError,
    CodaError,
    CodaForbidden,
    CodaNotFound,
    ConfigError,
    LockHeldError,
    RowError,
    StoreError,
    StoreSchemaError,
)
from daemon.importer_formats import (
    HeaderMap,
    ImportInputError,
    ImportSummary,
    PeopleDirectory,
    Progress,
    Rejection,
    SourceFile,
    SourceRow,
    as_text,
    decimal_comma,
    map_headers,
    people_in,
    read_people_file,
    read_source,
)
from daemon.model import Canon, ColumnSpec, ColumnType, SyncKey
from daemon.store.bound import BoundTable
from daemon.store.db import Store, open_store, sqlite_path
from daemon.store.lock import PgLeader, acquire_lock_for_url
from daemon.store.repo import MutationKind, RowState, StateRepo

DEFAULT_BATCH_ROWS = 500
"""Rows per write transaction."""

EXIT_OK = 0
EXIT_REJECTED = 1
"""--strict and at least one row was rejected (nothing was loaded)."""
EXIT_INPUT = 2
"""A file cannot be read, or lacks a mapped column (nothing was touched)."""
EXIT_UNAVAILABLE = 69
"""Coda or the database failed, or a running coda-sync holds the binding (EX_UNAVAILABLE,
as the CLI's other commands)."""
EXIT_CONFIG = 78
"""Bad configuration or options, a token or doc/table id Coda refuses, or a local table that
does not match the mapping (EX_CONFIG)."""

_PEOPLE_TYPES = (ColumnType.PERSON, ColumnType.PEOPLE)
_SELECT_TYPES = (ColumnType.SELECT, ColumnType.MULTISELECT)
_NUMBERS = (ColumnType.NUMBER, ColumnType.PERCENT, ColumnType.CURRENCY)


# --------------------------------------------------------------------------- indexes


@dataclass(frozen=True, slots=True)
class _CodaRow:
    id: str
    key: str | None
    values: dict[str, Canon]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class _LocalRow:
    key: str
    values: dict[str, Canon]
    soft_deleted: bool


@dataclass(slots=True)
class _Planned:
    key: str
    values: dict[str, Canon]
    write: bool
    state: RowState | None = None
    key_writeback: str | None = None
    """The Coda row id to write the new sync key into (a KEY mutation intent)."""


class _Reject(Exception):
    """A row is not loaded; the message is the reason."""


class _Duplicate(Exception):
    """A row repeats an earlier one; the message says which."""


def _fold(value: Canon) -> object:
    """A canonical value as compared for natural keys: whitespace collapsed, case folded."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, tuple):
        return tuple(" ".join(v.split()).casefold() for v in value)
    return value


def _coda_time(text: str) -> datetime:
    """Coda's `updatedAt` ("2026-06-23T10:58:35.359Z") as an aware datetime (as the engine)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _new_key() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- the importer


class _Importer:
    """One import run (see the module docstring for the phases)."""

    def __init__(
        self,
        settings: Settings,
        binding: Binding,
        *,
        client: CodaClient | None,
        summary: ImportSummary,
        out: TextIO,
        progress: bool,
        year: int | None,
        date_column: str | None,
        clock: Clock,
    ) -> None:
        self.settings, self.b, self.client, self.summary = settings, binding, client, summary
        self.out, self.progress, self.year, self.clock = out, progress, year, clock
        self.columns = binding.columns
        self.readonly = binding.readonly_columns
        self.date_col = self._date_column(date_column)
        self.nk_cols = binding.natural_key
        self.names: dict[str, list[str]] = {}
        self.options: dict[str, frozenset[str]] = {}
        self.people = PeopleDirectory()
        self.coda_by_key: dict[str, _CodaRow] = {}
        self.coda_by_id: dict[str, _CodaRow] = {}
        self.coda_by_nk: dict[tuple[object, ...], list[_CodaRow]] = {}
        self.local_by_key: dict[str, _LocalRow] = {}
        self.local_by_nk: dict[tuple[object, ...], list[str]] = {}
        self.states: dict[str, RowState] = {}
        self.states_by_rid: dict[str, RowState] = {}
        self.seen_keys: dict[str, tuple[str, Mapping[str, Canon]]] = {}
        self.seen_nk: dict[tuple[object, ...], tuple[str, Mapping[str, Canon]]] = {}
        self.planned_keys: dict[str, str] = {}
        self.linked_rids: dict[str, str] = {}
        self.now = own_stamp(clock.now())
        self._reader_cache: dict[int, list[tuple[str, str, Callable[[object], Canon]]]] = {}

    def _date_column(self, chosen: str | None) -> str | None:
        dated = (ColumnType.DATE, ColumnType.DATETIME)
        if chosen is not None:
            try:
                spec = self.b.column(chosen)
            except KeyError:
                raise ConfigError(
                    f"--date-column {chosen!r} is not a column of binding {self.b.name!r}"
                ) from None
            if spec.type not in dated:
                raise ConfigError(f"--date-column {chosen!r} is a {spec.type.value} column")
            return chosen
        for local in self.b.natural_key:
            if self.b.column(local).type in dated:
                return local
        if self.year is not None:
            raise ConfigError(
                f"--year needs a date column: binding {self.b.name!r} has none in natural_key; "
                "pass --date-column"
            )
        return None

    # ------------------------------------------------------------------ 1 columns

    async def load_columns(self, hints: Mapping[str, str]) -> None:
        """Display names (Coda's column list, then hints) and select options (online)."""
        by_local = {spec.local: spec.coda for spec in self.columns}
        by_local[self.b.local_key] = self.b.coda_key_column
        for spec in self.columns:
            hinted = getattr(spec, "name", None)  # NB: if ColumnSpec ever carries a name hint
            if isinstance(hinted, str) and hinted:
                self.names.setdefault(spec.coda, []).append(hinted)
        for local, name in hints.items():
            coda = by_local.get(local, local)
            self.names.setdefault(coda, []).append(name)
        if self.client is None:
            return
        for col in await self.client.list_columns(self.b.doc_id, self.b.table_id):
            self.names.setdefault(col.id, []).insert(0, col.name)
            if col.options:
                self.options[col.id] = frozenset(o.strip() for o in col.options)

    # ------------------------------------------------------------------ 2 files

    def map_files(self, sources: Sequence[SourceFile]) -> list[HeaderMap]:
        """Map every file's headers; print the report; raise if any mapped column is missing."""
        maps: list[HeaderMap] = []
        errors: list[str] = []
        for src in sources:
            hmap = map_headers(src.headers, self.b, self.names)
            maps.append(hmap)
            sep = f", delimiter {src.delimiter!r}" if src.delimiter else ""
            key = f"sync key from {hmap.key_header!r}" if hmap.key_header else "no sync key column"
            self.out.write(
                f"{src.name}: {src.kind.upper()}{sep}, {len(src.rows):,} rows, "
                f"{len(hmap.columns)} mapped columns, {key}\n"
            )
            if hmap.unmapped:
                shown = ", ".join(repr(h) for h in hmap.unmapped)
                self.summary.warnings.append(f"{src.name}: column(s) not mapped, ignored: {shown}")
            for spec in hmap.missing:
                if spec.readonly:
                    self.out.write(f"  (readonly column {spec.local!r} absent: taken from Coda)\n")
            errors.extend(f"{src.name}: {e}" for e in hmap.errors)
        for w in self.summary.warnings:
            self.out.write(f"warning: {w}\n")
        if errors:
            hint = "" if self.client else " (offline: map display names with --column-name)"
            raise ImportInputError("\n".join(errors) + hint)
        return maps

    def harvest_people(self, sources: Sequence[SourceFile], maps: Sequence[HeaderMap]) -> None:
        """Rich Person objects in the files feed the name -> email directory."""
        for src, hmap in zip(sources, maps, strict=True):
            headers = [h for h, spec in hmap.columns.items() if spec.type in _PEOPLE_TYPES]
            if not headers or src.kind != "json":
                continue
            for row in src.rows:
                for h in headers:
                    self.people.add_all(people_in(row.cells.get(h)))

    # ------------------------------------------------------------------ 3 indexes

    async def load_coda(self) -> None:
        """Every Coda row (rich), canonicalised like the engine, indexed three ways."""
        if self.client is None:
            return
        unreadable = 0
        pages = self.client.list_rows(
            self.b.doc_id,
            self.b.table_id,
            value_format="rich",
            limit=self.settings.coda.page_size,
        )
        async for page in pages:
            for raw in page.items:
                row = self._coda_row(raw)
                if row is None:
                    unreadable += 1
                    continue
                self.coda_by_id[row.id] = row
                if row.key is not None:
                    self.coda_by_key.setdefault(row.key, row)
                nk = self._nk(row.values)
                if nk is not None:
                    self.coda_by_nk.setdefault(nk, []).append(row)
        if unreadable:
            self.summary.warnings.append(
                f"{unreadable} Coda row(s) could not be read (the sync quarantines them); "
                "they were not used for matching"
            )

    def _coda_row(self, raw: RawRow) -> _CodaRow | None:
        for spec in self.columns:
            if spec.type in _PEOPLE_TYPES:
                self.people.add_all(people_in(raw.values.get(spec.coda)))
        try:
            key = normalize.canon_key(raw.values.get(self.b.coda_key_column, ""))
        except RowError:
            return None
        values, errors = normalize.canon_row_from_coda(self.columns, raw.values)
        if errors:
            return None
        return _CodaRow(raw.id, key, values, _coda_time(raw.updated_at))

    async def load_local(self, store: Store, repo: StateRepo, bound: BoundTable) -> None:
        """Every local row (canonical) and every row state of the binding."""
        async with store.connect() as conn:
            unreadable = 0
            async for batch in bound.iter_rows(conn, batch=2000):
                for row in batch:
                    values, errors = normalize.canon_row_from_sql(self.columns, row.values)
                    if errors:
                        unreadable += 1
                        continue
                    self.local_by_key[row.key] = _LocalRow(row.key, values, row.soft_deleted)
                    nk = self._nk(values)
                    if nk is not None and not row.soft_deleted:
                        self.local_by_nk.setdefault(nk, []).append(row.key)
            async for states in repo.iter_row_states(conn, self.b.name):
                for s in states:
                    self.states[s.key] = s
                    if s.coda_row_id is not None:
                        self.states_by_rid[s.coda_row_id] = s
        if unreadable:
            self.summary.warnings.append(
                f"{unreadable} local row(s) could not be read; they were not used for matching"
            )

    def _nk(self, values: Mapping[str, Canon]) -> tuple[object, ...] | None:
        if not self.nk_cols:
            return None
        parts = tuple(_fold(values.get(c)) for c in self.nk_cols)
        return None if any(p is None for p in parts) else parts

    # ------------------------------------------------------------------ 4 plan

    def plan(self, sources: Sequence[SourceFile], maps: Sequence[HeaderMap]) -> list[_Planned]:
        """Decide every row; counts go to the summary."""
        total = sum(len(src.rows) for src in sources)
        bar = Progress(self.out, enabled=self.progress, total=total, what="checking")
        planned: list[_Planned] = []
        s = self.summary
        for src, hmap in zip(sources, maps, strict=True):
            for row in src.rows:
                s.read += 1
                try:
                    item = self._plan_row(row, hmap)
                except _Reject as exc:
                    s.rejected += 1
                    s.rejections.append(Rejection(row.where, str(exc)))
                except _Duplicate as exc:
                    s.duplicates += 1
                    s.duplicate_notes.append(Rejection(row.where, str(exc)))
                else:
                    if item is not None:
                        planned.append(item)
                bar.update(s.read)
        bar.finish()
        return planned

    def _plan_row(self, row: SourceRow, hmap: HeaderMap) -> _Planned | None:
        if row.problem:
            raise _Reject(row.problem)
        key, values, present = self._canon(row, hmap)
        if self.year is not None and not self._in_year(values):
            self.summary.skipped += 1
            return None
        self._check(values, key)
        nk = self._nk(values)
        self._dedup(row, key, nk, values)
        coda = self._find_coda(row, key, nk)
        target = self._target(key, nk, coda)
        first = self.planned_keys.get(target)
        if first is not None:
            raise _Duplicate(f"the same row as {first} (both match sync key {target})")
        self.planned_keys[target] = row.where
        return self._decide(target, values, present, coda)

    def _canon(
        self, row: SourceRow, hmap: HeaderMap
    ) -> tuple[str | None, dict[str, Canon], frozenset[str]]:
        """Cells -> (sync key, canonical values, local columns present); rejects bad cells."""
        key = None
        if hmap.key_header is not None:
            try:
                key = normalize.canon_key(row.cells.get(hmap.key_header, ""))
            except RowError as exc:
                raise _Reject(f"sync key: {exc.reason}") from None
        values: dict[str, Canon] = {}
        errors: dict[str, str] = {}
        for header, local, read in self._readers(hmap):
            try:
                values[local] = read(row.cells.get(header, ""))
            except RowError as exc:
                errors[local] = f"{header} ({local}): {exc.reason}"
        if self.date_col is not None and self.date_col in errors:
            raise _Reject(errors[self.date_col])  # before --year: its year is unknown
        if self.year is not None and not self._in_year(values):
            return key, values, frozenset(values)  # skipped: other errors do not matter
        if errors:
            raise _Reject("; ".join(errors.values()))
        self._resolve_people(values, hmap)
        return key, values, frozenset(values)

    def _readers(self, hmap: HeaderMap) -> list[tuple[str, str, Callable[[object], Canon]]]:
        """(header, local column, reader) per mapped header: `normalize`'s Coda-side reader
        (what `canon_from_coda` calls), looked up once per file instead of once per cell."""
        found = self._reader_cache.get(id(hmap))
        if found is None:
            found = []
            for h, spec in hmap.columns.items():
                read = normalize.converters_for(spec).from_coda
                found.append(
                    (h, spec.local, decimal_comma(read) if spec.type in _NUMBERS else read)
                )
            self._reader_cache[id(hmap)] = found
        return found

    def _in_year(self, values: Mapping[str, Canon]) -> bool:
        assert self.date_col is not None
        day = values.get(self.date_col)
        return isinstance(day, str) and day[:4] == f"{self.year:04d}"

    def _resolve_people(self, values: dict[str, Canon], hmap: HeaderMap) -> None:
        """People printed as names -> emails (canonical person = lower-cased email)."""
        specs = [s for s in hmap.columns.values() if s.type in _PEOPLE_TYPES]
        if not specs:
            return
        emails: set[str] = set()
        for spec in hmap.columns.values():
            if spec.type in (*_PEOPLE_TYPES, ColumnType.EMAIL):
                v = values.get(spec.local)
                items = v if isinstance(v, tuple) else (v,)
                emails.update(i.lower() for i in items if isinstance(i, str) and "@" in i)
        for spec in specs:
            value = values.get(spec.local)
            try:
                if isinstance(value, str) and "@" not in value:
                    values[spec.local] = self.people.resolve(value, emails)
                elif isinstance(value, tuple) and any("@" not in v for v in value):
                    resolved = {v if "@" in v else self.people.resolve(v, emails) for v in value}
                    values[spec.local] = tuple(sorted(resolved))
            except LookupError as exc:
                raise _Reject(f"{spec.local}: {exc.args[0]}") from None

    def _check(self, values: dict[str, Canon], key: str | None) -> None:
        """Select options (when Coda told us them) and, without a key, the natural key.

        An option spelt in another case ("спикер") takes the option's spelling ("Спикер"),
        as Coda does when it parses a write; anything else not an option is refused.
        """
        problems: list[str] = []
        for spec in self.columns:
            allowed = self.options.get(spec.coda)
            value = values.get(spec.local)
            if allowed is None or value is None or spec.type not in _SELECT_TYPES:
                continue
            items = value if isinstance(value, tuple) else (str(value),)
            fixed = [self._option(spec, item) for item in items]
            problems.extend(
                _unknown_option(spec, i) for i, f in zip(items, fixed, strict=True) if f is None
            )
            if isinstance(value, tuple):
                values[spec.local] = tuple(sorted({f for f in fixed if f is not None}))
            else:
                values[spec.local] = fixed[0]
        if key is None:
            empty = [c for c in self.nk_cols if values.get(c) is None]
            if empty:
                problems.append(
                    f"natural key column(s) {', '.join(empty)} empty and no sync key: "
                    "the row cannot be identified"
                )
        if problems:
            raise _Reject("; ".join(problems))

    def _option(self, spec: ColumnSpec, item: str) -> str | None:
        """The option `item` names (exactly, else by case), or None."""
        allowed = self.options[spec.coda]
        if item in allowed:
            return item
        folded = [o for o in allowed if o.casefold() == item.casefold()]
        return folded[0] if len(folded) == 1 else None

    def _dedup(
        self,
        row: SourceRow,
        key: str | None,
        nk: tuple[object, ...] | None,
        values: Mapping[str, Canon],
    ) -> None:
        """The first occurrence of a sync key or natural key wins; later ones are duplicates
        (their differing columns are named, so nobody loses an edit silently)."""
        first = self.seen_keys.get(key) if key is not None else None
        what = f"sync key {key}"
        if first is None and nk is not None:
            first, what = self.seen_nk.get(nk), "the natural key"
        if first is not None:
            where, kept = first
            differ = [
                c.local
                for c in self.columns
                if not c.readonly and kept.get(c.local) != values.get(c.local)
            ]
            note = f"; ignored although its {', '.join(differ)} differ" if differ else ""
            raise _Duplicate(f"repeats {what} of {where}{note}")
        if key is not None:
            self.seen_keys[key] = (row.where, values)
        if nk is not None:
            self.seen_nk[nk] = (row.where, values)

    def _find_coda(
        self, row: SourceRow, key: str | None, nk: tuple[object, ...] | None
    ) -> _CodaRow | None:
        """The Coda row this file row is: by sync key, else by row id, else by natural key."""
        by_id = self.coda_by_id.get(row.row_id) if row.row_id else None
        if key is not None:
            found = self.coda_by_key.get(key)
            if found is None and by_id is not None:
                if by_id.key is not None and by_id.key != key:
                    raise _Reject(
                        f"Coda row {by_id.id} has sync key {by_id.key}, the file says {key}"
                    )
                found = by_id
            if found is None and nk is not None and key not in self.local_by_key:
                # A new key for a row people typed into Coda without one: that row is it.
                keyless = [h for h in self.coda_by_nk.get(nk, []) if h.key is None]
                if len(keyless) == 1 and keyless[0].id not in self.states_by_rid:
                    found = keyless[0]
            return found
        if by_id is not None:
            return by_id
        hits = self.coda_by_nk.get(nk, []) if nk is not None else []
        if len(hits) > 1:
            ids = ", ".join(h.id for h in hits[:5])
            raise _Reject(
                f"the natural key matches {len(hits)} Coda rows ({ids}): remove the duplicates "
                "in Coda, or give the sync key"
            )
        return hits[0] if hits else None

    def _local_by_nk(self, nk: tuple[object, ...] | None) -> str | None:
        keys = self.local_by_nk.get(nk, []) if nk is not None else []
        if len(keys) > 1:
            raise _Reject(
                f"the natural key matches {len(keys)} local rows ({', '.join(keys[:5])}): "
                "give the sync key"
            )
        return keys[0] if keys else None

    def _target(self, key: str | None, nk: tuple[object, ...] | None, coda: _CodaRow | None) -> str:
        """The sync key the row is loaded under (see the module docstring's table)."""
        if key is not None:
            if coda is None and key not in self.local_by_key:
                other = self._local_by_nk(nk) or _only_key(self.coda_by_nk.get(nk or ()))
                if other is not None and other != key:
                    raise _Reject(
                        f"sync key {key} is new, but the natural key matches the existing row "
                        f"{other}: drop the key to match it, or correct it"
                    )
            return key
        local = self._local_by_nk(nk)
        if coda is not None and coda.key is not None:
            if local is not None and local != coda.key:
                raise _Reject(
                    f"the natural key matches local row {local} and Coda row {coda.id} with "
                    f"sync key {coda.key}: two identities for one row, resolve it first"
                )
            return coda.key
        if coda is not None:  # a Coda row without a key (created there by people)
            known = self.states_by_rid.get(coda.id)
            if known is not None:
                return known.key
            if coda.id in self.linked_rids:
                return self.linked_rids[coda.id]
            st = self.states.get(local) if local is not None else None
            if st is not None and st.coda_row_id not in (None, coda.id):
                raise _Reject(
                    f"the natural key matches local row {local}, synced with Coda row "
                    f"{st.coda_row_id}, and Coda row {coda.id}: resolve the duplicate first"
                )
        return local if local is not None else _new_key()

    def _decide(
        self,
        target: str,
        values: dict[str, Canon],
        present: frozenset[str],
        coda: _CodaRow | None,
    ) -> _Planned | None:
        """Local write + state for one matched row; counts it."""
        s = self.summary
        local = self.local_by_key.get(target)
        if local is not None and local.soft_deleted:
            raise _Reject(f"local row {target} is soft-deleted: restore it in the application")
        for col in self.readonly:  # Coda computes these: take Coda's, else keep what we have
            if coda is not None:
                values[col] = coda.values.get(col)
            elif col not in present:
                values[col] = local.values.get(col) if local is not None else None
        full = {c.local: values.get(c.local) for c in self.columns}
        write = local is None or local.values != full
        if local is None:
            s.inserted += 1
        elif write:
            s.updated += 1
        else:
            s.unchanged += 1
        state, writeback = None, None
        if coda is not None:
            s.matched += 1
            if target not in self.states:
                state, writeback = self._link(target, full, coda)
        if writeback is not None:
            s.keys_linked += 1
            self.linked_rids[writeback] = target
        if not write and state is None:
            return None
        return _Planned(target, full, write, state, writeback)

    def _link(
        self, target: str, values: Mapping[str, Canon], coda: _CodaRow
    ) -> tuple[RowState | None, str | None]:
        """The row state that makes the next cycle see `target` as Coda row `coda`.

        Keyed + equal: base = Coda's values (in sync). Keyed + different: no state (base None:
        the first cycle merges). Keyless: a state is the only link (the engine looks keyless
        rows up by row id), so base = Coda's values as read now, which makes the import a
        local edit on top of them, plus a KEY intent so the next cycle writes the key.
        """
        equal = self._writable(values) == self._writable(coda.values)
        if coda.key is not None and not equal:
            return None, None
        base = dict(coda.values)
        state = RowState(
            binding=self.b.name,
            key=SyncKey(target),
            base=base,
            base_hash=normalize.row_hash(base, exclude=self.readonly),
            synced_at=self.now,
            coda_row_id=coda.id,
            remote_updated_at=coda.updated_at,
            local_updated_at=self.now,
        )
        return state, (coda.id if coda.key is None else None)

    def _writable(self, values: Mapping[str, Canon]) -> dict[str, Canon]:
        return {c.local: values.get(c.local) for c in self.columns if not c.readonly}

    # ------------------------------------------------------------------ 5 write

    async def write(
        self,
        store: Store,
        repo: StateRepo,
        bound: BoundTable,
        planned: Sequence[_Planned],
        batch_size: int,
    ) -> None:
        """Local rows + row states (+ KEY intents), one transaction per batch."""
        bar = Progress(self.out, enabled=self.progress, total=len(planned), what="writing")
        writers = [(c.local, normalize.converters_for(c).to_sql) for c in self.columns]
        done = 0
        for start in range(0, len(planned), batch_size):
            batch = planned[start : start + batch_size]
            rows = [
                (p.key, {local: to_sql(p.values.get(local)) for local, to_sql in writers})
                for p in batch
                if p.write
            ]
            async with store.begin() as conn:
                if rows:
                    await bound.upsert_rows(conn, rows, updated_at=self.now)
                states: list[RowState] = []
                for p in batch:
                    state = p.state
                    if state is not None and p.key_writeback is not None:
                        mid = await repo.create_mutation(
                            conn,
                            binding=self.b.name,
                            kind=MutationKind.KEY,
                            at=self.now,
                            row_count=1,
                            payload={"key": p.key, "row_id": p.key_writeback},
                        )
                        state = replace(state, pending_mutation_id=mid)
                    if state is not None:
                        states.append(state)
                await repo.put_row_states(conn, states)
            done += len(batch)
            self.summary.written = True
            bar.update(done)
        bar.finish()


def _only_key(rows: Sequence[_CodaRow] | None) -> str | None:
    return rows[0].key if rows and len(rows) == 1 else None


def _unknown_option(spec: ColumnSpec, item: str) -> str:
    return f"{spec.local}: {as_text(item)!r} is not an option of the Coda column"


# --------------------------------------------------------------------------- the store


@asynccontextmanager
async def _open_store(
    settings: Settings, store: Store | None, *, dry_run: bool
) -> AsyncIterator[Store | None]:
    """The store to use; None on a dry run against a database that does not exist yet."""
    if store is not None:
        yield store
        return
    url = settings.database.url
    if dry_run:
        path = sqlite_path(url)
        if path is not None and not path.exists():
            yield None  # NB: opening would create the file; a dry run writes nothing
            return
    opened = await open_store(settings.database, migrate=not dry_run)
    try:
        yield opened
    finally:
        await opened.close()


@asynccontextmanager
async def _binding_lock(settings: Settings, binding: Binding) -> AsyncIterator[None]:
    """Refuse to write while a coda-sync process syncs this binding (it would race us)."""
    url = settings.database.url
    if url.startswith("postgresql"):
        leader = PgLeader(url, binding.name, lease_seconds=settings.database.lease_seconds)
        try:
            if not await leader.try_acquire():
                raise LockHeldError(
                    f"another coda-sync process syncs binding {binding.name!r}; stop it first"
                )
            yield
        finally:
            await leader.close()
        return
    with acquire_lock_for_url(url):
        yield


async def _readable(store: Store, bound: BoundTable) -> bool:
    """Dry run: are the bound table and the state tables there to be read?"""

    def has(conn: sa.Connection) -> bool:
        return sa.inspect(conn).has_table(bound.name)

    async with store.connect() as conn:
        table = await conn.run_sync(has)
    return table and await store.current_revision() is not None


# --------------------------------------------------------------------------- entry points


async def run_import(
    settings: Settings,
    binding_name: str,
    files: Sequence[str | Path],
    *,
    dry_run: bool = False,
    strict: bool = False,
    year: int | None = None,
    client: CodaClient | None = None,
    out: TextIO | None = None,
    progress: bool = False,
    date_column: str | None = None,
    column_names: Mapping[str, str] | None = None,
    people_files: Sequence[str | Path] = (),
    batch_size: int = DEFAULT_BATCH_ROWS,
    store: Store | None = None,
    clock: Clock | None = None,
) -> ImportSummary:
    """Import `files` into `binding_name`'s table; print progress and the summary to `out`.

    `client` None = offline (local matching only). `column_names` maps a local column name
    (or the local key) to the display name a CSV header uses, for offline imports.
    `people_files` are CSVs of name, email. `store`/`clock` are injected by tests.
    Raises `ImportInputError` (unreadable file, missing mapped column: nothing touched),
    `ConfigError`, `CodaError`, `StoreError`.
    """
    out = out or sys.stdout
    started = time.monotonic()
    binding = settings.binding(binding_name)
    summary = ImportSummary(
        binding.name, dry_run=dry_run, strict=strict, online=client is not None, year=year
    )
    imp = _Importer(
        settings,
        binding,
        client=client,
        summary=summary,
        out=out,
        progress=progress,
        year=year,
        date_column=date_column,
        clock=clock or SystemClock(),
    )
    await imp.load_columns(column_names or {})
    sources = [read_source(f) for f in files]
    summary.files = len(sources)
    maps = imp.map_files(sources)
    for pf in people_files:
        imp.people.add_all(read_people_file(pf))
    imp.harvest_people(sources, maps)
    await imp.load_coda()
    repo, bound = StateRepo(), BoundTable(binding)
    async with _open_store(settings, store, dry_run=dry_run) as db:
        if dry_run:
            if db is not None and await _readable(db, bound):
                await imp.load_local(db, repo, bound)
            planned = imp.plan(sources, maps)
        else:
            assert db is not None
            async with _binding_lock(settings, binding):
                async with db.begin() as conn:
                    await bound.ensure(conn)
                await imp.load_local(db, repo, bound)
                planned = imp.plan(sources, maps)
                if not (strict and summary.rejected):
                    await imp.write(db, repo, bound, planned, max(1, batch_size))
    summary.seconds = time.monotonic() - started
    out.write(summary.render() + "\n")
    out.flush()
    return summary


def add_import_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `import` to the CLI's subcommands; it runs `import_command` (set as `func`)."""
    p = subparsers.add_parser(
        "import",
        help="load exported rows (Coda CSV or saved API JSON) into a binding's table",
        description=(
            "Load rows exported from Coda (CSV with display-name headers, or JSON saved from "
            "the row listing) into the local table, linked to their Coda rows so the next "
            "sync neither duplicates nor re-sends them. Exit codes: 0 ok (also with rejected "
            "rows), 1 rejected rows with --strict, 2 unreadable file or missing column, "
            "69 Coda/database unavailable or coda-sync running, 78 configuration error."
        ),
    )
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"config file (default: $CODA_SYNC_CONFIG or {DEFAULT_CONFIG_PATH})",
    )
    p.add_argument("--binding", help="binding name (optional when only one is configured)")
    p.add_argument("files", nargs="+", metavar="FILE", help="CSV or JSON export files")
    p.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    p.add_argument(
        "--strict", action="store_true", help="load nothing if any row is rejected (exit 1)"
    )
    p.add_argument("--year", type=int, help="only rows whose date falls in this year")
    p.add_argument(
        "--date-column",
        help="local date column for --year (default: the first date column of natural_key)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not consult Coda (match local rows only; see the duplicate risk)",
    )
    p.add_argument(
        "--column-name",
        action="append",
        default=[],
        metavar="LOCAL=NAME",
        help="a header name for a column (repeatable; offline CSV imports)",
    )
    p.add_argument(
        "--people",
        action="append",
        default=[],
        metavar="FILE",
        help="CSV of name,email to resolve people given by name (repeatable)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_ROWS,
        help=f"rows per transaction (default {DEFAULT_BATCH_ROWS})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=import_command)
    return p


def import_command(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Run `coda-sync import` from parsed arguments; returns the exit code.

    `transport` (an httpx transport) lets tests talk to an in-process emulator.
    """
    out = out or sys.stdout
    err = sys.stderr if out is sys.stdout else out
    path = getattr(args, "config", None) or os.environ.get("CODA_SYNC_CONFIG")
    try:
        settings = load_config(path or DEFAULT_CONFIG_PATH)
        binding = _pick_binding(settings, args.binding)
        hints = _parse_hints(args.column_name)
        if args.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        return anyio.run(_command, settings, binding, args, hints, out, transport)
    except ConfigError as exc:
        err.write(f"coda-sync import: configuration error: {exc}\n")
        return EXIT_CONFIG
    except ImportInputError as exc:
        err.write(f"coda-sync import: {exc}\nnothing was imported\n")
        return EXIT_INPUT
    except StoreSchemaError as exc:
        err.write(f"coda-sync import: the local table does not match the mapping: {exc}\n")
        return EXIT_CONFIG
    except LockHeldError as exc:
        err.write(f"coda-sync import: {exc}\n(stop the daemon while importing, then restart)\n")
        return EXIT_UNAVAILABLE
    except (CodaAuthError, CodaForbidden, CodaNotFound) as exc:
        err.write(f"coda-sync import: Coda refused the configured token, doc or table: {exc}\n")
        return EXIT_CONFIG
    except (CodaError, StoreError) as exc:
        err.write(f"coda-sync import: {exc}\nthe import stopped; running it again is safe\n")
        return EXIT_UNAVAILABLE


async def _command(
    settings: Settings,
    binding: str,
    args: argparse.Namespace,
    hints: dict[str, str],
    out: TextIO,
    transport: httpx.AsyncBaseTransport | None,
) -> int:
    async def run(client: CodaClient | None) -> int:
        summary = await run_import(
            settings,
            binding,
            args.files,
            client=client,
            dry_run=args.dry_run,
            strict=args.strict,
            year=args.year,
            out=out,
            progress=not args.no_progress,
            date_column=args.date_column,
            column_names=hints,
            people_files=args.people,
            batch_size=args.batch_size,
        )
        return summary.exit_code

    if args.offline:
        return await run(None)
    async with open_client(settings, transport=transport) as client:
        return await run(client)


def _pick_binding(settings: Settings, name: str | None) -> str:
    if name:
        return settings.binding(name).name
    if len(settings.bindings) == 1:
        return settings.bindings[0].name
    known = ", ".join(b.name for b in settings.bindings)
    raise ConfigError(f"several bindings are configured ({known}): choose one with --binding")


def _parse_hints(items: Sequence[str]) -> dict[str, str]:
    hints: dict[str, str] = {}
    for item in items:
        local, sep, name = item.partition("=")
        if not sep or not local.strip() or not name.strip():
            raise ConfigError(f"--column-name {item!r}: expected LOCAL=NAME")
        hints[local.strip()] = name.strip()
    return hints


__all__ = [
    "EXIT_CONFIG",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNAVAILABLE",
    "ImportInputError",
    "ImportSummary",
    "Rejection",
    "add_import_parser",
    "import_command",
    "run_import",
]
