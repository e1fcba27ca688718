"""The long-running daemon: one root task group, start-up, the controller, shutdown.

What it owns: the process's life around the per-binding loops (`scheduler.Scheduler`). One
root task group holds:

    control server   await tg.start(asgi_server.serve, ...): the port is bound before READY=1
    signal task      SIGTERM/SIGINT -> request_stop() (the only signal handler of the process)
    watchdog pinger  systemd.run_pinger, fed by WatchdogGate.progress() from the loops (after
                     each cycle, on each wake-up, and per Coda request during long cycles)
    schedulers       one loop per binding (an inner task group, so shutdown can grant a grace)

Start-up, in order (READY=1 only after all of it): config (given), process lock, store opened
and migrated (`Runtime`), every bound table checked (`engine.prepare()`), port bound.

`Service` is also the control port's `Controller`: triggers, run records (last 1000 in
memory; finished ones saved with `repo.put_run`), /healthz, /readyz, /status, STATUS= lines.

Shutdown: request_stop() (SIGTERM) sends STOPPING=1, wakes idle loops (they return), lets
running cycles finish for up to stop_grace_seconds, then cancels them (safe: every DB step is
one transaction, every Coda write idempotent), marks unfinished runs failed, saves the run
records (shielded, bounded) and returns 0. A second signal cancels at once.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

import anyio
import httpx
from anyio.abc import TaskGroup

from daemon import __version__
from daemon.asgi_server import ServerLimits, serve
from daemon.clock import Clock, SystemClock
from daemon.config import Secret, Settings
from daemon.control import Busy, Probe, Triggered, create_app
from daemon.engine import CycleResult
from daemon.errors import LockHeldError, StoreError
from daemon.leadership import STANDBY
from daemon.metrics import Metrics
from daemon.runtime import Runtime
from daemon.scheduler import Run, RunPart, Scheduler, iso, run_json
from daemon.store.repo import StateRepo
from daemon.systemd import Notifier, WatchdogGate, run_pinger

logger = logging.getLogger(__name__)

MAX_RUNS_IN_MEMORY: Final = 1000
#: Idle waits are cut into slices of at most this, so the loop reports progress regularly.
MAX_IDLE_SLICE_SECONDS: Final = 30.0
#: A cycle running this long past cycle_timeout_seconds did not react to its cancellation.
STUCK_MARGIN_SECONDS: Final = 30.0
READY_INTERVALS: Final = 3
SAVE_TIMEOUT_SECONDS: Final = 5.0
_ERROR_CHARS: Final = 500


class Service:
    """The running daemon for `Runtime`'s engines; also the control port's `Controller`."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        *,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.clock: Clock = runtime.clock
        self.rng = random.Random(runtime.rng.getrandbits(64))
        self.notifier = notifier or Notifier({})
        self.gate = WatchdogGate()
        # A cycle that makes Coda requests is alive: long first scans keep the watchdog fed.
        runtime.progress_listeners.append(self.gate.progress)
        watchdog = self.notifier.watchdog_interval_seconds()
        self.idle_slice_seconds = min(MAX_IDLE_SLICE_SECONDS, watchdog or MAX_IDLE_SLICE_SECONDS)
        self.stopping = False
        self.control_url: str | None = None
        self.schedulers = {name: Scheduler(self, e) for name, e in runtime.engines.items()}
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._loops = anyio.CancelScope()
        self._tg: TaskGroup | None = None
        self._running = False
        self._started_at = self.clock.now()
        self._secrets = [s.get() for s in (settings.coda_token, settings.trigger_token) if s]
        self.app = create_app(self, max_body_bytes=settings.control.max_body_bytes)

    # ------------------------------------------------------------------ Controller

    @property
    def bindings(self) -> tuple[str, ...]:
        return tuple(self.schedulers)

    @property
    def trigger_token(self) -> Secret | None:
        return self.settings.trigger_token

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    def trigger(self, binding: str | None, *, full: bool) -> Triggered:
        if self.stopping:
            raise Busy("the daemon is stopping", retry_after_seconds=30)
        names = [binding] if binding is not None else list(self.schedulers)
        run = Run(
            f"r-{secrets.token_hex(8)}",
            binding,
            full,
            self.clock.now(),
            {name: RunPart() for name in names},
        )
        self._runs[run.run_id] = run
        self._forget_saved_runs()
        coalesced = [self.schedulers[name].request(run, full=full) for name in names]
        logger.info(
            "sync requested: %s (%s%s)",
            run.run_id,
            binding or "all bindings",
            ", full" if full else "",
        )
        return Triggered(run_json(run.record()), all(coalesced))

    async def run_info(self, run_id: str) -> Mapping[str, Any] | None:
        run = self._runs.get(run_id)
        if run is not None:
            return run_json(run.record())
        if not run_id.startswith("r-"):
            return None
        async with self.runtime.store.connect() as conn:
            record = await self.engine_repo.get_run(conn, run_id)
        return None if record is None else run_json(record)

    def health(self) -> Probe:
        if not self._running:
            return Probe(False, ("the sync loop is not running",))
        limit = self.settings.sync.cycle_timeout_seconds + STUCK_MARGIN_SECONDS
        now = self.clock.monotonic()
        reasons = tuple(
            f"{s.name}: a cycle has been running for {now - s.status.running_since:.0f} s"
            for s in self.schedulers.values()
            if s.status.running_since is not None and now - s.status.running_since > limit
        )
        return Probe(not reasons, reasons)

    def readiness(self) -> Probe:
        reasons: list[str] = []
        if self.stopping:
            reasons.append("stopping")
        limit = READY_INTERVALS * self.settings.sync.interval_seconds
        now = self.clock.monotonic()
        for s in self.schedulers.values():
            st = s.status
            if st.role == STANDBY:
                continue  # another instance syncs it: standing by is being ready
            if st.auth_failed:
                reasons.append(f"{st.name}: failed: auth ({(st.last_error or {}).get('message')})")
            elif st.guard is not None:
                reasons.append(f"{st.name}: delete guard tripped: {st.guard}")
            elif st.last_success is None:
                reasons.append(f"{st.name}: no successful cycle yet")
            elif now - st.last_success > limit:
                reasons.append(
                    f"{st.name}: last successful cycle {now - st.last_success:.0f} s "
                    f"ago (more than {READY_INTERVALS} intervals)"
                )
        return Probe(not reasons, tuple(reasons), role=self.role())

    def role(self) -> str | None:
        """PostgreSQL: leader (of every binding) | standby (of every one) | mixed; None on
        SQLite (one process per database) and before the first cycle decided it."""
        if not self.runtime.leadership.elected:
            return None
        roles = {s.status.role for s in self.schedulers.values()}
        if None in roles:
            return None
        return roles.pop() if len(roles) == 1 else "mixed"

    def status(self) -> Mapping[str, Any]:
        return {
            "version": __version__,
            "state": "stopping" if self.stopping else ("running" if self._running else "starting"),
            "started_at": iso(self._started_at),
            "uptime_seconds": round((self.clock.now() - self._started_at).total_seconds(), 3),
            "healthy": self.health().ok,
            "ready": self.readiness().ok,
            "control_url": self.control_url,
            "role": self.role(),
            "watchdog_progress_reports": self.gate.reports,
            "bindings": {name: s.status.as_json() for name, s in self.schedulers.items()},
        }

    def refresh_metrics(self) -> None:
        self.runtime.refresh_metrics()

    # ------------------------------------------------------------------ helpers

    @property
    def engine_repo(self) -> StateRepo:
        return next(iter(self.runtime.engines.values())).repo

    def describe(self, error: BaseException) -> str:
        """`Class: message` of an error, shortened, with every known secret masked."""
        text = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, TimeoutError) and not str(error):
            limit = self.settings.sync.cycle_timeout_seconds
            text = f"the cycle exceeded cycle_timeout_seconds ({limit:g} s)"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"{type(error).__name__}: {text}"[:_ERROR_CHARS]

    def status_line(self) -> str:
        """One line for STATUS=: "participation: ok 2s ago, 0 pending; next in 28s"."""
        if self.stopping:
            return "stopping"
        now, mono, parts = self.clock.now(), self.clock.monotonic(), []
        for s in self.schedulers.values():
            st = s.status
            if st.auth_failed:
                text = f"{st.name}: FAILED: auth"
            elif st.consecutive_failures:
                text = f"{st.name}: failing x{st.consecutive_failures}"
            elif st.last_success is not None:
                text = f"{st.name}: ok {mono - st.last_success:.0f}s ago"
            else:
                text = f"{st.name}: {st.state}"
            text += f", {st.pending_mutations} pending"
            if st.next_cycle_at is not None:
                text += f"; next in {max(0.0, (st.next_cycle_at - now).total_seconds()):.0f}s"
            parts.append(text)
        return " | ".join(parts)

    def _forget_saved_runs(self) -> None:
        """Keep at most MAX_RUNS_IN_MEMORY runs in memory, dropping the oldest SAVED ones.

        NB: unfinished or unsaved runs stay whatever their number (bounded by the trigger
        rate limit): their records exist nowhere else yet.
        """
        excess = len(self._runs) - MAX_RUNS_IN_MEMORY
        if excess > 0:
            for run_id in [rid for rid, run in self._runs.items() if run.saved][:excess]:
                del self._runs[run_id]

    async def save_runs(self) -> None:
        """Persist finished, unsaved run records (a failing store is logged, not fatal)."""
        runs = [r for r in self._runs.values() if r.finished and not r.saved]
        if not runs:
            return
        repo = self.engine_repo
        try:
            async with self.runtime.store.begin() as conn:
                for run in runs:
                    await repo.put_run(conn, run.record())
                await repo.prune_runs(conn, keep=MAX_RUNS_IN_MEMORY)
        except StoreError as exc:
            logger.warning("could not save %d run record(s): %s", len(runs), exc)
            return
        for run in runs:
            run.saved = True
        self._forget_saved_runs()

    # ------------------------------------------------------------------ running

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM); a second call cancels running cycles at once."""
        if self.stopping:
            logger.warning("second stop request: cancelling running cycles now")
            self._loops.cancel()
            return
        self.stopping = True
        self.notifier.stopping("stopping: finishing running cycles")
        logger.info(
            "stopping: running cycles get %.0f s to finish", self.settings.sync.stop_grace_seconds
        )
        for s in self.schedulers.values():
            s.wake()
        if self._tg is not None:
            self._tg.start_soon(self._grace)
        else:
            self._loops.cancel()

    async def _grace(self) -> None:
        # NB: real time, not the injected clock: it must fit inside systemd's TimeoutStopSec.
        await anyio.sleep(self.settings.sync.stop_grace_seconds)
        logger.warning(
            "stop grace of %.0f s is over: cancelling running cycles",
            self.settings.sync.stop_grace_seconds,
        )
        self._loops.cancel()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for signum in received:
                logger.info("received %s", signal.Signals(signum).name)
                self.request_stop()

    async def _schedule(self, root: anyio.CancelScope) -> None:
        try:
            with self._loops:
                async with anyio.create_task_group() as tg:
                    for s in self.schedulers.values():
                        tg.start_soon(s.run)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SAVE_TIMEOUT_SECONDS):
                await self._finish_runs()
        root.cancel()

    async def _finish_runs(self) -> None:
        now = self.clock.now()
        for run in self._runs.values():
            for part in run.parts.values():
                if part.state in ("queued", "running"):
                    part.state, part.finished_at = "failed", now
                    part.error = "the daemon stopped before this run finished"
        await self.save_runs()

    async def serve(
        self,
        *,
        handle_signals: bool = True,
        bind: bool = True,
        ready_callback: Callable[[Service], object] | None = None,
    ) -> int:
        """Run until stopped: 0 after a stop request, 1 after an unexpected error (logged)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if bind:
                    limits = ServerLimits(max_body_bytes=self.settings.control.max_body_bytes)
                    start = partial(
                        serve,
                        self.app,
                        host=self.settings.control.host,
                        port=self.settings.control.port,
                        limits=limits,
                    )
                    host, port = await tg.start(start)
                    shown = f"[{host}]" if ":" in host else host
                    self.control_url = f"http://{shown}:{port}"
                    # NB: a stable line on stderr whatever the log format (tests, the CLI).
                    sys.stderr.write(f"control port listening on {self.control_url}\n")
                    sys.stderr.flush()
                if handle_signals:
                    tg.start_soon(self._signals)
                tg.start_soon(run_pinger, self.notifier, self.gate, self.clock)
                tg.start_soon(self._schedule, tg.cancel_scope)
                self._running = True
                self.gate.progress()
                self.notifier.ready("started; first cycles running")
                logger.info(
                    "coda-sync %s ready: %d binding(s): %s",
                    __version__,
                    len(self.schedulers),
                    ", ".join(self.schedulers),
                )
                if ready_callback is not None:
                    ready_callback(self)
        except Exception:
            logger.exception("coda-sync stopped after an unexpected error")
            return 1
        finally:
            self._running = False
            self._tg = None
        cycles = sum(s.status.cycles for s in self.schedulers.values())
        logger.info("stopped after %d cycle(s)", cycles)
        self.notifier.status("stopped")
        return 0


