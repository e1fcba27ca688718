"""The daemon's own state tables, as SQLAlchemy 2 typed models.

These tables live in the application's database next to the bound tables (so a pull is one
transaction), all prefixed `coda_sync_`. They are created and changed ONLY by the Alembic
migrations in `migrations/versions/`; `metadata.create_all` is never called on them, and a test
checks that the migrated schema equals this metadata. Must not import httpx.

    coda_sync_binding_state   per binding: sync token, watermarks, last full scans
    coda_sync_row_state       per (binding, sync key): Coda row id, base snapshot + hash,
                              pending mutation, fence, tombstone
    coda_sync_mutations       every write sent to Coda, recorded before it is sent
    coda_sync_conflicts       append-only journal of overwritten concurrent edits
    coda_sync_deletes         append-only audit of deleted rows with their old values
    coda_sync_quarantine      rows that could not be applied, with the reason
    coda_sync_runs            recent sync runs (for GET /runs/{id})

The journal and the audit are append-only: the repository has no update or delete for them,
and the migration adds triggers that make the database refuse both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from daemon.store.db import JSONType, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StateBase(DeclarativeBase):
    """Declarative base of the state tables (a metadata separate from any application's)."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class BindingStateRow(StateBase):
    """Per binding: where each side's change feed stands."""

    __tablename__ = "coda_sync_binding_state"

    binding: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    sync_token: Mapped[str | None] = mapped_column(sa.Text)
    """Coda's sync token from the last `sortBy=updatedAt` listing."""
    remote_watermark: Mapped[datetime | None]
    """Newest Coda `updatedAt` seen (used when no token is usable)."""
    local_watermark: Mapped[datetime | None]
    """Newest local `updated_at` seen; the next local read starts at it minus the overlap."""
    last_full_scan_at: Mapped[datetime | None]
    last_local_full_scan_at: Mapped[datetime | None]
    schema_fingerprint: Mapped[str | None] = mapped_column(sa.String(128))
    updated_at: Mapped[datetime]
    local_xid_mark: Mapped[int | None] = mapped_column(sa.BigInteger)
    """PostgreSQL: pg_snapshot_xmin when the last local read began (the next one reads every
    row whose xmin is at or after it); NULL on SQLite."""


class MutationRow(StateBase):
    """A write to Coda: recorded as an intent before it is sent, confirmed by mutationStatus."""

    __tablename__ = "coda_sync_mutations"
    __table_args__ = (sa.Index("ix_coda_sync_mutations_binding_state", "binding", "state"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    binding: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(16))
    """upsert | update | delete | key"""
    request_id: Mapped[str | None] = mapped_column(sa.String(200))
    state: Mapped[str] = mapped_column(sa.String(16))
    """intent | sent | confirmed | lost"""
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    row_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    payload: Mapped[dict[str, Any] | None]


class RowStateRow(StateBase):
    """Per (binding, sync key): the last state both sides agreed on, and what is in flight."""

    __tablename__ = "coda_sync_row_state"
    __table_args__ = (
        sa.Index("ix_coda_sync_row_state_binding_coda_row_id", "binding", "coda_row_id"),
        sa.Index("ix_coda_sync_row_state_pending_mutation_id", "pending_mutation_id"),
    )

    binding: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    sync_key: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    coda_row_id: Mapped[str | None] = mapped_column(sa.String(100))
    base: Mapped[dict[str, Any]]
    """Canonical values by local column (tuples stored as JSON lists)."""
    base_hash: Mapped[str] = mapped_column(sa.String(128))
    remote_updated_at: Mapped[datetime | None]
    local_updated_at: Mapped[datetime | None]
    detached: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    pending_mutation_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey(MutationRow.id, ondelete="SET NULL")
    )
    pending_values: Mapped[dict[str, Any] | None]
    fence_until: Mapped[datetime | None]
    recheck: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    synced_at: Mapped[datetime]


class ConflictRow(StateBase):
    """One overwritten concurrent edit (append-only)."""

    __tablename__ = "coda_sync_conflicts"
    __table_args__ = (sa.Index("ix_coda_sync_conflicts_binding_sync_key", "binding", "sync_key"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    binding: Mapped[str] = mapped_column(sa.String(100))
    sync_key: Mapped[str] = mapped_column(sa.Text)
    column: Mapped[str | None] = mapped_column(sa.String(100))
    local_value: Mapped[Any | None] = mapped_column(JSONType)
    remote_value: Mapped[Any | None] = mapped_column(JSONType)
    base_value: Mapped[Any | None] = mapped_column(JSONType)
    winner: Mapped[str] = mapped_column(sa.String(16))
    rule: Mapped[str] = mapped_column(sa.String(64))
    local_at: Mapped[datetime | None]
    remote_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime]


class DeleteRow(StateBase):
    """One deleted row with its last known values (append-only)."""

    __tablename__ = "coda_sync_deletes"
    __table_args__ = (sa.Index("ix_coda_sync_deletes_binding_sync_key", "binding", "sync_key"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    binding: Mapped[str] = mapped_column(sa.String(100))
    sync_key: Mapped[str] = mapped_column(sa.Text)
    side_deleted: Mapped[str] = mapped_column(sa.String(16))
    """local | remote | soft"""
    old_values: Mapped[dict[str, Any] | None]
    coda_row_id: Mapped[str | None] = mapped_column(sa.String(100))
    recorded_at: Mapped[datetime]


class QuarantineRow(StateBase):
    """A row that could not be applied; cleared when it syncs again."""

    __tablename__ = "coda_sync_quarantine"
    __table_args__ = (
        sa.UniqueConstraint("binding", "side", "ref", name="uq_coda_sync_quarantine_ref"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    binding: Mapped[str] = mapped_column(sa.String(100))
    side: Mapped[str] = mapped_column(sa.String(16))
    ref: Mapped[str] = mapped_column(sa.Text)
    """The sync key, or the Coda row id when the row has no key yet."""
    reason: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any] | None]
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")


class RunRow(StateBase):
    """A requested or finished sync run (the newest ~1000 are kept)."""

    __tablename__ = "coda_sync_runs"
    __table_args__ = (sa.Index("ix_coda_sync_runs_requested_at", "requested_at"),)

    run_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    binding: Mapped[str | None] = mapped_column(sa.String(100))
    full: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    state: Mapped[str] = mapped_column(sa.String(16))
    requested_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(sa.Text)


STATE_TABLES = tuple(StateBase.metadata.sorted_tables)


def table_of(model: type[StateBase]) -> sa.Table:
    """The `Table` of a state model (typed: `__table__` is declared as a FromClause)."""
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table
