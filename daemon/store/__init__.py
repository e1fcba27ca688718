"""The store: the only code that speaks SQL (bound tables, state tables, migrations, locks).

    db.py           engine per dialect, `open_store` (+ Alembic upgrade), UTCDateTime, JSONType
    tables.py       the daemon's state tables (SQLAlchemy 2 models; created by migrations only)
    repo.py         `StateRepo`: batch operations on the state tables, on a caller's connection
    journal.py      its conflict journal / delete audit / quarantine / runs part (a mixin)
    records.py      the plain data it takes and returns (RowState, Mutation, ...)
    bound.py        `BoundTable`: the application's table of one binding (check, read, write)
    participation.py  the HR app's Participation model (demo and tests act as the application)
    lock.py         one syncing process per binding: flock (SQLite), advisory lock (PostgreSQL)

Must not import httpx or `daemon.coda`: the store knows nothing of HTTP.
"""

from __future__ import annotations
