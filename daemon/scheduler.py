"""One binding's loop: waits, triggers (coalesced), cycles, backoff, status, run records.

What it owns: *when* one binding's cycles run and what is recorded about them, never how a
cycle works (`engine`). `service.Service` owns one `Scheduler` per binding, the task group
they run in, shutdown and the control port. Every wait is on the injected clock and capped,
so the watchdog gate sees progress at least every `idle_slice_seconds`::

    cycle ----> wait min(delay, idle slice) or a wake-up ----> cycle ...
      |  delay = interval x (1 +- jitter)                        on success
      |          min(interval x 2^(n-1), max_backoff), jittered   after n failures in a row
      |          max_backoff                                      401/403 ("failed: auth")
      |          never below the Retry-After the error carried (triggers wait for it too)
      +- under anyio.fail_after(cycle_timeout_seconds); `except Exception` only there;
         cancellation is recorded (runs failed, outcome "abandoned") and re-raised

Triggers coalesce: `request()` sets flags (`full` is sticky) and `send_nowait`s on a size-1
stream, ignoring WouldBlock; a cycle takes every pending request (and drains the stream) at
its start. So any number of triggers during a cycle yields exactly ONE follow-up cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio

from daemon import backoff
from daemon.engine import CycleResult, Engine
from daemon.errors import CodaAuthError, CodaError, CodaForbidden, CodaSyncError, LeadershipLost
from daemon.leadership import LEADER, STANDBY, standby_poll_seconds
from daemon.store.repo import RunRecord, StateRepo

if TYPE_CHECKING:
    from daemon.service import Service

logger = logging.getLogger(__name__)


def iso(at: datetime | None) -> str | None:
    """An aware UTC datetime as ISO 8601 with milliseconds and "Z" (None stays None)."""
    return None if at is None else at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class RunPart:
    """One binding's share of a run."""

    state: str = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, int] | None = None
    error: str | None = None


@dataclass(slots=True)
class Run:
    """A triggered sync (POST /sync): one part per binding it covers."""

    run_id: str
    binding: str | None
    full: bool
    requested_at: datetime
    parts: dict[str, RunPart]
    saved: bool = False

    @property
    def state(self) -> str:
        states = {p.state for p in self.parts.values()}
        if states == {"succeeded"}:
            return "succeeded"
        if states <= {"succeeded", "failed"}:
            return "failed"
        return "queued" if states == {"queued"} else "running"

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")

    def record(self) -> RunRecord:
        parts = self.parts.values()
        starts = [p.started_at for p in parts if p.started_at is not None]
        ends = [p.finished_at for p in parts if p.finished_at is not None]
        results = [p.result for p in parts if p.result is not None]
        errors = [f"{name}: {p.error}" for name, p in self.parts.items() if p.error]
        total = None
        if results and self.finished:
            total = {k: sum(r[k] for r in results) for k in results[0]}
        return RunRecord(
            run_id=self.run_id,
            state=self.state,
            requested_at=self.requested_at,
            binding=self.binding,
            full=self.full,
            started_at=min(starts) if starts else None,
            finished_at=max(ends) if ends and self.finished else None,
            result=total,
            error="; ".join(errors) if errors and self.state == "failed" else None,
        )


def run_json(record: RunRecord) -> dict[str, Any]:
    """The GET /runs/{id} document of a run record (the Pack's contract)."""
    return {
        "run_id": record.run_id,
        "state": record.state,
        "binding": record.binding,
        "full": record.full,
        "requested_at": iso(record.requested_at),
        "started_at": iso(record.started_at),
        "finished_at": iso(record.finished_at),
        "result": None if record.result is None else dict(record.result),
        "error": record.error,
    }


def run_counts(stats: Mapping[str, int]) -> dict[str, int]:
    """A cycle's stats as a run's result: pulled, pushed, deleted, conflicts, quarantined."""
    return {
        "pulled": stats.get("pulled_inserts", 0) + stats.get("pulled_updates", 0),
        "pushed": stats.get("pushed_inserts", 0) + stats.get("pushed_updates", 0),
        "deleted": stats.get("pulled_deletes", 0) + stats.get("pushed_deletes", 0),
        "conflicts": stats.get("conflicts", 0),
        "quarantined": stats.get("quarantined", 0),
    }


