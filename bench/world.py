"""A sync world for benchmarks: emulator + real `CodaClient` + SQLite + real `Engine`.

In process (`open_world`): the emulator app is served through `httpx.ASGITransport` and the
emulator, the client's pacing and the engine share ONE `FakeClock`, so rate-limit waits,
apply delays and read lags pass in virtual time (instantly) while CPU work is real. Over
loopback (`open_loopback_world`): the same engine talks HTTP to an emulator served on
127.0.0.1 and everything runs on the real clock.

Every HTTP exchange goes through `TimedTransport`, which adds up the wall and CPU seconds
spent inside the transport (in process: the emulator's own work; over loopback: HTTP and the
server). A cycle's *local* cost is its total minus that API time.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from daemon import config as config_mod
from daemon.clock import Clock, FakeClock, SystemClock
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
from daemon.engine import Engine
from daemon.store.db import Store, open_store
from tests.harness import example_config_data

REPO = Path(__file__).resolve().parent.parent
IN_PROCESS_BASE_URL = "https://coda.io/apis/v1"
COMMENT_COLUMN = "c-Comment01"


def make_settings(db_url: str, base_url: str, **sync: Any) -> config_mod.Settings:
    """The example config (config/coda-sync.toml) pointed at `db_url` and `base_url`, built
    exactly as the test harness builds it; `sync` overrides keys of its [sync] section."""
    data = example_config_data(db_url, coda={"api_base_url": base_url}, **sync)
    return config_mod.parse(data, source="bench.toml", env={"CODA_API_TOKEN": DEFAULT_TOKEN})


def make_limiter(settings: config_mod.Settings, clock: Clock) -> RateLimiter:
    """The client-side pacing the daemon uses: the configured limits (95 reads, 9 writes/6 s)."""
    window = settings.coda.rate_window_seconds
    return RateLimiter(
        clock,
        limits={
            "read": (settings.coda.read_limit, window),
            "write": (settings.coda.write_limit, window),
        },
    )


class TimedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; adds up the wall and CPU seconds spent inside it (body included)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.wall = 0.0
        self.cpu = 0.0
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        try:
            response = await self.inner.handle_async_request(request)
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                content=raw,
                extensions=response.extensions,
            )
        finally:
            self.requests += 1
            self.wall += time.perf_counter() - wall0
            self.cpu += time.process_time() - cpu0

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of every counter a phase is measured by."""

    wall: float
    cpu: float
    virtual: float
    api_wall: float
    api_cpu: float
    reads: int
    writes: int
    client_429: int
    retries: int
    emu_reads: int | None
    emu_writes: int | None
    emu_429: int | None


@dataclass(slots=True)
class Phase:
    """What one measured step cost (differences of two `Counters`)."""

    name: str
    reads: int
    writes: int
    emu_reads: int | None
    emu_writes: int | None
    rate_limited_429: int
    emu_429: int | None
    retries: int
    virtual_seconds: float
    wall_seconds: float
    cpu_seconds: float
    api_wall_seconds: float
    api_cpu_seconds: float
    cycles: int = 1
    full_scan: bool | None = None
    pending_mutations: int | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def local_wall_seconds(self) -> float:
        return max(0.0, self.wall_seconds - self.api_wall_seconds)

    @property
    def local_cpu_seconds(self) -> float:
        return max(0.0, self.cpu_seconds - self.api_cpu_seconds)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["local_wall_seconds"] = round(self.local_wall_seconds, 4)
        out["local_cpu_seconds"] = round(self.local_cpu_seconds, 4)
        for key in (
            "virtual_seconds",
            "wall_seconds",
            "cpu_seconds",
            "api_wall_seconds",
            "api_cpu_seconds",
        ):
            out[key] = round(out[key], 4)
        return out


def combine(name: str, phases: list[Phase]) -> Phase:
    """Several consecutive phases as one (sums; the last one's pending count)."""
    total = Phase(name, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, cycles=0)
    for p in phases:
        total.reads += p.reads
        total.writes += p.writes
        total.emu_reads = _add(total.emu_reads, p.emu_reads)
        total.emu_writes = _add(total.emu_writes, p.emu_writes)
        total.emu_429 = _add(total.emu_429, p.emu_429)
        total.rate_limited_429 += p.rate_limited_429
        total.retries += p.retries
        total.virtual_seconds += p.virtual_seconds
        total.wall_seconds += p.wall_seconds
        total.cpu_seconds += p.cpu_seconds
        total.api_wall_seconds += p.api_wall_seconds
        total.api_cpu_seconds += p.api_cpu_seconds
        total.cycles += p.cycles
        total.pending_mutations = p.pending_mutations
        for k, v in p.stats.items():
            total.stats[k] = total.stats.get(k, 0) + v
    return total


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


