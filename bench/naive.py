"""The naive baseline: a two-way sync the way usual connectors and scripts are written.

Every cycle it lists EVERY row of the Coda table (page size 100 by default, as many scripts
use; 500 is Coda's most generous page), hashes each row's values to spot remote changes,
stores rows as JSON in a local SQLite table (stdlib `sqlite3`), and writes each locally
changed row back with its own request (PUT /rows/{id}; POST for a new row). It shares the
real `CodaClient` (same pacing, retries and request counting as coda-sync), so every request
figure is directly comparable. It is deliberately straightforward, not deliberately bad:
it never writes a row that did not change and it is idle-correct (0 writes once converged).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.world import (
    COMMENT_COLUMN,
    IN_PROCESS_BASE_URL,
    Meter,
    Phase,
    TimedTransport,
    emulator_counts,
    make_limiter,
    make_settings,
    new_emulator,
)
from daemon.clock import FakeClock
from daemon.coda.client import ClientSettings, CodaClient
from daemon.emulator import (
    DEFAULT_TOKEN,
    DOC_ID,
    TABLE_ID,
    EmulatorConfig,
    EmulatorState,
    create_app,
)

KEY_COLUMN = "c-SyncKey01"


@dataclass(slots=True)
class NaiveStats:
    listed: int = 0
    pulled_inserts: int = 0
    pulled_updates: int = 0
    pushed: int = 0


class NaiveSync:
    """List everything, compare hashes, PUT changed rows one by one."""

    def __init__(self, client: CodaClient, db_path: Path, *, page_size: int = 100) -> None:
        self.client = client
        self.page_size = page_size
        self.db = sqlite3.connect(db_path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS naive_rows ("
            " key TEXT PRIMARY KEY, row_id TEXT, data TEXT NOT NULL, remote_hash TEXT,"
            " dirty TEXT)"  # dirty: JSON of the locally changed cells, or NULL
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    async def cycle(self) -> NaiveStats:
        stats = NaiveStats()
        pages = self.client.list_rows(DOC_ID, TABLE_ID, value_format="rich", limit=self.page_size)
        async for page in pages:
            with self.db:  # one transaction per page
                for raw in page.items:
                    self._ingest(raw.id, raw.values, stats)
        dirty = self.db.execute(
            "SELECT key, row_id, dirty FROM naive_rows WHERE dirty IS NOT NULL ORDER BY key"
        ).fetchall()
        for key, row_id, cells_json in dirty:
            cells = list(json.loads(cells_json).items())
            if row_id:
                await self.client.update_row(DOC_ID, TABLE_ID, row_id, cells)
            else:
                await self.client.upsert_rows(
                    DOC_ID, TABLE_ID, [[(KEY_COLUMN, key), *cells]], key_columns=[]
                )
            with self.db:
                self.db.execute("UPDATE naive_rows SET dirty = NULL WHERE key = ?", (key,))
            stats.pushed += 1
        return stats

    def _ingest(self, row_id: str, values: dict[str, Any], stats: NaiveStats) -> None:
        stats.listed += 1
        key = values.get(KEY_COLUMN) or row_id
        data = json.dumps(values, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(data.encode()).hexdigest()
        found = self.db.execute(
            "SELECT remote_hash, dirty FROM naive_rows WHERE key = ?", (key,)
        ).fetchone()
        if found is None:
            self.db.execute(
                "INSERT INTO naive_rows (key, row_id, data, remote_hash) VALUES (?, ?, ?, ?)",
                (key, row_id, data, digest),
            )
            stats.pulled_inserts += 1
        elif found[0] != digest and found[1] is None:
            self.db.execute(
                "UPDATE naive_rows SET row_id = ?, data = ?, remote_hash = ? WHERE key = ?",
                (row_id, data, digest, key),
            )
            stats.pulled_updates += 1

    def edit_local_rows(self, count: int, tag: str) -> list[str]:
        """The application changes the comment of `count` rows (marks them dirty)."""
        keys = [
            k
            for (k,) in self.db.execute("SELECT key FROM naive_rows ORDER BY key LIMIT ?", (count,))
        ]
        with self.db:
            self.db.executemany(
                "UPDATE naive_rows SET dirty = ? WHERE key = ?",
                [(json.dumps({COMMENT_COLUMN: f"{tag} {i}"}), k) for i, k in enumerate(keys)],
            )
        return keys


@dataclass
class NaiveWorld:
    clock: FakeClock
    emu: EmulatorState
    client: CodaClient
    sync: NaiveSync
    meter: Meter
    interval: float

    async def cycle(self, name: str, *, advance: float | None = None) -> Phase:
        self.clock.advance(self.interval if advance is None else advance)
        phase, stats = await self.meter.measure(name, self.sync.cycle)
        phase.stats = {
            "listed": stats.listed,
            "pulled_inserts": stats.pulled_inserts,
            "pulled_updates": stats.pulled_updates,
            "pushed": stats.pushed,
        }
        return phase


@asynccontextmanager
async def open_naive_world(
    tmp: Path, *, seed_rows: int, page_size: int = 100, seed: int = 1
) -> AsyncIterator[NaiveWorld]:
    """The naive sync against an in-process emulator on a FakeClock (same as `open_world`)."""
    clock = FakeClock()
    emu = new_emulator(seed_rows, EmulatorConfig(), clock=clock, seed=seed)
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'unused.db'}", IN_PROCESS_BASE_URL)
    transport = TimedTransport(httpx.ASGITransport(app=create_app(emu)))
    http = httpx.AsyncClient(transport=transport)
    client = CodaClient(
        http,
        token=DEFAULT_TOKEN,
        base_url=IN_PROCESS_BASE_URL,
        limiter=make_limiter(settings, clock),
        clock=clock,
        rng=random.Random(seed),
        settings=ClientSettings(page_size=page_size),
    )
    sync = NaiveSync(client, tmp / "naive.db", page_size=page_size)
    meter = Meter(clock, transport, client, emulator_counts(emu))
    try:
        yield NaiveWorld(clock, emu, client, sync, meter, settings.sync.interval_seconds)
    finally:
        sync.close()
        await http.aclose()
