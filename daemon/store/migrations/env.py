"""Alembic environment of the state tables, run programmatically only (no alembic.ini).

`daemon.store.db` passes an open, transaction-bearing sync `Connection` in
`config.attributes["connection"]` (from `AsyncConnection.run_sync`); the caller commits.
The version table is `coda_sync_alembic_version`, so an application's own `alembic_version`
in the same database is never touched. Works for SQLite (batch mode for ALTERs) and PostgreSQL.
"""

from __future__ import annotations

from alembic import context

from daemon.store.db import VERSION_TABLE
from daemon.store.tables import StateBase

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "coda-sync migrations run programmatically: use daemon.store.db.open_store "
        "(config.attributes['connection'] must hold a SQLAlchemy Connection)"
    )

context.configure(
    connection=connection,
    target_metadata=StateBase.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
