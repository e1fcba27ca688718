"""The real objects of one daemon process, built from `Settings`, and their orderly closing.

What it owns: wiring. `Runtime` builds, in this order, and closes in reverse:

    leadership   SQLite: flock on `<db>.lock` (held for the process); PostgreSQL: see below
    store        open_store(): engine, "SELECT 1", Alembic upgrade to head
    http         one httpx.AsyncClient (explicit connect/read/write/pool timeouts)
    limiter      ONE RateLimiter for every binding: Coda's limits are per API token
    client       one CodaClient, its `on_request` hook feeding `Metrics` (and progress
                 listeners: the service's watchdog gate during long cycles)
    engines      one Engine per binding (each with its own seeded rng)

`service.run()` and `service.run_once()` (the CLI's `once`) both go through it, so both take
the lock. Tests pass `transport=httpx.ASGITransport(app=emulator_app)` to talk to an
in-process Coda emulator. Knows nothing of scheduling or HTTP routes.

`Leadership.holds(binding)` is asked before every cycle. PostgreSQL: `PgLeadership`
(daemon/leadership.py), one advisory lock per binding, so several instances may share one
database; each engine also gets its `leader_check`, asked before every Coda write batch and
every local commit (`LeadershipLost` ends the cycle at once when the lock is gone).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Protocol

import anyio
import httpx
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.clock import Clock, SystemClock
from daemon.coda.client import ClientSettings, CodaClient
from daemon.coda.pacing import READ, WRITE, RateLimiter
from daemon.config import Settings
from daemon.engine import Engine
from daemon.leadership import PgLeadership
from daemon.metrics import Metrics
from daemon.store.db import Store, open_store, sqlite_path
from daemon.store.lock import LockHandle, acquire_sqlite_lock

logger = logging.getLogger(__name__)

HTTP_CONNECT_TIMEOUT_SECONDS: Final = 10.0
HTTP_WRITE_TIMEOUT_SECONDS: Final = 30.0
HTTP_POOL_TIMEOUT_SECONDS: Final = 10.0
HTTP_MAX_CONNECTIONS: Final = 10
HTTP_MAX_KEEPALIVE: Final = 5
#: Closing (http client, database) on exit gets at most this long, shielded from cancellation.
CLOSE_TIMEOUT_SECONDS: Final = 10.0


class Leadership(Protocol):
    """Who may sync which binding. Asked before every cycle."""

    elected: bool
    """True when instances elect a leader per binding (PostgreSQL): some may stand by."""

    async def acquire(self) -> None:
        """Take what must be held before READY=1; raise LockHeldError when another has it."""
        ...

    async def holds(self, binding: str) -> bool:
        """True when this process may run a cycle of `binding` now."""
        ...

    async def release(self) -> None:
        """Give everything up (idempotent)."""
        ...


class FileLockLeadership:
    """SQLite: one process per database file, by flock (dropped by the kernel on any exit)."""

    elected = False
    """One process per database: no per-binding election (readiness reports no role)."""

    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._handle: LockHandle | None = None

    async def acquire(self) -> None:
        self._handle = acquire_sqlite_lock(self._path)
        if self._handle.path is not None:
            logger.info("holding the process lock %s", self._handle.path)

    async def holds(self, binding: str) -> bool:
        return self._handle is not None

    async def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


def make_leadership(settings: Settings) -> Leadership:
    """The leadership strategy for the configured database."""
    if settings.database.url.startswith("sqlite"):
        return FileLockLeadership(settings.database.url)
    return PgLeadership(
        settings.database.url,
        [b.name for b in settings.bindings],
        lease_seconds=settings.database.lease_seconds,
    )


def http_timeout(settings: Settings) -> httpx.Timeout:
    """Every phase of a Coda request has its own deadline (STYLE 2.6)."""
    return httpx.Timeout(
        connect=HTTP_CONNECT_TIMEOUT_SECONDS,
        read=settings.coda.timeout_seconds,
        write=HTTP_WRITE_TIMEOUT_SECONDS,
        pool=HTTP_POOL_TIMEOUT_SECONDS,
    )


class Runtime:
    """Async context manager holding the process's lock, store, HTTP client and engines.

    ``async with Runtime(settings, clock=clock, rng=rng) as rt: rt.engines["participation"]``.
    `transport` replaces the network (tests: ``httpx.ASGITransport(app=emulator)``);
    `registry` defaults to a fresh `CollectorRegistry` (never the global one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry, [b.name for b in settings.bindings])
        self.leadership = make_leadership(settings)
        self.limiter = RateLimiter(
            self.clock,
            limits={
                READ: (settings.coda.read_limit, settings.coda.rate_window_seconds),
                WRITE: (settings.coda.write_limit, settings.coda.rate_window_seconds),
            },
        )
        self._transport = transport
        self._stack: contextlib.AsyncExitStack | None = None
        self._limiter_seen: dict[str, float] = {READ: 0.0, WRITE: 0.0}
        self._retries_seen: dict[str, int] = {READ: 0, WRITE: 0}
        self._store: Store | None = None
        self._client: CodaClient | None = None
        self.engines: dict[str, Engine] = {}
        self.progress_listeners: list[Callable[[], None]] = []
        """Called after every Coda request: a cycle that makes requests is making progress
        (the service feeds its watchdog gate from here during long cycles)."""

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the Runtime is not open (use `async with Runtime(...)`)")
        return self._store

    @property
    def client(self) -> CodaClient:
        if self._client is None:
            raise RuntimeError("the Runtime is not open (use `async with Runtime(...)`)")
        return self._client

    async def __aenter__(self) -> Runtime:
        settings = self.settings
        async with contextlib.AsyncExitStack() as stack:
            await self.leadership.acquire()
            stack.push_async_callback(self.leadership.release)
            store = await open_store(settings.database)
            stack.push_async_callback(store.close)
            http = httpx.AsyncClient(
                timeout=http_timeout(settings),
                limits=httpx.Limits(
                    max_connections=HTTP_MAX_CONNECTIONS,
                    max_keepalive_connections=HTTP_MAX_KEEPALIVE,
                ),
                transport=self._transport,
                headers={"User-Agent": f"coda-sync/{__version__}"},
            )
            stack.push_async_callback(http.aclose)
            client = CodaClient(
                http,
                token=settings.coda_token.get(),
                base_url=settings.coda.api_base_url,
                limiter=self.limiter,
                clock=self.clock,
                rng=random.Random(self.rng.getrandbits(64)),
                settings=ClientSettings(
                    timeout_seconds=settings.coda.timeout_seconds,
                    max_attempts=settings.coda.max_attempts,
                    page_size=settings.coda.page_size,
                ),
                on_request=self._on_request,
            )
            self.engines = {
                b.name: Engine(
                    settings=settings,
                    binding=b,
                    client=client,
                    store=store,
                    clock=self.clock,
                    rng=random.Random(self.rng.getrandbits(64)),
                    leader_check=self._leader_check(b.name),
                )
                for b in settings.bindings
            }
            self._store, self._client = store, client
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client, the store and the lock, even while being cancelled."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_SECONDS) as scope:
            await stack.aclose()
        if scope.cancelled_caught:
            logger.warning("closing the runtime took over %.0f s; gave up", CLOSE_TIMEOUT_SECONDS)
        self._store = self._client = None

    def _leader_check(self, binding: str) -> Callable[[], Awaitable[bool]] | None:
        """PostgreSQL: the engine re-checks its lock before each write (None on SQLite)."""
        if isinstance(self.leadership, PgLeadership):
            return self.leadership.checker(binding)
        return None

    def _on_request(self, cls: str, outcome: str, seconds: float) -> None:
        self.metrics.observe_request(cls, outcome, seconds)
        for listener in self.progress_listeners:
            listener()

    def refresh_metrics(self) -> None:
        """Copy counters kept by the shared rate limiter and the client into `Metrics`
        (cheap; idempotent)."""
        for cls in (READ, WRITE):
            total = self.limiter.wait_seconds(cls)
            delta = total - self._limiter_seen[cls]
            if delta > 0:
                self.metrics.limiter_wait.labels(cls).inc(delta)
                self._limiter_seen[cls] = total
            if self._client is not None:
                retried = self._client.stats.retries_by_class[cls]
                if retried > self._retries_seen[cls]:
                    self.metrics.retries.labels(cls).inc(retried - self._retries_seen[cls])
                    self._retries_seen[cls] = retried