EmuCounts = Callable[[], Awaitable[tuple[int, int, int] | None]]


class Meter:
    """Snapshots the clock, the transport, the client's stats and the emulator's counters."""

    def __init__(
        self, clock: Clock, transport: TimedTransport, client: CodaClient, emu_counts: EmuCounts
    ) -> None:
        self.clock = clock
        self.transport = transport
        self.client = client
        self.emu_counts = emu_counts

    async def snap(self) -> Counters:
        emu = await self.emu_counts()
        stats = self.client.stats
        return Counters(
            wall=time.perf_counter(),
            cpu=time.process_time(),
            virtual=self.clock.monotonic(),
            api_wall=self.transport.wall,
            api_cpu=self.transport.cpu,
            reads=stats.count("read"),
            writes=stats.count("write"),
            client_429=stats.rate_limited,
            retries=stats.retries,
            emu_reads=None if emu is None else emu[0],
            emu_writes=None if emu is None else emu[1],
            emu_429=None if emu is None else emu[2],
        )

    @staticmethod
    def phase(name: str, a: Counters, b: Counters) -> Phase:
        def d(x: int | None, y: int | None) -> int | None:
            return None if x is None or y is None else y - x

        return Phase(
            name=name,
            reads=b.reads - a.reads,
            writes=b.writes - a.writes,
            emu_reads=d(a.emu_reads, b.emu_reads),
            emu_writes=d(a.emu_writes, b.emu_writes),
            rate_limited_429=b.client_429 - a.client_429,
            emu_429=d(a.emu_429, b.emu_429),
            retries=b.retries - a.retries,
            virtual_seconds=b.virtual - a.virtual,
            wall_seconds=b.wall - a.wall,
            cpu_seconds=b.cpu - a.cpu,
            api_wall_seconds=b.api_wall - a.api_wall,
            api_cpu_seconds=b.api_cpu - a.api_cpu,
        )

    async def measure(self, name: str, step: Callable[[], Awaitable[Any]]) -> tuple[Phase, Any]:
        a = await self.snap()
        result = await step()
        b = await self.snap()
        return self.phase(name, a, b), result


@dataclass
class World:
    """One binding's sync world; `emu` is set in process only."""

    clock: Clock
    settings: config_mod.Settings
    store: Store
    client: CodaClient
    engine: Engine
    transport: TimedTransport
    http: httpx.AsyncClient
    meter: Meter
    emu: EmulatorState | None = None

    @property
    def binding(self) -> config_mod.Binding:
        return self.settings.bindings[0]

    async def cycle(self, name: str, *, full: bool = False, advance: float | None = None) -> Phase:
        """One engine cycle as a measured phase; in process the clock first moves by the
        interval (or `advance`) as between two scheduled cycles (not counted in the phase)."""
        if isinstance(self.clock, FakeClock):
            self.clock.advance(self.settings.sync.interval_seconds if advance is None else advance)
        phase, result = await self.meter.measure(name, lambda: self.engine.cycle(full=full))
        phase.full_scan = result.full_scan
        phase.pending_mutations = result.pending_mutations
        phase.stats = dict(result.stats)
        return phase

    async def edit_local_rows(self, count: int, tag: str) -> list[str]:
        """The application changes the comment of `count` local rows in ONE transaction.

        On the FakeClock it first lets 1 s pass: an edit stamped with exactly the updated_at of
        the engine's own last write to the row is taken for that write (engine._judge_local
        compares updated_at for equality) and would not be pushed at all."""
        if isinstance(self.clock, FakeClock):
            self.clock.advance(1.0)
        rows: list[tuple[str, dict[str, Any]]] = []
        async with self.store.begin() as conn:
            async for batch in self.engine.bound.iter_rows(conn):
                for row in batch:
                    if len(rows) >= count:
                        break
                    values = dict(row.values)
                    values["comment"] = f"{tag} {len(rows)}"
                    rows.append((row.key, values))
            await self.engine.bound.upsert_rows(conn, rows, updated_at=self.clock.now())
        return [key for key, _ in rows]

    async def rows_in_overlap_window(self) -> int | None:
        """How many local rows an incremental cycle re-reads now: updated_at >= the saved
        local watermark - local_overlap_seconds (None before the first cycle)."""
        async with self.store.connect() as conn:
            state = await self.engine.repo.get_binding_state(conn, self.binding.name)
            if state is None or state.local_watermark is None:
                return None
            since = state.local_watermark - timedelta(
                seconds=self.settings.sync.local_overlap_seconds
            )
            column = self.engine.bound.table.c[self.binding.local_updated_at]
            stmt = sa.select(sa.func.count()).where(column >= since)
            return int((await conn.execute(stmt)).scalar_one())

    async def local_comment(self, key: str) -> Any:
        async with self.store.connect() as conn:
            row = (await self.engine.bound.get_rows(conn, [key])).get(key)
        return None if row is None else row.values.get("comment")


