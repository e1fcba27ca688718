"""`StateRepo`: typed, batch-oriented operations on the state tables.

Every method takes the caller's `AsyncConnection`, so the engine decides the transaction: a
pull writes the local row (`bound.BoundTable`) and advances the row state in ONE transaction.
Nothing here commits. Work per cycle is done in batches (chunked IN lists, bulk upserts,
keyset pagination), never one query per row. Errors leave as `StoreError` naming the
operation. Must not import httpx.

This module has binding state, row state and mutations; the conflict journal, delete audit,
quarantine and runs are in `journal.JournalOps`, which `StateRepo` inherits, so callers hold
one object. The data types are in `records` and re-exported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.model import SyncKey
from daemon.store.db import IN_CHUNK, WRITE_CHUNK, chunks, store_error, upsert, wrap_errors
from daemon.store.journal import JournalOps
from daemon.store.records import (
    DEFAULT_KEEP_RUNS,
    OPEN_MUTATION_STATES,
    BindingState,
    ConflictRecord,
    DeleteAudit,
    DeleteRecord,
    Mutation,
    MutationKind,
    MutationState,
    QuarantineEntry,
    QuarantineItem,
    RowState,
    RowStateHead,
    RunRecord,
    canon_from_json,
    canon_to_json,
    values_from_json,
    values_to_json,
)
from daemon.store.tables import BindingStateRow, MutationRow, RowStateRow, table_of

__all__ = [
    "DEFAULT_KEEP_RUNS",
    "IN_CHUNK",
    "OPEN_MUTATION_STATES",
    "WRITE_CHUNK",
    "BindingState",
    "ConflictRecord",
    "DeleteAudit",
    "DeleteRecord",
    "Mutation",
    "MutationKind",
    "MutationState",
    "QuarantineEntry",
    "QuarantineItem",
    "RowState",
    "RowStateHead",
    "RunRecord",
    "StateRepo",
    "canon_from_json",
    "canon_to_json",
    "chunks",
    "upsert",
    "values_from_json",
    "values_to_json",
]

_BINDING = table_of(BindingStateRow)
_ROW = table_of(RowStateRow)
_MUT = table_of(MutationRow)


def _row_state_params(state: RowState) -> dict[str, Any]:
    return {
        "binding": state.binding,
        "sync_key": state.key,
        "coda_row_id": state.coda_row_id,
        "base": values_to_json(state.base),
        "base_hash": state.base_hash,
        "remote_updated_at": state.remote_updated_at,
        "local_updated_at": state.local_updated_at,
        "detached": state.detached,
        "pending_mutation_id": state.pending_mutation_id,
        "pending_values": (
            None if state.pending_values is None else values_to_json(state.pending_values)
        ),
        "fence_until": state.fence_until,
        "recheck": state.recheck,
        "synced_at": state.synced_at,
    }


def _row_state(row: sa.Row[Any]) -> RowState:
    m = row._mapping
    return RowState(
        binding=m["binding"],
        key=SyncKey(m["sync_key"]),
        coda_row_id=m["coda_row_id"],
        base=values_from_json(m["base"]),
        base_hash=m["base_hash"],
        remote_updated_at=m["remote_updated_at"],
        local_updated_at=m["local_updated_at"],
        detached=bool(m["detached"]),
        pending_mutation_id=m["pending_mutation_id"],
        pending_values=(
            None if m["pending_values"] is None else values_from_json(m["pending_values"])
        ),
        fence_until=m["fence_until"],
        recheck=bool(m["recheck"]),
        synced_at=m["synced_at"],
    )


_HEAD_COLUMNS = (
    _ROW.c.sync_key,
    _ROW.c.coda_row_id,
    _ROW.c.remote_updated_at,
    _ROW.c.local_updated_at,
    _ROW.c.synced_at,
    _ROW.c.detached,
    _ROW.c.pending_mutation_id,
    _ROW.c.fence_until,
    _ROW.c.recheck,
)
"""What `RowStateHead` holds, in its field order (no JSON column: nothing to decode)."""


def _row_state_head(row: sa.Row[Any]) -> RowStateHead:
    key, row_id, remote_at, local_at, synced_at, detached, pending, fence, recheck = row
    return RowStateHead(
        SyncKey(key),
        row_id,
        remote_at,
        local_at,
        synced_at,
        bool(detached),
        pending,
        fence,
        bool(recheck),
    )


def _mutation(row: sa.Row[Any]) -> Mutation:
    m = row._mapping
    return Mutation(
        id=m["id"],
        binding=m["binding"],
        kind=MutationKind(m["kind"]),
        state=MutationState(m["state"]),
        created_at=m["created_at"],
        request_id=m["request_id"],
        sent_at=m["sent_at"],
        confirmed_at=m["confirmed_at"],
        attempts=m["attempts"],
        row_count=m["row_count"],
        payload=m["payload"],
    )


class StateRepo(JournalOps):
    """Operations on the state tables. Stateless: one instance can serve every binding."""

    # ------------------------------------------------------------------ binding state

    @wrap_errors("reading the binding state")
    async def get_binding_state(self, conn: AsyncConnection, binding: str) -> BindingState | None:
        row = (await conn.execute(sa.select(_BINDING).where(_BINDING.c.binding == binding))).first()
        if row is None:
            return None
        return BindingState(**row._asdict())

    @wrap_errors("saving the binding state")
    async def save_binding_state(self, conn: AsyncConnection, state: BindingState) -> None:
        params = {
            "binding": state.binding,
            "sync_token": state.sync_token,
            "remote_watermark": state.remote_watermark,
            "local_watermark": state.local_watermark,
            "last_full_scan_at": state.last_full_scan_at,
            "last_local_full_scan_at": state.last_local_full_scan_at,
            "schema_fingerprint": state.schema_fingerprint,
            "updated_at": state.updated_at,
            "local_xid_mark": state.local_xid_mark,
        }
        stmt = upsert(conn, _BINDING).values(params)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_BINDING.c.binding],
            set_={k: stmt.excluded[k] for k in params if k != "binding"},
        )
        await conn.execute(stmt)

    # ------------------------------------------------------------------ row state: read

    @wrap_errors("reading row states")
    async def get_row_states(
        self, conn: AsyncConnection, binding: str, keys: Iterable[str]
    ) -> dict[SyncKey, RowState]:
        out: dict[SyncKey, RowState] = {}
        for chunk in chunks(sorted(set(keys)), IN_CHUNK):
            stmt = sa.select(_ROW).where(_ROW.c.binding == binding, _ROW.c.sync_key.in_(chunk))
            for row in await conn.execute(stmt):
                state = _row_state(row)
                out[state.key] = state
        return out

    @wrap_errors("reading row states by Coda row id")
    async def get_row_states_by_coda_ids(
        self, conn: AsyncConnection, binding: str, coda_row_ids: Iterable[str]
    ) -> dict[str, RowState]:
        out: dict[str, RowState] = {}
        for chunk in chunks(sorted(set(coda_row_ids)), IN_CHUNK):
            stmt = sa.select(_ROW).where(_ROW.c.binding == binding, _ROW.c.coda_row_id.in_(chunk))
            for row in await conn.execute(stmt):
                state = _row_state(row)
                assert state.coda_row_id is not None
                out[state.coda_row_id] = state
        return out

    @wrap_errors("reading row state heads")
    async def get_row_state_heads(
        self, conn: AsyncConnection, binding: str, keys: Iterable[str]
    ) -> dict[SyncKey, RowStateHead]:
        """Like `get_row_states` without the JSON columns: several times cheaper per row."""
        out: dict[SyncKey, RowStateHead] = {}
        for chunk in chunks(sorted(set(keys)), IN_CHUNK):
            stmt = sa.select(*_HEAD_COLUMNS).where(
                _ROW.c.binding == binding, _ROW.c.sync_key.in_(chunk)
            )
            for row in await conn.execute(stmt):
                head = _row_state_head(row)
                out[head.key] = head
        return out

    async def iter_row_refs(
        self,
        conn: AsyncConnection,
        binding: str,
        *,
        batch: int = 5000,
        include_detached: bool = True,
    ) -> AsyncIterator[list[tuple[SyncKey, str | None]]]:
        """(sync key, Coda row id) of the row states `iter_row_states` yields, in the same
        order: two short columns, nothing to decode (a full scan looks for unlisted keys)."""
        columns = (_ROW.c.sync_key, _ROW.c.coda_row_id)
        pages = _keyset_pages(conn, columns, binding, batch, include_detached, "row state keys")
        async for rows in pages:
            yield [(SyncKey(key), row_id) for key, row_id in rows]

    async def iter_row_states(
        self,
        conn: AsyncConnection,
        binding: str,
        *,
        batch: int = 2000,
        include_detached: bool = True,
    ) -> AsyncIterator[list[RowState]]:
        """Every row state of `binding` in key order, `batch` at a time (keyset pagination)."""
        pages = _keyset_pages(conn, tuple(_ROW.c), binding, batch, include_detached, "row states")
        async for rows in pages:
            yield [_row_state(r) for r in rows]

    @wrap_errors("counting row states")
    async def count_row_states(
        self, conn: AsyncConnection, binding: str, *, include_detached: bool = False
    ) -> int:
        stmt = sa.select(sa.func.count()).select_from(_ROW).where(_ROW.c.binding == binding)
        if not include_detached:
            stmt = stmt.where(_ROW.c.detached.is_(False))
        return int((await conn.execute(stmt)).scalar_one())

    @wrap_errors("reading keys with pending writes")
    async def keys_with_pending(self, conn: AsyncConnection, binding: str) -> list[SyncKey]:
        stmt = (
            sa.select(_ROW.c.sync_key)
            .where(_ROW.c.binding == binding, _ROW.c.pending_mutation_id.is_not(None))
            .order_by(_ROW.c.sync_key)
        )
        return [SyncKey(k) for k in (await conn.execute(stmt)).scalars()]

    @wrap_errors("reading row states with pending writes")
    async def pending_row_states(self, conn: AsyncConnection, binding: str) -> list[RowState]:
        stmt = (
            sa.select(_ROW)
            .where(_ROW.c.binding == binding, _ROW.c.pending_mutation_id.is_not(None))
            .order_by(_ROW.c.sync_key)
        )
        return [_row_state(r) for r in await conn.execute(stmt)]

    @wrap_errors("reading the row states of a mutation")
    async def row_states_pending_on(
        self, conn: AsyncConnection, binding: str, mutation_id: int
    ) -> list[RowState]:
        """Row states waiting on one mutation (indexed: confirming is O(rows of that write))."""
        stmt = (
            sa.select(_ROW)
            .where(_ROW.c.binding == binding, _ROW.c.pending_mutation_id == mutation_id)
            .order_by(_ROW.c.sync_key)
        )
        return [_row_state(r) for r in await conn.execute(stmt)]

    @wrap_errors("reading keys to recheck")
    async def keys_to_recheck(self, conn: AsyncConnection, binding: str) -> list[SyncKey]:
        stmt = (
            sa.select(_ROW.c.sync_key)
            .where(_ROW.c.binding == binding, _ROW.c.recheck.is_(True))
            .order_by(_ROW.c.sync_key)
        )
        return [SyncKey(k) for k in (await conn.execute(stmt)).scalars()]

    # ------------------------------------------------------------------ row state: write

    @wrap_errors("writing row states")
    async def put_row_states(self, conn: AsyncConnection, states: Sequence[RowState]) -> None:
        """Insert or replace row states (bulk INSERT .. ON CONFLICT DO UPDATE)."""
        if not states:
            return
        latest = {(s.binding, s.key): s for s in states}  # one row per key per statement
        params = [_row_state_params(s) for s in latest.values()]
        stmt = upsert(conn, _ROW)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_ROW.c.binding, _ROW.c.sync_key],
            set_={
                c.name: stmt.excluded[c.name]
                for c in _ROW.columns
                if c.name not in ("binding", "sync_key")
            },
        )
        for chunk in chunks(params, WRITE_CHUNK):
            await conn.execute(stmt, list(chunk))

    @wrap_errors("deleting row states")
    async def delete_row_states(
        self, conn: AsyncConnection, binding: str, keys: Iterable[str]
    ) -> int:
        deleted = 0
        for chunk in chunks(sorted(set(keys)), IN_CHUNK):
            result = await conn.execute(
                sa.delete(_ROW).where(_ROW.c.binding == binding, _ROW.c.sync_key.in_(chunk))
            )
            deleted += result.rowcount
        return deleted

    @wrap_errors("dropping expired tombstones")
    async def drop_expired_tombstones(
        self, conn: AsyncConnection, binding: str, now: datetime
    ) -> int:
        """Forget the keys of rows we deleted in Coda once their stale window has passed.

        A delete leaves a detached state fenced for the stale window, so a read that still
        shows the row is ignored; IGNORE-policy tombstones (no fence) stay forever.
        """
        result = await conn.execute(
            sa.delete(_ROW).where(
                _ROW.c.binding == binding,
                _ROW.c.detached.is_(True),
                _ROW.c.fence_until.is_not(None),
                _ROW.c.fence_until <= now,
            )
        )
        return int(result.rowcount or 0)

    @wrap_errors("clearing pending writes")
    async def clear_pending(
        self, conn: AsyncConnection, binding: str, mutation_ids: Iterable[int]
    ) -> int:
        """Forget `pending_mutation_id`/`pending_values` of rows waiting on these mutations."""
        cleared = 0
        for chunk in chunks(sorted(set(mutation_ids)), IN_CHUNK):
            result = await conn.execute(
                sa.update(_ROW)
                .where(_ROW.c.binding == binding, _ROW.c.pending_mutation_id.in_(chunk))
                .values(pending_mutation_id=None, pending_values=None)
            )
            cleared += result.rowcount
        return cleared

    # ------------------------------------------------------------------ mutations

    @wrap_errors("recording a mutation intent")
    async def create_mutation(
        self,
        conn: AsyncConnection,
        *,
        binding: str,
        kind: MutationKind,
        at: datetime,
        row_count: int,
        payload: Mapping[str, Any] | None = None,
    ) -> int:
        """Record a write BEFORE it is sent (state `intent`); returns its id."""
        stmt = (
            sa.insert(_MUT)
            .values(
                binding=binding,
                kind=MutationKind(kind).value,
                state=MutationState.INTENT.value,
                created_at=at,
                attempts=0,
                row_count=row_count,
                payload=None if payload is None else dict(payload),
            )
            .returning(_MUT.c.id)
        )
        return int((await conn.execute(stmt)).scalar_one())

    @wrap_errors("marking a mutation sent")
    async def mark_sent(
        self, conn: AsyncConnection, mutation_id: int, *, request_id: str | None, at: datetime
    ) -> None:
        await conn.execute(
            sa.update(_MUT)
            .where(_MUT.c.id == mutation_id)
            .values(
                state=MutationState.SENT.value,
                request_id=request_id,
                sent_at=at,
                attempts=_MUT.c.attempts + 1,
            )
        )

    @wrap_errors("marking mutations confirmed")
    async def mark_confirmed(
        self, conn: AsyncConnection, mutation_ids: Iterable[int], *, at: datetime
    ) -> None:
        for chunk in chunks(sorted(set(mutation_ids)), IN_CHUNK):
            await conn.execute(
                sa.update(_MUT)
                .where(_MUT.c.id.in_(chunk))
                .values(state=MutationState.CONFIRMED.value, confirmed_at=at)
            )

    @wrap_errors("marking mutations lost")
    async def mark_lost(self, conn: AsyncConnection, mutation_ids: Iterable[int]) -> None:
        for chunk in chunks(sorted(set(mutation_ids)), IN_CHUNK):
            await conn.execute(
                sa.update(_MUT)
                .where(_MUT.c.id.in_(chunk), _MUT.c.state != MutationState.CONFIRMED.value)
                .values(state=MutationState.LOST.value)
            )

    @wrap_errors("reading a mutation")
    async def get_mutation(self, conn: AsyncConnection, mutation_id: int) -> Mutation | None:
        row = (await conn.execute(sa.select(_MUT).where(_MUT.c.id == mutation_id))).first()
        return None if row is None else _mutation(row)

    @wrap_errors("listing open mutations")
    async def list_open_mutations(self, conn: AsyncConnection, binding: str) -> list[Mutation]:
        """Mutations in state intent or sent, oldest first."""
        stmt = (
            sa.select(_MUT)
            .where(
                _MUT.c.binding == binding,
                _MUT.c.state.in_([s.value for s in OPEN_MUTATION_STATES]),
            )
            .order_by(_MUT.c.id)
        )
        return [_mutation(r) for r in await conn.execute(stmt)]

    @wrap_errors("pruning mutations")
    async def prune_mutations(self, conn: AsyncConnection, *, older_than: datetime) -> int:
        """Delete confirmed/lost mutations created before `older_than` (row states: SET NULL)."""
        result = await conn.execute(
            sa.delete(_MUT).where(
                _MUT.c.state.in_([MutationState.CONFIRMED.value, MutationState.LOST.value]),
                _MUT.c.created_at < older_than,
            )
        )
        return result.rowcount


async def _keyset_pages(
    conn: AsyncConnection,
    columns: Sequence[sa.ColumnElement[Any]],
    binding: str,
    batch: int,
    include_detached: bool,
    what: str,
) -> AsyncIterator[Sequence[sa.Row[Any]]]:
    """`columns` of the row states of `binding` in key order, `batch` rows at a time."""
    after: str | None = None
    while True:
        stmt = sa.select(*columns).where(_ROW.c.binding == binding)
        if not include_detached:
            stmt = stmt.where(_ROW.c.detached.is_(False))
        if after is not None:
            stmt = stmt.where(_ROW.c.sync_key > after)
        stmt = stmt.order_by(_ROW.c.sync_key).limit(batch)
        try:
            rows = (await conn.execute(stmt)).all()
        except exc.SQLAlchemyError as error:
            raise store_error(f"iterating {what}", error) from error
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        after = rows[-1].sync_key
