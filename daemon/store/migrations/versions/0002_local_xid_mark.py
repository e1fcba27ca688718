"""Binding state: the PostgreSQL transaction-id mark of the local change feed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

`coda_sync_binding_state.local_xid_mark` (BIGINT, NULL): on PostgreSQL, the oldest
transaction still running when the last local read began (`pg_snapshot_xmin`); the next
incremental read takes every row written by a transaction at or after it, whatever its
`updated_at` says. Stays NULL on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("coda_sync_binding_state") as batch:
        batch.add_column(sa.Column("local_xid_mark", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coda_sync_binding_state") as batch:
        batch.drop_column("local_xid_mark")