def emulator_counts(emu: EmulatorState) -> EmuCounts:
    async def counts() -> tuple[int, int, int]:
        reads = emu.stats.count(method="GET")
        return reads, emu.stats.total - reads, emu.stats.count(status=429)

    return counts


def _control_counts(http: httpx.AsyncClient, base_url: str) -> EmuCounts:
    """The emulator's request counters over its control routes (loopback)."""
    root = base_url.removesuffix("/apis/v1")

    async def counts() -> tuple[int, int, int]:
        body = (await http.get(f"{root}/_emulator/counters")).json()
        reads = sum(i["count"] for i in body["items"] if i["method"] == "GET")
        rejected = sum(i["count"] for i in body["items"] if i["status"] == 429)
        return reads, int(body["total"]) - reads, rejected

    return counts


def _no_counts() -> EmuCounts:
    async def counts() -> None:
        return None

    return counts


async def _engine(
    settings: config_mod.Settings, http: httpx.AsyncClient, clock: Clock, seed: int
) -> tuple[Store, CodaClient, Engine]:
    store = await open_store(settings.database)
    client = CodaClient(
        http,
        token=DEFAULT_TOKEN,
        base_url=settings.coda.api_base_url,
        limiter=make_limiter(settings, clock),
        clock=clock,
        rng=random.Random(seed),
        settings=ClientSettings(page_size=settings.coda.page_size),
    )
    engine = Engine(
        settings=settings,
        binding=settings.bindings[0],
        client=client,
        store=store,
        clock=clock,
        rng=random.Random(seed),
    )
    await engine.prepare()
    return store, client, engine


def new_emulator(
    seed_rows: int, config: EmulatorConfig | None = None, *, clock: Clock, seed: int = 1
) -> EmulatorState:
    emu = EmulatorState(config or EmulatorConfig(), clock, random.Random(seed))
    if seed_rows:
        seed_participation(emu, seed_rows, rng=random.Random(seed))
    return emu


@asynccontextmanager
async def open_world(
    tmp: Path,
    *,
    seed_rows: int,
    emulator: EmulatorConfig | None = None,
    seed: int = 1,
    **sync: Any,
) -> AsyncIterator[World]:
    """In process, virtual time: the emulator enforces Coda's limits (100 reads and 10 writes
    per 6 s, sliding) on the same FakeClock the client paces on."""
    clock = FakeClock()
    emu = new_emulator(seed_rows, emulator, clock=clock, seed=seed)
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'sync.db'}", IN_PROCESS_BASE_URL, **sync)
    transport = TimedTransport(httpx.ASGITransport(app=create_app(emu)))
    http = httpx.AsyncClient(transport=transport)
    store, client, engine = await _engine(settings, http, clock, seed)
    meter = Meter(clock, transport, client, emulator_counts(emu))
    try:
        yield World(clock, settings, store, client, engine, transport, http, meter, emu)
    finally:
        await http.aclose()
        await store.close()


@asynccontextmanager
async def open_loopback_world(
    tmp: Path, *, base_url: str, control: bool = True, seed: int = 1, **sync: Any
) -> AsyncIterator[World]:
    """Real clock, real HTTP to an emulator already listening at `base_url`."""
    clock = SystemClock()
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'sync.db'}", base_url, **sync)
    transport = TimedTransport(httpx.AsyncHTTPTransport())
    http = httpx.AsyncClient(transport=transport)
    store, client, engine = await _engine(settings, http, clock, seed)
    plain = httpx.AsyncClient()  # control calls: not counted as API time
    counts = _control_counts(plain, base_url) if control else _no_counts()
    meter = Meter(clock, transport, client, counts)
    try:
        yield World(clock, settings, store, client, engine, transport, http, meter)
    finally:
        await http.aclose()
        await plain.aclose()
        await store.close()


async def list_row_items(
    http: httpx.AsyncClient, base_url: str, clock: Clock, *, page_size: int = 500
) -> list[dict[str, Any]]:
    """Every row of the table as the JSON objects Coda sends (no pacing of ours: on a 429 the
    clock moves one window on). For the hash-only baseline; not part of any phase."""
    url = f"{base_url}/docs/{DOC_ID}/tables/{TABLE_ID}/rows"
    params: Mapping[str, str] = {"valueFormat": "rich", "limit": str(page_size)}
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    items: list[dict[str, Any]] = []
    while True:
        response = await http.get(url, params=params, headers=headers)
        if response.status_code == 429:
            await clock.sleep(6.0)
            continue
        response.raise_for_status()
        body = response.json()
        items.extend(body["items"])
        token = body.get("nextPageToken")
        if not token:
            return items
        params = {"pageToken": token}
