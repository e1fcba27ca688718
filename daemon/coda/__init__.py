"""The Coda side of coda-sync: the only package that speaks HTTP to Coda API v1.

- `client`: `CodaClient` (auth, paging, writes, mutation status, retries, error mapping)
- `pacing`: `RateLimiter`, the sliding-window pacing shared by everything using one token
- `schema`: raw payload TypedDicts and pure parsers into frozen dataclasses

Nothing here knows SQL or reconciliation; no `httpx` exception escapes this package.
"""

from __future__ import annotations

from daemon.coda.client import ClientSettings, ClientStats, CodaClient
from daemon.coda.pacing import DEFAULT_LIMITS, RateLimiter, limit_class
from daemon.coda.schema import (
    ColumnInfo,
    DocInfo,
    MutationStatus,
    RawRow,
    RowPage,
    TableInfo,
    UserInfo,
    WriteResult,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ClientSettings",
    "ClientStats",
    "CodaClient",
    "ColumnInfo",
    "DocInfo",
    "MutationStatus",
    "RateLimiter",
    "RawRow",
    "RowPage",
    "TableInfo",
    "UserInfo",
    "WriteResult",
    "limit_class",
]