async def _prepare(runtime: Runtime, settings: Settings) -> None:
    for engine in runtime.engines.values():
        with anyio.fail_after(settings.sync.cycle_timeout_seconds):
            await engine.prepare()


async def run(
    settings: Settings,
    *,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    ready_callback: Callable[[Service], object] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
    handle_signals: bool = True,
) -> int:
    """The daemon (`coda-sync run`): returns 0 after SIGTERM/SIGINT, 1 after a crash.

    Start-up failures (lock held, database unreachable, bound table mismatch) raise, and the
    CLI maps them to exit codes. `ready_callback(service)` runs right after READY=1;
    `transport` replaces the network (tests); `environ` feeds sd_notify (default os.environ).
    """
    notifier = Notifier(os.environ if environ is None else environ)
    try:
        notifier.status("starting: lock, database")
        async with Runtime(settings, clock=clock, rng=rng, transport=transport) as runtime:
            notifier.status("starting: checking the bound tables")
            await _prepare(runtime, settings)
            service = Service(settings, runtime, notifier=notifier)
            return await service.serve(handle_signals=handle_signals, ready_callback=ready_callback)
    finally:
        notifier.close()


async def run_once(
    settings: Settings,
    *,
    binding: str | None = None,
    full: bool = False,
    dry_run: bool = False,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
) -> list[CycleResult]:
    """One cycle of `binding` (default: each binding in turn), with the lock (`coda-sync once`).

    Errors propagate (the CLI maps them); each cycle runs under cycle_timeout_seconds.
    """
    names = [settings.binding(binding).name] if binding else [b.name for b in settings.bindings]
    clock = clock or SystemClock()
    async with Runtime(settings, clock=clock, rng=rng, transport=transport) as runtime:
        results = []
        for name in names:
            if not await runtime.leadership.holds(name):  # PostgreSQL: a daemon leads it
                raise LockHeldError(f"another coda-sync instance syncs binding {name!r}")
            with anyio.fail_after(settings.sync.cycle_timeout_seconds):
                await runtime.engines[name].prepare()
                results.append(await runtime.engines[name].cycle(full=full, dry_run=dry_run))
        return results