@dataclass(slots=True)
class BindingStatus:
    """What /status, /readyz and STATUS= show about one binding."""

    name: str
    state: str = "starting"  # starting | ok | guard tripped | backoff | failed: auth | standby
    #                          | stopped (whether a cycle runs right now: `running`)
    role: str | None = None  # leader | standby (PostgreSQL leader election); None: not yet
    cycles: int = 0
    consecutive_failures: int = 0
    auth_failed: bool = False
    running_since: float | None = None  # monotonic
    last_success: float | None = None  # monotonic
    last_cycle_started_at: datetime | None = None
    last_cycle_finished_at: datetime | None = None
    last_result: str | None = None
    last_duration_seconds: float | None = None
    last_success_at: datetime | None = None
    last_error: dict[str, str] | None = None
    last_summary: str | None = None
    guard: str | None = None
    next_cycle_at: datetime | None = None
    totals: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("rows_pulled", "rows_pushed", "rows_merged", "rows_deleted", "conflicts"), 0
        )
    )
    quarantined: int = 0
    pending_mutations: int = 0
    oldest_pending_mutation_age_seconds: float = 0.0

    @property
    def running(self) -> bool:
        """True while a cycle runs."""
        return self.running_since is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "role": self.role,
            "running": self.running,
            "cycles": self.cycles,
            "consecutive_failures": self.consecutive_failures,
            "last_cycle_started_at": iso(self.last_cycle_started_at),
            "last_cycle_finished_at": iso(self.last_cycle_finished_at),
            "last_result": self.last_result,
            "last_duration_seconds": self.last_duration_seconds,
            "last_success_at": iso(self.last_success_at),
            "next_cycle_at": iso(self.next_cycle_at),
            **self.totals,
            "quarantined": self.quarantined,
            "pending_mutations": self.pending_mutations,
            "oldest_pending_mutation_age_seconds": self.oldest_pending_mutation_age_seconds,
            "guard": self.guard,
            "last_summary": self.last_summary,
            "last_error": self.last_error,
        }


