"""A whole sync world in one process: emulator + real client + SQLite + real engine, virtual time.

Tests act as a person editing in Coda (`person_*`), as the application editing its own table
(`app_*`), run cycles, and compare both sides in canonical form.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from daemon import config as config_mod
from daemon import normalize
from daemon.clock import FakeClock
from daemon.coda.client import ClientSettings, CodaClient
from daemon.coda.pacing import RateLimiter
from daemon.emulator import (
    DEFAULT_TOKEN,
    DOC_ID,
    TABLE_ID,
    EmulatorConfig,
    EmulatorState,
    create_app,
    seed_participation,
)
from daemon.engine import CycleResult, Engine
from daemon.model import Canon
from daemon.store.db import Store, open_store

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "config" / "coda-sync.toml"


def example_config_data(
    db_url: str,
    *,
    binding: Mapping[str, Any] | None = None,
    coda: Mapping[str, Any] | None = None,
    **sync: Any,
) -> dict[str, Any]:
    """The example config pointed at `db_url`; `sync`, `coda` and `binding` override those
    sections (e.g. binding={"deletes": "soft", "soft_delete_column": "deleted_at"})."""
    import tomllib

    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["coda"]["api_base_url"] = "https://coda.io/apis/v1"
    data["database"]["url"] = db_url
    data["database"]["create_tables"] = True
    data["sync"].update(sync)
    data["coda"].update(coda or {})
    data["binding"][0].update(binding or {})
    return data


class World:
    """Emulator, client, store and engine sharing one FakeClock."""

    def __init__(
        self,
        *,
        emu: EmulatorState,
        clock: FakeClock,
        store: Store,
        engine: Engine,
        http: httpx.AsyncClient,
        settings: config_mod.Settings,
    ) -> None:
        self.emu = emu
        self.clock = clock
        self.store = store
        self.engine = engine
        self.http = http
        self.settings = settings
        self.binding = settings.bindings[0]
        self.rng = random.Random(7)

    @property
    def client(self) -> CodaClient:
        return self.engine.client

    async def cycle(self, *, full: bool = False, advance: float | None = None) -> CycleResult:
        self.clock.advance(self.settings.sync.interval_seconds if advance is None else advance)
        return await self.engine.cycle(full=full)

    async def converge(self, cycles: int = 4) -> list[CycleResult]:
        return [await self.cycle() for _ in range(cycles)]

    # ------------------------------------------------------------------ Coda side (a person)

    def coda_rows(self) -> dict[str, dict[str, Canon]]:
        """Canonical values of every true Coda row, by sync key (rows without key: by id)."""
        out: dict[str, dict[str, Canon]] = {}
        for row in self.emu_rich_rows():
            key = normalize.canon_key(row["values"].get(self.binding.coda_key_column, ""))
            values, errors = normalize.canon_row_from_coda(self.binding.columns, row["values"])
            assert not errors, errors
            ref = key or row["id"]
            assert ref not in out, f"duplicate key {ref} in Coda"
            out[ref] = values
        return out

    def emu_rich_rows(self) -> list[dict[str, Any]]:
        """The TRUE rows (not the lagging snapshot), rendered as a rich listing would."""
        from daemon.emulator.values import make_renderer

        spec = self.emu.find_table(TABLE_ID)
        ctx = self.emu.value_context()
        render = {col.id: make_renderer(col, "rich", ctx) for col in spec.columns}
        out = []
        for row in self.emu.true_records(TABLE_ID):
            cells = dict(row.cells) | self.emu.calculated_values(spec, row)
            out.append(
                {"id": row.id, "values": {cid: fn(cells.get(cid)) for cid, fn in render.items()}}
            )
        return out

    def coda_keys(self) -> list[str]:
        return list(self.coda_rows())

    def person_update(self, key: str, values: Mapping[str, Any]) -> None:
        self.emu.ui_update_row(TABLE_ID, self.row_id(key), values)

    def person_insert(self, values: Mapping[str, Any]) -> str:
        return self.emu.ui_insert_row(TABLE_ID, values)

    def person_delete(self, key: str) -> None:
        self.emu.ui_delete_row(TABLE_ID, self.row_id(key))

    def row_id(self, key: str) -> str:
        for row in self.emu.true_rows(TABLE_ID):
            if normalize.canon_key(row["values"].get(self.binding.coda_key_column, "")) == key:
                return str(row["id"])
        raise KeyError(key)

    # ------------------------------------------------------------------ SQL side (the app)

    async def local_rows(self) -> dict[str, dict[str, Canon]]:
        out: dict[str, dict[str, Canon]] = {}
        async with self.store.connect() as conn:
            async for batch in self.engine.bound.iter_rows(conn):
                for row in batch:
                    if row.soft_deleted:
                        continue
                    values, errors = normalize.canon_row_from_sql(self.binding.columns, row.values)
                    assert not errors, errors
                    out[row.key] = values
        return out

    async def app_upsert(self, key: str, values: Mapping[str, Any]) -> None:
        async with self.store.begin() as conn:
            existing = (await self.engine.bound.get_rows(conn, [key])).get(key)
            merged = dict(existing.values) if existing else {}
            merged.update(values)
            await self.engine.bound.upsert_rows(conn, [(key, merged)], updated_at=self.clock.now())

    async def app_insert(self, values: Mapping[str, Any] | None = None) -> str:
        key = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        row = dict(sample_local_values(self.rng))
        row.update(values or {})
        await self.app_upsert(key, row)
        return key

    async def app_insert_many(self, count: int) -> list[str]:
        """`count` new sample rows in ONE transaction (fast set-up of big local tables)."""
        rows = []
        for _ in range(count):
            key = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            rows.append((key, sample_local_values(self.rng)))
        async with self.store.begin() as conn:
            await self.engine.bound.upsert_rows(conn, rows, updated_at=self.clock.now())
        return [key for key, _ in rows]

    async def app_soft_delete(self, key: str) -> None:
        """The app marks a row deleted (soft-delete column set; the row stays)."""
        column = self.binding.soft_delete_column
        assert column is not None, "binding has no soft_delete_column"
        async with self.store.begin() as conn:
            await self.engine.bound.soft_delete_rows(conn, [key], self.clock.now())

    async def app_delete(self, key: str) -> None:
        async with self.store.begin() as conn:
            await self.engine.bound.delete_rows(conn, [key])

    async def assert_converged(self) -> dict[str, dict[str, Canon]]:
        coda = self.coda_rows()
        local = await self.local_rows()
        assert set(coda) == set(local), (
            f"only in Coda: {sorted(set(coda) - set(local))[:5]}, "
            f"only local: {sorted(set(local) - set(coda))[:5]}"
        )
        for key, values in coda.items():
            assert local[key] == values, f"{key}: coda={values} local={local[key]}"
        return coda


_ACTIVITIES = ["Хакатон 2024", "Митап Python", "Конференция HR", "Субботник", "Turnир"]


def sample_local_values(rng: random.Random) -> dict[str, Any]:
    n = rng.randrange(1000)
    return {
        "employee_email": f"user{n}@example.com",
        "email": f"user{n}@example.com",
        "activity": rng.choice(_ACTIVITIES),
        "activity_date": date(2024, rng.randrange(1, 13), rng.randrange(1, 28)),
        "role": rng.choice(["Участник", "Спикер", "Организатор", "Волонтёр"]),
        "hours": rng.choice([1.0, 1.5, 2.0, 8.0]),
        "confirmed": rng.random() < 0.5,
        "tags": sorted(
            rng.sample(["обучение", "конференция", "митап", "спорт"], rng.randrange(0, 3))
        ),
        "comment": rng.choice([None, "ok", "перенесено"]),
    }


@asynccontextmanager
async def world(
    tmp_path: Path,
    *,
    seed_rows: int = 0,
    emulator: EmulatorConfig | None = None,
    db_url: str | None = None,
    seed: int = 1,
    with_keys: bool = True,
    client_settings: ClientSettings | None = None,
    binding: Mapping[str, Any] | None = None,
    coda: Mapping[str, Any] | None = None,
    **sync: Any,
) -> AsyncIterator[World]:
    clock = FakeClock()
    emu_config = emulator or EmulatorConfig()
    emu = EmulatorState(emu_config, clock, random.Random(seed))
    if seed_rows:
        seed_participation(emu, seed_rows, rng=random.Random(seed), with_keys=with_keys)
    url = db_url or f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}"
    data = example_config_data(url, binding=binding, coda=coda, **sync)
    settings = config_mod.parse(data, source="test.toml", env={"CODA_API_TOKEN": DEFAULT_TOKEN})
    store = await open_store(settings.database)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(emu)))
    client = CodaClient(
        http,
        token=settings.coda_token.get(),
        base_url=settings.coda.api_base_url,
        limiter=RateLimiter(
            clock,
            limits={  # as daemon.runtime builds it: from the config
                "read": (settings.coda.read_limit, settings.coda.rate_window_seconds),
                "write": (settings.coda.write_limit, settings.coda.rate_window_seconds),
            },
        ),
        clock=clock,
        rng=random.Random(seed),
        settings=client_settings or ClientSettings(),
    )
    engine = Engine(
        settings=settings,
        binding=settings.bindings[0],
        client=client,
        store=store,
        clock=clock,
        # NOT the seeder's stream: with the same seed the engine drew the very uuids the
        # seeded rows already carry as keys (a "duplicate key" in Coda)
        rng=random.Random(f"engine-{seed}"),
    )
    await engine.prepare()
    try:
        yield World(emu=emu, clock=clock, store=store, engine=engine, http=http, settings=settings)
    finally:
        await http.aclose()
        await store.close()


__all__ = ["DOC_ID", "TABLE_ID", "World", "world"]
