"""`fenced(store, fence)`: a `Store` whose write transactions ask `fence()` before committing.

The engine of a PostgreSQL binding uses it with its leadership check: `fence()` raises
`LeadershipLost` when this process no longer holds the binding's leader lock, so the
transaction rolls back instead of committing, whatever the engine (or the writer) was doing
in it. Reads (`connect()`) are not fenced: they change nothing. Must not import httpx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import Store

Fence = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class FencedStore(Store):
    """The same database handle; `begin()` calls `fence()` right before the commit."""

    fence: Fence | None = None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with Store.begin(self) as conn:
            yield conn
            if self.fence is not None:
                await self.fence()  # raising here rolls the transaction back


def fenced(store: Store, fence: Fence) -> FencedStore:
    """`store` (sharing its engines and pool) with every write transaction fenced."""
    return FencedStore(
        url=store.url,
        engine=store.engine,
        sessionmaker=store.sessionmaker,
        _write_engine=store._write_engine,
        fence=fence,
    )


def unfenced(store: Store) -> Store:
    """`store` without the fence (start-up checks every instance runs, leader or not)."""
    return replace(store, fence=None) if isinstance(store, FencedStore) else store
