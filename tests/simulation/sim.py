"""The deterministic simulation world: the REAL engine vs the in-process emulator and SQLite.

One `Sim` runs one `Scenario` on one `FakeClock`:

    emulator (EmulatorState)  <-  SimTransport (trace, lost requests/answers, people acting
                                  between two requests)  <-  CodaClient  <-  Engine  ->  SQLite

Actors: people edit/insert/delete rows in Coda (`ui_*`, effective at once), the application
edits/inserts/deletes rows in SQL (with a skewed, possibly back-dated `updated_at`). Faults:
emulator `FaultRule`s, random fault rates, read lag, apply delays, transport timeouts, and
crashes: the engine's crash hook raises `SimulatedCrash` (a BaseException) at an armed point;
"restart" builds a new Engine + client + store over the SAME SQLite file and emulator.

Every acknowledged write and delete of every actor is recorded in a `Model` (true time, value
before and after, in canonical form), so `invariants` can tell legitimate outcomes from lost
updates, phantom deletes and resurrections. After the schedule, faults stop and the sides
quiesce; then every invariant is checked (see `invariants.check_all`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx

from daemon import config as config_mod
from daemon import normalize
from daemon.clock import FakeClock
from daemon.coda.client import ClientSettings, CodaClient
from daemon.coda.pacing import RateLimiter
from daemon.emulator import (
    DEFAULT_TOKEN,
    TABLE_ID,
    EmulatorConfig,
    EmulatorState,
    FaultRule,
    create_app,
    seed_participation,
)
from daemon.emulator.values import make_renderer
from daemon.engine import CycleResult, Engine
from daemon.errors import CodaError, CodaSyncError
from daemon.model import Canon
from daemon.store.bound import BoundTable
from daemon.store.db import Store, open_store
from daemon.store.repo import ConflictRecord, DeleteRecord, RowState
from tests.harness import example_config_data
from tests.simulation import schedule as sch

MISSING = object()
KEY_COLUMN = "c-SyncKey01"
Q1_CYCLES = 6
Q2_CYCLES = 6
RESTART_SECONDS = 10.0
ACTOR_TICK = 0.25


class SimulatedCrash(BaseException):
    """Raised by the crash hook at an armed crash point: the process dies here."""

    def __init__(self, point: str) -> None:
        super().__init__(point)
        self.point = point


# --------------------------------------------------------------------------- the model


@dataclass
class Write:
    """One acknowledged write of one field by one actor."""

    seq: int
    side: str  # "local" | "remote"
    actor: str  # "app" | "person" | "seed"
    ref: str  # local: the sync key; remote: the sync key or "row:<id>"
    field: str
    value: Canon
    prev: Any  # canonical value before (MISSING for inserts)
    t: float  # true time (monotonic seconds)
    lww_t: float  # the time its timestamp claims, without skew (back-dated writes are earlier)
    concurrent: bool = False  # made by a person during a cycle (between two requests)
    insert: bool = False


@dataclass
class Delete:
    seq: int
    side: str
    actor: str
    ref: str
    t: float
    concurrent: bool = False
    unsynced: tuple[int, ...] = ()
    """Seqs of actor edits the OTHER side held that the deleted row did not (edit beats delete)."""


@dataclass
class Model:
    writes: list[Write] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    rowkey: dict[str, str] = field(default_factory=dict)
    """Coda row id -> sync key, as learnt along the way."""
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def resolve(self, ref: str) -> str:
        """A sync key for `ref` if known ("row:<id>" otherwise)."""
        if ref.startswith("row:"):
            return self.rowkey.get(ref[4:], ref)
        return ref


# --------------------------------------------------------------------------- the trace


@dataclass(frozen=True)
class TraceEntry:
    t: float
    method: str
    path: str
    query: str
    status: int | None  # None: the request never reached Coda
    req_hash: str
    resp_hash: str
    access: str
    fault: str | None  # emulator fault label
    retry_after: float | None
    body: Any  # decoded JSON of write requests (None for reads)
    mutation_ids: tuple[str, ...]  # emulator mutations this request created
    in_cycle: int
    transport: str | None = None  # transport fault: the client never saw this answer


class SimTransport(httpx.AsyncBaseTransport):
    """ASGI transport to the emulator that traces every call and injects transport faults."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.inner = httpx.ASGITransport(app=create_app(sim.emu))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sim = self.sim
        body = await request.aread()
        await sim.before_request()
        tf = sim.take_transport_fault(request.method)
        emu = sim.emu
        access = "read" if request.method in ("GET", "HEAD") else "write"
        decoded = json.loads(body) if body and access == "write" else None
        req_hash = hashlib.sha256(body).hexdigest()[:16]
        if tf == "lost_request":
            sim.record(
                TraceEntry(
                    sim.clock.monotonic(),
                    request.method,
                    request.url.path,
                    request.url.query.decode(),
                    None,
                    req_hash,
                    "",
                    access,
                    None,
                    None,
                    decoded,
                    (),
                    sim.cycle_no,
                    tf,
                )
            )
            raise httpx.ConnectTimeout("simulated: the request was lost", request=request)
        n_log, n_mut = emu.stats.total, len(emu._mutations)
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        fault = emu.stats.log[-1].fault if emu.stats.total > n_log and emu.stats.log else None
        new_ids = tuple(list(emu._mutations)[n_mut:]) if len(emu._mutations) > n_mut else ()
        ra = response.headers.get("retry-after")
        sim.record(
            TraceEntry(
                sim.clock.monotonic(),
                request.method,
                request.url.path,
                request.url.query.decode(),
                response.status_code,
                req_hash,
                hashlib.sha256(content).hexdigest()[:16],
                access,
                fault,
                float(ra) if ra else None,
                decoded,
                new_ids,
                sim.cycle_no,
                tf,
            )
        )
        if tf == "lost_response_timeout":
            raise httpx.ReadTimeout("simulated: the answer was lost", request=request)
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )


