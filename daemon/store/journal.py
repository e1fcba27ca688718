"""The append-only conflict journal and delete audit, the quarantine, and recent runs.

`JournalOps` is a mixin of `repo.StateRepo` (callers use that). Like the rest of the repo,
each method takes the caller's connection and never commits: a conflict is journaled, and a
deleted row audited, in the same transaction as the write that overwrote or deleted it.
The journal and the audit have inserts and reads only; the database refuses UPDATE and
DELETE on them (triggers from the migration). Must not import httpx.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.model import Conflict, ConflictRule, Side, SyncKey
from daemon.store.db import IN_CHUNK, WRITE_CHUNK, chunks, upsert, wrap_errors
from daemon.store.records import (
    DEFAULT_KEEP_RUNS,
    ConflictRecord,
    DeleteAudit,
    DeleteRecord,
    QuarantineEntry,
    QuarantineItem,
    RunRecord,
    canon_from_json,
    canon_to_json,
    values_from_json,
    values_to_json,
)
from daemon.store.tables import ConflictRow, DeleteRow, QuarantineRow, RunRow, table_of

_CONFLICT = table_of(ConflictRow)
_DELETE = table_of(DeleteRow)
_QUAR = table_of(QuarantineRow)
_RUN = table_of(RunRow)


class JournalOps:
    """Journal, audit, quarantine and runs (mixed into `StateRepo`)."""

    @wrap_errors("journaling conflicts")
    async def journal_conflicts(
        self, conn: AsyncConnection, binding: str, conflicts: Sequence[Conflict], *, at: datetime
    ) -> int:
        if not conflicts:
            return 0
        params = [
            {
                "binding": binding,
                "sync_key": c.key,
                "column": c.column,
                "local_value": canon_to_json(c.local_value),
                "remote_value": canon_to_json(c.remote_value),
                "base_value": canon_to_json(c.base_value),
                "winner": c.winner.value,
                "rule": c.rule.value,
                "local_at": c.local_at,
                "remote_at": c.remote_at,
                "recorded_at": at,
            }
            for c in conflicts
        ]
        for chunk in chunks(params, WRITE_CHUNK):
            await conn.execute(sa.insert(_CONFLICT), list(chunk))
        return len(params)

    @wrap_errors("reading the conflict journal")
    async def list_conflicts(
        self, conn: AsyncConnection, binding: str, *, limit: int = 100
    ) -> list[ConflictRecord]:
        """The newest `limit` journal entries of `binding`, newest first."""
        stmt = (
            sa.select(_CONFLICT)
            .where(_CONFLICT.c.binding == binding)
            .order_by(_CONFLICT.c.id.desc())
            .limit(limit)
        )
        out = []
        for row in await conn.execute(stmt):
            m = row._mapping
            conflict = Conflict(
                key=SyncKey(m["sync_key"]),
                column=m["column"],
                local_value=canon_from_json(m["local_value"]),
                remote_value=canon_from_json(m["remote_value"]),
                base_value=canon_from_json(m["base_value"]),
                winner=Side(m["winner"]),
                rule=ConflictRule(m["rule"]),
                local_at=m["local_at"],
                remote_at=m["remote_at"],
            )
            out.append(ConflictRecord(m["id"], m["binding"], conflict, m["recorded_at"]))
        return out

    @wrap_errors("counting conflicts")
    async def count_conflicts(self, conn: AsyncConnection, binding: str) -> int:
        stmt = sa.select(sa.func.count()).select_from(_CONFLICT)
        return int((await conn.execute(stmt.where(_CONFLICT.c.binding == binding))).scalar_one())

    @wrap_errors("auditing deletes")
    async def audit_deletes(
        self, conn: AsyncConnection, binding: str, deletes: Sequence[DeleteAudit], *, at: datetime
    ) -> int:
        """Append deleted rows with their old values (write it in the delete's transaction)."""
        if not deletes:
            return 0
        params = [
            {
                "binding": binding,
                "sync_key": d.key,
                "side_deleted": d.side_deleted,
                "old_values": None if d.old_values is None else values_to_json(d.old_values),
                "coda_row_id": d.coda_row_id,
                "recorded_at": at,
            }
            for d in deletes
        ]
        for chunk in chunks(params, WRITE_CHUNK):
            await conn.execute(sa.insert(_DELETE), list(chunk))
        return len(params)

    @wrap_errors("reading the delete audit")
    async def list_deletes(
        self, conn: AsyncConnection, binding: str, *, limit: int = 100
    ) -> list[DeleteRecord]:
        stmt = (
            sa.select(_DELETE)
            .where(_DELETE.c.binding == binding)
            .order_by(_DELETE.c.id.desc())
            .limit(limit)
        )
        out = []
        for row in await conn.execute(stmt):
            m = row._mapping
            old = m["old_values"]
            audit = DeleteAudit(
                key=SyncKey(m["sync_key"]),
                side_deleted=m["side_deleted"],
                old_values=None if old is None else values_from_json(old),
                coda_row_id=m["coda_row_id"],
            )
            out.append(DeleteRecord(m["id"], m["binding"], audit, m["recorded_at"]))
        return out

    # ------------------------------------------------------------------ quarantine

    @wrap_errors("quarantining rows")
    async def quarantine_put(
        self,
        conn: AsyncConnection,
        binding: str,
        items: Sequence[QuarantineItem],
        *,
        at: datetime,
    ) -> None:
        """Add rows to the quarantine; a row already there gets the new reason and count + 1."""
        if not items:
            return
        latest = {(i.side, i.ref): i for i in items}
        params = [
            {
                "binding": binding,
                "side": i.side,
                "ref": i.ref,
                "reason": i.reason,
                "payload": None if i.payload is None else dict(i.payload),
                "first_seen_at": at,
                "last_seen_at": at,
                "count": 1,
            }
            for i in latest.values()
        ]
        stmt = upsert(conn, _QUAR)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_QUAR.c.binding, _QUAR.c.side, _QUAR.c.ref],
            set_={
                "reason": stmt.excluded.reason,
                "payload": stmt.excluded.payload,
                "last_seen_at": stmt.excluded.last_seen_at,
                "count": _QUAR.c.count + 1,
            },
        )
        for chunk in chunks(params, WRITE_CHUNK):
            await conn.execute(stmt, list(chunk))

    @wrap_errors("clearing the quarantine")
    async def quarantine_clear(
        self, conn: AsyncConnection, binding: str, refs: Iterable[str], *, side: str | None = None
    ) -> int:
        """Remove rows that synced again (on `side`, or on both sides when None)."""
        cleared = 0
        for chunk in chunks(sorted(set(refs)), IN_CHUNK):
            stmt = sa.delete(_QUAR).where(_QUAR.c.binding == binding, _QUAR.c.ref.in_(chunk))
            if side is not None:
                stmt = stmt.where(_QUAR.c.side == side)
            cleared += (await conn.execute(stmt)).rowcount
        return cleared

    @wrap_errors("listing the quarantine")
    async def quarantine_list(
        self, conn: AsyncConnection, binding: str, *, limit: int | None = None
    ) -> list[QuarantineEntry]:
        stmt = (
            sa.select(_QUAR)
            .where(_QUAR.c.binding == binding)
            .order_by(_QUAR.c.last_seen_at.desc(), _QUAR.c.id)
            .limit(limit)
        )
        out = []
        for row in await conn.execute(stmt):
            m = row._mapping
            item = QuarantineItem(m["side"], m["ref"], m["reason"], m["payload"])
            out.append(
                QuarantineEntry(
                    m["binding"], item, m["first_seen_at"], m["last_seen_at"], m["count"]
                )
            )
        return out

    @wrap_errors("counting the quarantine")
    async def quarantine_count(self, conn: AsyncConnection, binding: str) -> int:
        stmt = sa.select(sa.func.count()).select_from(_QUAR).where(_QUAR.c.binding == binding)
        return int((await conn.execute(stmt)).scalar_one())

    # ------------------------------------------------------------------ runs

    @wrap_errors("saving a run")
    async def put_run(self, conn: AsyncConnection, run: RunRecord) -> None:
        params = {
            "run_id": run.run_id,
            "binding": run.binding,
            "full": run.full,
            "state": run.state,
            "requested_at": run.requested_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "result": None if run.result is None else dict(run.result),
            "error": run.error,
        }
        stmt = upsert(conn, _RUN).values(params)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_RUN.c.run_id],
            set_={k: stmt.excluded[k] for k in params if k != "run_id"},
        )
        await conn.execute(stmt)

    @wrap_errors("reading a run")
    async def get_run(self, conn: AsyncConnection, run_id: str) -> RunRecord | None:
        row = (await conn.execute(sa.select(_RUN).where(_RUN.c.run_id == run_id))).first()
        return None if row is None else RunRecord(**row._asdict())

    @wrap_errors("pruning runs")
    async def prune_runs(self, conn: AsyncConnection, *, keep: int = DEFAULT_KEEP_RUNS) -> int:
        """Keep the `keep` most recently requested runs; delete the rest."""
        newest = (
            sa.select(_RUN.c.run_id)
            .order_by(_RUN.c.requested_at.desc(), _RUN.c.run_id.desc())
            .limit(keep)
        )
        result = await conn.execute(sa.delete(_RUN).where(_RUN.c.run_id.not_in(newest)))
        return result.rowcount