class Scheduler:
    """The loop of one binding: waits, triggers, cycles, backoff, status and metrics."""

    def __init__(self, service: Service, engine: Engine) -> None:
        self.svc = service
        self.engine = engine
        self.name = engine.binding.name
        self.status = BindingStatus(self.name)
        self._wake_tx, self._wake_rx = anyio.create_memory_object_stream[None](1)
        self._requested = False
        self._want_full = False
        self._queued: list[Run] = []
        self._next_at = 0.0  # monotonic: the first cycle starts at once
        self._not_before = 0.0  # monotonic: Retry-After floor, triggers included
        self.history: list[tuple[str, float]] = []  # (outcome, delay), last 100, for tests

    def request(self, run: Run | None, *, full: bool) -> bool:
        """Ask for a cycle now; True when it joined a request already pending (coalesced)."""
        coalesced = self._requested
        self._requested = True
        self._want_full = self._want_full or full
        if run is not None:
            self._queued.append(run)
        self.wake()
        return coalesced

    def wake(self) -> None:
        try:
            self._wake_tx.send_nowait(None)
        except anyio.WouldBlock:
            pass  # a wake-up is already pending: coalesced
        except anyio.ClosedResourceError:
            pass  # the loop has ended (stopping)

    def _take_request(self) -> tuple[bool, list[Run]]:
        full, runs = self._want_full, self._queued
        self._requested, self._want_full, self._queued = False, False, []
        while True:  # every pending trigger is served by this cycle
            try:
                self._wake_rx.receive_nowait()
            except anyio.WouldBlock:
                break
        return full, runs

    async def run(self) -> None:
        """Run cycles until the service stops (or this task is cancelled)."""
        try:
            await self._loop()
        finally:
            self.status.state = "stopped"
            self._wake_tx.close()
            self._wake_rx.close()

    async def _loop(self) -> None:
        clock = self.svc.clock
        while not self.svc.stopping:
            now = clock.monotonic()
            due = max(now, self._not_before) if self._requested else self._next_at
            if due > now:
                await self._wait(min(due - now, self.svc.idle_slice_seconds))
                self.svc.gate.progress()
                continue
            full, runs = self._take_request()
            delay = await self._cycle(full, runs)
            self.svc.gate.progress()
            self._next_at = clock.monotonic() + delay
            self.status.next_cycle_at = clock.now() + timedelta(seconds=delay)
            self.svc.notifier.status(self.svc.status_line())
            await self.svc.save_runs()

    async def _wait(self, seconds: float) -> None:
        """Sleep `seconds` on the clock, or less when woken (trigger or stop)."""
        async with anyio.create_task_group() as tg:

            async def alarm() -> None:
                await self.svc.clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(alarm)
            await self._wake_rx.receive()
            tg.cancel_scope.cancel()

    async def _cycle(self, full: bool, runs: list[Run]) -> float:
        """One cycle at the boundary where exceptions are caught; returns the next delay."""
        svc, st = self.svc, self.status
        started = svc.clock.now()
        st.running_since = svc.clock.monotonic()
        st.last_cycle_started_at = started
        for run in runs:
            run.parts[self.name] = RunPart("running", started)
        result: CycleResult | None = None
        error: Exception | None = None
        try:
            if not await svc.runtime.leadership.holds(self.name):
                return self._standby(runs)  # another instance syncs it
            st.role = LEADER
            with anyio.fail_after(svc.settings.sync.cycle_timeout_seconds):
                result = await self.engine.cycle(full=full)
                await self._observe()
        except anyio.get_cancelled_exc_class():
            self._record(runs, None, None, abandoned=True)
            raise
        except LeadershipLost as exc:  # nothing more was sent or committed: stand by
            logger.warning("binding %s: %s; standing by", self.name, exc)
            return self._standby(runs)
        except Exception as exc:  # the cycle boundary: a failed cycle must not stop the loop
            error = exc
        return self._record(runs, result, error)

    def _standby(self, runs: list[Run]) -> float:
        """Another instance leads this binding: idle, and try again soon (within the lease)."""
        st, settings = self.status, self.svc.settings
        st.state, st.role, st.running_since = STANDBY, STANDBY, None
        self._fail_runs(runs, "another coda-sync instance syncs this binding")
        return standby_poll_seconds(settings.sync.interval_seconds, settings.database.lease_seconds)

    async def _observe(self) -> None:
        """Quarantine size and the oldest unconfirmed write, for status and metrics."""
        repo: StateRepo = self.engine.repo
        async with self.svc.runtime.store.connect() as conn:
            self.status.quarantined = await repo.quarantine_count(conn, self.name)
            open_ = await repo.list_open_mutations(conn, self.name)
        oldest = min((m.created_at for m in open_), default=None)
        age = 0.0 if oldest is None else (self.svc.clock.now() - oldest).total_seconds()
        self.status.oldest_pending_mutation_age_seconds = round(max(0.0, age), 3)

    def _fail_runs(self, runs: list[Run], message: str) -> None:
        now = self.svc.clock.now()
        for run in runs:
            part = run.parts[self.name]
            part.state, part.finished_at, part.error = "failed", now, message

    def _record(
        self,
        runs: list[Run],
        result: CycleResult | None,
        error: Exception | None,
        *,
        abandoned: bool = False,
    ) -> float:
        """Status, metrics, runs and logs after a cycle; returns the delay to the next one."""
        svc, st, m = self.svc, self.status, self.svc.metrics
        now, duration = svc.clock.now(), svc.clock.monotonic() - (st.running_since or 0.0)
        st.running_since, st.cycles = None, st.cycles + 1
        st.last_cycle_finished_at, st.last_duration_seconds = now, round(duration, 3)
        if abandoned:
            outcome = "abandoned"
        elif error is not None:
            outcome = "failure"
        elif result is not None and result.guard is not None:
            outcome = "guard_tripped"
        else:
            outcome = "success"
        st.last_result = outcome
        m.cycles.labels(self.name, outcome).inc()
        m.cycle_duration.labels(self.name).observe(duration)
        if result is not None:
            self._count(result)
        if abandoned:
            self._fail_runs(runs, "the daemon stopped during this cycle")
            return 0.0
        if error is not None:
            delay = self._failed(error)
            self._fail_runs(runs, st.last_error["message"] if st.last_error else "failed")
        else:
            assert result is not None
            delay = self._succeeded(result)
            for run in runs:
                part = run.parts[self.name]
                part.finished_at, part.result = now, run_counts(result.stats)
                part.state = "succeeded" if result.guard is None else "failed"
                if result.guard is not None:
                    part.error = f"delete guard tripped: {result.guard.reason}"
        m.consecutive_failures.labels(self.name).set(st.consecutive_failures)
        m.auth_failed.labels(self.name).set(1 if st.auth_failed else 0)
        svc.runtime.refresh_metrics()
        self.history = [*self.history[-99:], (outcome, delay)]
        return delay

    def _count(self, result: CycleResult) -> None:
        s, m, st, name = result.stats, self.svc.metrics, self.status, self.name
        for direction in ("pull", "push"):
            for kind, suffix in (
                ("insert", "inserts"),
                ("update", "updates"),
                ("delete", "deletes"),
            ):
                n = s.get(f"{direction}ed_{suffix}", 0)
                if n:
                    m.rows.labels(name, direction, kind).inc(n)
        counts = run_counts(s)
        st.totals["rows_pulled"] += counts["pulled"]
        st.totals["rows_pushed"] += counts["pushed"]
        st.totals["rows_deleted"] += counts["deleted"]
        st.totals["rows_merged"] += s.get("merged", 0)
        st.totals["conflicts"] += counts["conflicts"]
        if counts["conflicts"]:
            m.conflicts.labels(name).inc(counts["conflicts"])
        st.pending_mutations = result.pending_mutations
        st.last_summary = result.summary()
        m.pending.labels(name).set(result.pending_mutations)
        m.quarantined.labels(name).set(st.quarantined)
        m.pending_age.labels(name).set(st.oldest_pending_mutation_age_seconds)
        st.guard = None if result.guard is None else result.guard.reason
        if result.guard is not None:
            m.guard_trips.labels(name).inc()

    def _jitter(self, seconds: float) -> float:
        j = self.svc.settings.sync.jitter
        return seconds * (1.0 + self.svc.rng.uniform(-j, j)) if j else seconds

    def _succeeded(self, result: CycleResult) -> float:
        svc, st = self.svc, self.status
        if st.consecutive_failures:
            logger.info(
                "binding %s recovered after %d failed cycle(s)",
                self.name,
                st.consecutive_failures,
                extra={"binding": self.name},
            )
        st.consecutive_failures, st.auth_failed, st.last_error = 0, False, None
        if result.guard is None:
            st.last_success, st.last_success_at = svc.clock.monotonic(), result.finished_at
            svc.metrics.last_success.labels(self.name).set(result.finished_at.timestamp())
        moved = any(v for k, v in result.stats.items() if k.startswith(("pulled", "pushed")))
        level = logging.INFO if moved else logging.DEBUG
        logger.log(level, "%s", result.summary(), extra={"binding": self.name})
        st.state = "ok" if result.guard is None else "guard tripped"
        return self._jitter(svc.settings.sync.interval_seconds)

    def _failed(self, error: Exception) -> float:
        svc, st, sync = self.svc, self.status, self.svc.settings.sync
        st.consecutive_failures += 1
        message = svc.describe(error)
        st.last_error = {
            "class": type(error).__name__,
            "message": message,
            "at": iso(svc.clock.now()) or "",
        }
        svc.metrics.cycle_errors.labels(self.name, type(error).__name__).inc()
        if isinstance(error, CodaAuthError | CodaForbidden):
            st.auth_failed, st.state = True, "failed: auth"
            delay = sync.max_backoff_seconds
            logger.error(
                "binding %s: Coda refused the API token (%s); retrying every %.0f s "
                "until it is fixed",
                self.name,
                message,
                delay,
                extra={"binding": self.name},
            )
        else:
            st.auth_failed, st.state = False, "backoff"
            ceiling = backoff.ceiling(
                st.consecutive_failures, base=sync.interval_seconds, cap=sync.max_backoff_seconds
            )
            delay = min(self._jitter(ceiling), sync.max_backoff_seconds)
            level = logging.ERROR if st.consecutive_failures == 1 else logging.WARNING
            # NB: a traceback only for the unexpected (a bug), not for Coda or DB trouble.
            expected = isinstance(error, CodaSyncError | TimeoutError)
            logger.log(
                level,
                "binding %s: cycle failed (%d in a row): %s; next try in %.0f s",
                self.name,
                st.consecutive_failures,
                message,
                delay,
                exc_info=None if expected else error,
                extra={"binding": self.name},
            )
        retry_after = error.retry_after_seconds if isinstance(error, CodaError) else None
        if retry_after:
            self._not_before = svc.clock.monotonic() + retry_after
            delay = backoff.merge_retry_after(delay, retry_after)
        return delay