class CrashSwitch:
    """The engine's crash hook: counts points reached, raises at the armed ones."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.armed: list[list[Any]] = []  # [point, remaining hits]
        self.reached: Counter[str] = Counter()
        self.fired: Counter[str] = Counter()
        self.cells: Counter[str] = Counter()

    def __call__(self, point: str) -> None:
        self.reached[point] += 1
        for armed in self.armed:
            if armed[0] == point:
                armed[1] -= 1
                if armed[1] <= 0:
                    self.armed.remove(armed)
                    caller = sys._getframe(1).f_code.co_name
                    self.fired[point] += 1
                    self.cells[f"{point} @ {caller}"] += 1
                    raise SimulatedCrash(point)
                return


# --------------------------------------------------------------------------- results


@dataclass
class Violation:
    invariant: str
    detail: str
    tag: str | None = None
    """A known engine bug this violation matches (see `invariants.KNOWN_BUGS`)."""

    def __str__(self) -> str:
        tag = f" [known bug: {self.tag}]" if self.tag else ""
        return f"{self.invariant}: {self.detail}{tag}"


@dataclass
class CycleRecord:
    no: int
    t: float
    full: bool
    result: CycleResult | None
    error: str | None
    known_rows: int | None
    quiescent: bool = False


@dataclass
class SimResult:
    scenario: sch.Scenario
    violations: list[Violation]
    trace_hash: str
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations

    def invariants_violated(self) -> set[str]:
        return {v.invariant for v in self.violations}


# --------------------------------------------------------------------------- template db

_TEMPLATE: dict[str, Path] = {}


def _settings(db_url: str, p: sch.SimParams) -> config_mod.Settings:
    data = example_config_data(
        db_url,
        coda={
            "page_size": p.page_size,
            "upsert_batch_rows": p.upsert_batch_rows,
            "mutation_timeout_seconds": p.mutation_timeout,
        },
        interval_seconds=p.interval,
        full_resync_seconds=p.full_resync_seconds,
        local_overlap_seconds=p.overlap,
        clock_skew_seconds=p.skew_band,
        tie_break=p.tie_break,
        max_delete_share=p.max_delete_share,
        stale_window_seconds=60.0,
    )
    return config_mod.parse(data, source="sim.toml", env={"CODA_API_TOKEN": DEFAULT_TOKEN})


_TEMPLATE_LOCK: list[anyio.Lock] = []


async def _template_db() -> Path:
    """A migrated SQLite file with the bound table, made once per process and copied per run."""
    if not _TEMPLATE_LOCK:
        _TEMPLATE_LOCK.append(anyio.Lock())
    async with _TEMPLATE_LOCK[0]:
        path = _TEMPLATE.get("db")
        if path is not None and path.exists():
            return path
        return await _make_template()


async def _make_template() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="coda-sim-template-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "template.db"
    settings = _settings(f"sqlite+aiosqlite:///{path}", sch.SimParams())
    store = await open_store(settings.database)
    async with store.begin() as conn:
        await BoundTable(settings.bindings[0]).ensure(conn)
    await store.close()
    _TEMPLATE["db"] = path
    return path


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() else None
    return Path(tempfile.mkdtemp(prefix="coda-sim-", dir=base))


# --------------------------------------------------------------------------- the world


class Sim:
    """One run of one scenario (use `await Sim(scenario).run()`)."""

    def __init__(self, scenario: sch.Scenario, *, check: bool = True) -> None:
        self.scenario = scenario
        self.p = scenario.params
        self.check = check
        seed = scenario.seed
        self.clock = FakeClock()
        self.emu = EmulatorState(
            EmulatorConfig(
                apply_delay_seconds=self.p.apply_delay,
                apply_delay_jitter_seconds=self.p.apply_jitter,
                read_lag_seconds=self.p.read_lag,
                read_lag_jitter_seconds=self.p.lag_jitter,
                rate_limit_retry_after=self.p.retry_after_header,
            ),
            self.clock,
            random.Random(seed),
        )
        seed_participation(self.emu, self.p.coda_rows, rng=random.Random(seed), with_keys=True)
        self.model = Model()
        self.trace: list[TraceEntry] = []
        self.cycles: list[CycleRecord] = []
        self.violations: list[Violation] = []
        self.crash = CrashSwitch(self)
        self.transport_faults: list[list[Any]] = []  # [kind, method, remaining]
        self.concurrent: list[tuple[int, Any]] = []
        self.cycle_no = 0
        self.in_cycle = False
        self.request_in_cycle = 0
        self.restarts = 0
        self.errors: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.max_lag = self.p.read_lag + self.p.lag_jitter
        self.not_before = 0.0
        self.ops = 0
        self.concurrent_ops = 0
        self.quiescent = False
        self.converged_after: int | None = None
        self.workdir: Path | None = None
        self.store: Store | None = None
        self.engine: Engine | None = None
        self._truth: tuple[Any, dict[str, tuple[str | None, dict[str, Canon]]]] | None = None
        self.http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def binding(self) -> config_mod.Binding:
        return self.settings.bindings[0]

    def record(self, entry: TraceEntry) -> None:
        self.trace.append(entry)

    def trace_hash(self) -> str:
        h = hashlib.sha256()
        for e in self.trace:
            h.update(
                f"{e.t:.6f} {e.method} {e.path}?{e.query} {e.status} {e.req_hash} {e.resp_hash} "
                f"{e.fault} {e.transport}\n".encode()
            )
        return h.hexdigest()

    def take_transport_fault(self, method: str) -> str | None:
        if not self.in_cycle:
            return None
        for tf in self.transport_faults:
            if tf[1] is None or tf[1] == method:
                tf[2] -= 1
                if tf[2] <= 0:
                    self.transport_faults.remove(tf)
                self.faults[tf[0]] += 1
                return str(tf[0])
        return None

    async def before_request(self) -> None:
        if not self.in_cycle:
            return
        self.request_in_cycle += 1
        due = [c for c in self.concurrent if c[0] <= self.request_in_cycle]
        for item in due:
            self.concurrent.remove(item)
            self.clock.advance(0.001)
            self.concurrent_ops += 1
            await self._person(item[1], concurrent=True)

    async def _open(self) -> None:
        assert self.workdir is not None
        url = f"sqlite+aiosqlite:///{self.workdir / 'sync.db'}"
        self.settings = _settings(url, self.p)
        self.store = await open_store(self.settings.database, migrate=False)
        self.http = httpx.AsyncClient(transport=SimTransport(self))
        s = self.settings
        client = CodaClient(
            self.http,
            token=s.coda_token.get(),
            base_url=s.coda.api_base_url,
            limiter=RateLimiter(
                self.clock,
                limits={
                    "read": (s.coda.read_limit, s.coda.rate_window_seconds),
                    "write": (s.coda.write_limit, s.coda.rate_window_seconds),
                },
            ),
            clock=self.clock,
            rng=random.Random(self.scenario.seed * 31 + self.restarts),
            settings=ClientSettings(),
        )
        self.engine = Engine(
            settings=s,
            binding=s.bindings[0],
            client=client,
            store=self.store,
            clock=self.clock,
            rng=random.Random(self.scenario.seed * 7919 + self.restarts),
            crash=self.crash,
        )
        await self.engine.prepare()

    async def _close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def restart(self) -> None:
        self.restarts += 1
        await self._close()
        self.clock.advance(RESTART_SECONDS)
        await self._open()

    # ------------------------------------------------------------------ both sides, read

    def coda_truth(self) -> dict[str, tuple[str | None, dict[str, Canon]]]:
        """row id -> (sync key or None, canonical values) of every TRUE Coda row."""
        self.emu.tick()
        stamp = (self.emu.true[TABLE_ID].version, self.emu.today())
        if self._truth is not None and self._truth[0] == stamp:
            return dict(self._truth[1])
        spec = self.emu.find_table(TABLE_ID)
        ctx = self.emu.value_context()
        render = {col.id: make_renderer(col, "rich", ctx) for col in spec.columns}
        out: dict[str, tuple[str | None, dict[str, Canon]]] = {}
        for row in self.emu.true_records(TABLE_ID):
            cells = dict(row.cells) | self.emu.calculated_values(spec, row)
            rich = {cid: fn(cells.get(cid)) for cid, fn in render.items()}
            try:
                key = normalize.canon_key(rich.get(KEY_COLUMN, ""))
            except Exception:
                key = None
            values, _ = normalize.canon_row_from_coda(self.binding.columns, rich)
            out[row.id] = (key or None, values)
        self._truth = (stamp, out)
        return dict(out)

    def learn_keys(self, truth: Mapping[str, tuple[str | None, Any]] | None = None) -> None:
        for row_id, (key, _) in (truth or self.coda_truth()).items():
            if key:
                self.model.rowkey[row_id] = key

    async def local_truth(self) -> dict[str, dict[str, Canon]]:
        assert self.store is not None and self.engine is not None
        out: dict[str, dict[str, Canon]] = {}
        async with self.store.connect() as conn:
            async for batch in self.engine.bound.iter_rows(conn):
                for row in batch:
                    values, _ = normalize.canon_row_from_sql(self.binding.columns, row.values)
                    out[row.key] = values
        return out

    async def row_states(self) -> dict[str, RowState]:
        assert self.store is not None and self.engine is not None
        out: dict[str, RowState] = {}
        async with self.store.connect() as conn:
            async for batch in self.engine.repo.iter_row_states(conn, self.binding.name):
                for s in batch:
                    out[s.key] = s
        return out

    async def open_mutations(self) -> int:
        assert self.store is not None and self.engine is not None
        async with self.store.connect() as conn:
            return len(await self.engine.repo.list_open_mutations(conn, self.binding.name))

    async def journal(self) -> tuple[list[ConflictRecord], list[DeleteRecord]]:
        assert self.store is not None and self.engine is not None
        async with self.store.connect() as conn:
            conflicts = await self.engine.repo.list_conflicts(
                conn, self.binding.name, limit=1_000_000
            )
            deletes = await self.engine.repo.list_deletes(conn, self.binding.name, limit=1_000_000)
        return conflicts, deletes

    # ------------------------------------------------------------------ actors

    def _coda_targets(
        self, truth: Mapping[str, tuple[str | None, Any]]
    ) -> list[tuple[str, str, str | None]]:
        """(sort key, row id, sync key) of every true row, keyed rows by key first."""
        return sorted(((key if key else "~" + rid), rid, key) for rid, (key, _) in truth.items())

    async def _person(self, step: Any, *, concurrent: bool = False) -> None:
        self.ops += 1
        truth = self.coda_truth()
        self.learn_keys(truth)
        cols = {c.local: c.coda for c in self.binding.columns}
        now = self.clock.monotonic()
        if isinstance(step, sch.PersonInsert):
            cells = {cols[name]: value for name, value in step.cells}
            row_id = self.emu.ui_insert_row(TABLE_ID, cells)
            after = self.coda_truth()[row_id][1]
            for name, _ in step.cells:
                self._write(
                    "remote",
                    "person",
                    f"row:{row_id}",
                    name,
                    after.get(name),
                    MISSING,
                    now,
                    now,
                    concurrent=concurrent,
                    insert=True,
                )
            return
        targets = self._coda_targets(truth)
        if not targets:
            return
        _, row_id, key = targets[step.pick % len(targets)]
        ref = key if key else f"row:{row_id}"
        before = truth[row_id][1]
        if isinstance(step, sch.PersonEdit):
            self.emu.ui_update_row(TABLE_ID, row_id, {cols[name]: v for name, v in step.cells})
            after = self.coda_truth()[row_id][1]
            for name, _ in step.cells:
                self._write(
                    "remote",
                    "person",
                    ref,
                    name,
                    after.get(name),
                    before.get(name),
                    now,
                    now,
                    concurrent=concurrent,
                )
        elif isinstance(step, sch.PersonDelete):
            resolved = key or await self._key_of_row(row_id)
            other = await self._local_row(resolved) if resolved else None
            self.emu.ui_delete_row(TABLE_ID, row_id)
            self.model.deletes.append(
                Delete(
                    self.model.next_seq(),
                    "remote",
                    "person",
                    resolved or f"row:{row_id}",
                    now,
                    concurrent=concurrent,
                    unsynced=self._unsynced("local", resolved, other, before),
                )
            )

    def _write(
        self,
        side: str,
        actor: str,
        ref: str,
        name: str,
        value: Canon,
        prev: Any,
        t: float,
        lww_t: float,
        *,
        concurrent: bool = False,
        insert: bool = False,
    ) -> None:
        self.model.writes.append(
            Write(
                self.model.next_seq(),
                side,
                actor,
                ref,
                name,
                value,
                prev,
                t,
                lww_t,
                concurrent=concurrent,
                insert=insert,
            )
        )

    def _unsynced(
        self,
        other_side: str,
        key: str | None,
        other: Mapping[str, Canon] | None,
        deleted: Mapping[str, Canon],
    ) -> tuple[int, ...]:
        """Actor edits the other side holds that the deleted row does not have (their seqs)."""
        if key is None or other is None:
            return ()
        mine = [w for w in self.model.writes if self.model.resolve(w.ref) == key]
        return tuple(
            w.seq
            for w in mine
            if w.side == other_side
            and w.actor != "seed"
            # a write of the value the field already held changes no content: no edit to sync
            and w.prev != w.value
            and other.get(w.field) == w.value
            and deleted.get(w.field) != w.value
            # the deleting side never held it (nobody there overwrote it after it arrived)
            and not any(
                x.side != other_side and x.seq > w.seq and x.field == w.field and x.prev == w.value
                for x in mine
            )
        )

    async def _key_of_row(self, row_id: str) -> str | None:
        key = self.model.rowkey.get(row_id)
        if key is not None:
            return key
        assert self.store is not None and self.engine is not None
        async with self.store.connect() as conn:
            found = await self.engine.repo.get_row_states_by_coda_ids(
                conn, self.binding.name, [row_id]
            )
        state = found.get(row_id)
        if state is not None:
            self.model.rowkey[row_id] = state.key
            return str(state.key)
        return None

    async def _local_row(self, key: str) -> dict[str, Canon] | None:
        assert self.store is not None and self.engine is not None
        async with self.store.connect() as conn:
            row = (await self.engine.bound.get_rows(conn, [key])).get(key)
        if row is None or row.soft_deleted:
            return None
        values, _ = normalize.canon_row_from_sql(self.binding.columns, row.values)
        return values

    async def _app(self, step: Any) -> None:
        assert self.store is not None and self.engine is not None
        self.ops += 1
        bound = self.engine.bound
        now = self.clock.monotonic()
        if isinstance(step, sch.AppInsert):
            stamp = self.clock.now() + timedelta(seconds=self.p.skew - step.backdate)
            async with self.store.begin() as conn:
                await bound.upsert_rows(conn, [(step.key, dict(step.values))], updated_at=stamp)
            after = await self._local_row(step.key)
            assert after is not None
            for name in after:
                if name in self.binding.readonly_columns:
                    continue
                self._write(
                    "local",
                    "app",
                    step.key,
                    name,
                    after.get(name),
                    MISSING,
                    now,
                    now - step.backdate,
                    insert=True,
                )
            return
        local = await self.local_truth()
        keys = sorted(local)
        if not keys:
            return
        key = keys[step.pick % len(keys)]
        before = local[key]
        if isinstance(step, sch.AppEdit):
            stamp = self.clock.now() + timedelta(seconds=self.p.skew - step.backdate)
            async with self.store.begin() as conn:
                existing = (await bound.get_rows(conn, [key]))[key]
                merged = dict(existing.values) | dict(step.values)
                await bound.upsert_rows(conn, [(key, merged)], updated_at=stamp)
            after = await self._local_row(key)
            assert after is not None
            for name, _ in step.values:
                self._write(
                    "local",
                    "app",
                    key,
                    name,
                    after.get(name),
                    before.get(name),
                    now,
                    now - step.backdate,
                )
        elif isinstance(step, sch.AppDelete):
            truth = self.coda_truth()
            remote = next((v for k, v in truth.values() if k == key), None)
            async with self.store.begin() as conn:
                await bound.delete_rows(conn, [key])
            self.model.deletes.append(
                Delete(
                    self.model.next_seq(),
                    "local",
                    "app",
                    key,
                    now,
                    unsynced=self._unsynced("remote", key, remote, before),
                )
            )

    # ------------------------------------------------------------------ cycles

    async def run_cycle(self, *, full: bool = False) -> CycleResult | None:
        assert self.engine is not None and self.store is not None
        if self.clock.monotonic() < self.not_before:
            self.clock.advance(self.not_before - self.clock.monotonic())
        self.cycle_no += 1
        known: int | None = None
        if any(r.kind == "empty_listing" for r in self.emu.faults.armed) or (
            self.emu.config.random_fault_rate > 0
        ):
            async with self.store.connect() as conn:
                known = await self.engine.repo.count_row_states(conn, self.binding.name)
        record = CycleRecord(
            self.cycle_no, self.clock.monotonic(), full, None, None, known, self.quiescent
        )
        self.cycles.append(record)
        self.in_cycle = True
        self.request_in_cycle = 0
        try:
            record.result = await self.engine.cycle(full=full)
            return record.result
        except SimulatedCrash as crash:
            record.error = f"crash at {crash.point}"
            self.in_cycle = False
            await self.restart()
        except CodaSyncError as exc:
            record.error = type(exc).__name__
            self.errors[type(exc).__name__] += 1
            if isinstance(exc, CodaError) and exc.retry_after_seconds:
                self.not_before = self.clock.monotonic() + exc.retry_after_seconds
        except Exception as exc:
            record.error = f"unexpected {type(exc).__name__}"
            self.errors[f"unexpected {type(exc).__name__}"] += 1
            tb = "".join(traceback.format_exception(exc, limit=-4)).strip()
            self.violations.append(
                Violation("I0", f"cycle {self.cycle_no} raised {type(exc).__name__}: {exc}\n{tb}")
            )
            self.in_cycle = False
            await self.restart()
        finally:
            self.in_cycle = False
        return None

    # ------------------------------------------------------------------ steps

    async def apply(self, step: sch.Step) -> None:
        emu = self.emu
        if isinstance(step, sch.Cycle):
            self.clock.advance(step.dt)
            await self.run_cycle(full=step.full)
        elif isinstance(step, sch.Advance):
            self.clock.advance(step.dt)
        elif isinstance(step, sch.PersonEdit | sch.PersonInsert | sch.PersonDelete):
            self.clock.advance(ACTOR_TICK)
            await self._person(step)
        elif isinstance(step, sch.AppEdit | sch.AppInsert | sch.AppDelete):
            self.clock.advance(ACTOR_TICK)
            await self._app(step)
        elif isinstance(step, sch.Fault):
            emu.faults.add(FaultRule(**sch.FAULTS[step.label], count=step.count))
        elif isinstance(step, sch.EmptyFullListing):
            rule = FaultRule("empty_listing", endpoint="listRows", count=1)
            emu.faults.add(rule)
            self.clock.advance(step.dt)
            await self.run_cycle(full=True)
            emu.faults._armed = [a for a in emu.faults._armed if a.rule is not rule]
        elif isinstance(step, sch.TransportFault):
            self.transport_faults.append([step.kind, step.method, step.count])
        elif isinstance(step, sch.RandomFaults):
            emu.set_config(random_fault_rate=step.rate, random_fault_kinds=step.kinds)
        elif isinstance(step, sch.Lag):
            emu.set_config(read_lag_seconds=step.seconds, read_lag_jitter_seconds=step.jitter)
            self.max_lag = max(self.max_lag, step.seconds + step.jitter)
            self.faults["read_lag"] += 1
        elif isinstance(step, sch.ApplyDelay):
            emu.set_config(apply_delay_seconds=step.seconds, apply_delay_jitter_seconds=step.jitter)
            self.faults["apply_delay"] += 1
        elif isinstance(step, sch.Crash):
            self.crash.armed.append([step.point, step.nth])
        elif isinstance(step, sch.Concurrent):
            self.concurrent.append((step.at, step.action))
        else:  # pragma: no cover
            raise AssertionError(step)
        if not self.in_cycle:
            self.learn_keys()

    async def _seed_local(self) -> None:
        for row_id, (key, values_) in self.coda_truth().items():
            ref = key or f"row:{row_id}"
            for name, value in values_.items():
                if name not in self.binding.readonly_columns:
                    self._write(
                        "remote", "seed", ref, name, value, MISSING, -1.0, -1.0, insert=True
                    )
        rng = random.Random(self.scenario.seed ^ 0x5EED)
        values = sch._Values(self.scenario.seed + 100_000, rng)
        for _ in range(self.p.local_rows):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            await self._app(sch.AppInsert(key, values.row()[1]))
        self.ops -= self.p.local_rows
        self.learn_keys()

    async def quiesce(self) -> None:
        """Faults stop, people and the app stop; run clean cycles until both sides agree."""
        from tests.simulation import invariants

        self.quiescent = True
        self.emu.faults.clear()
        self.emu.set_config(random_fault_rate=0.0)
        self.transport_faults.clear()
        self.crash.armed.clear()
        self.concurrent.clear()
        settle = self.p.mutation_timeout + self.max_lag + 60.0
        self.clock.advance(settle)
        done = 0
        for n in range(Q1_CYCLES):
            if n:
                self.clock.advance(self.p.interval)
            await self.run_cycle()
            done += 1
            if not await invariants.convergence(self):
                self.converged_after = done
                return
        # Not converged without a full scan: SQL-side changes must have reached Coda by now
        # (Coda-side ones may legitimately wait for the full scan).
        for v in await invariants.convergence(self, partial=True):
            self.violations.append(
                Violation("I1", f"[incremental, no full scan] {v.detail}", v.tag)
            )
        await self.run_cycle(full=True)
        done += 1
        strict: list[Violation] = []
        for n in range(Q2_CYCLES + 1):
            strict = await invariants.convergence(self)
            if not strict:
                self.converged_after = done
                return
            if n < Q2_CYCLES:
                self.clock.advance(self.p.interval)
                await self.run_cycle()
                done += 1
        self.violations.extend(strict)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Sim]:
        """The world set up (database copied, engine ready, initial rows), torn down after."""
        self.workdir = _scratch_dir()
        try:
            template = await _template_db()
            shutil.copyfile(template, self.workdir / "sync.db")
            await self._open()
            await self._seed_local()
            yield self
        finally:
            await self._close()
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def run(self) -> SimResult:
        """Play the schedule, quiesce, check every invariant."""
        from tests.simulation import invariants

        started = time.perf_counter()
        async with self.session():
            for step in self.scenario.steps:
                await self.apply(step)
            await self.quiesce()
            if self.check:
                self.violations.extend(await invariants.check_all(self))
            figures = self.figures(time.perf_counter() - started)
        return SimResult(self.scenario, self.violations, self.trace_hash(), figures)

    # ------------------------------------------------------------------ figures

    def figures(self, wall: float) -> dict[str, Any]:
        from tests.simulation import invariants

        faults = Counter(self.faults)
        faults.update(self.emu.faults.counts)
        for point, n in self.crash.fired.items():
            faults[f"crash:{point}"] += n
        if abs(self.p.skew) > 0:
            faults["clock_skew"] += 1
        backdated = sum(
            1
            for s in self.scenario.steps
            if isinstance(s, sch.AppEdit | sch.AppInsert) and s.backdate
        )
        if backdated:
            faults["late_commit_early_updated_at"] += backdated
        if self.concurrent_ops:
            faults["concurrent_edit"] += self.concurrent_ops
        return {
            "steps": len(self.scenario.steps),
            "ops": self.ops,
            "cycles": len(self.cycles),
            "restarts": self.restarts,
            "cycle_errors": dict(self.errors),
            "requests": len(self.trace),
            "faults": dict(faults),
            "crash_points_reached": dict(self.crash.reached),
            "crash_points_fired": dict(self.crash.fired),
            "crash_cells": dict(self.crash.cells),
            "cycles_to_converge": self.converged_after,
            "peak_writes_6s": invariants.peak_writes(self.trace),
            "virtual_seconds": self.clock.monotonic(),
            "wall_seconds": wall,
            **invariants.extra_figures(self),
        }
