"""Time, injected: a `Clock` gives monotonic seconds, UTC wall time and sleeping.

Production uses `SystemClock`; tests use `FakeClock`, whose `sleep` advances virtual time at
once, so pacing and backoff are tested without waiting.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.lowlevel


def own_stamp(at: datetime) -> datetime:
    """`at` moved by under a millisecond, to a microsecond ending in 997: the `updated_at` the
    daemon stamps on the local rows it writes.

    The engine tells its own writes from the app's by an equal stamp (see
    `Engine._by_state`). An app whose clock counts whole milliseconds or coarser, or whose
    clock runs behind ours, can stamp an edit with exactly the instant of our pull; this
    stamp is one such a clock never produces, so the edit is compared, not skipped.
    """
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000 + 997)


class Clock(Protocol):
    """What the daemon needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and timeouts)."""
        ...

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC (for stored timestamps)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a cancellation point)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time: `sleep` advances the clock instead of waiting.

    `sleeps` records every requested sleep, so tests can assert on backoff and pacing.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall0 = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._t)

    def advance(self, seconds: float) -> None:
        self._t += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self._t += seconds
        await anyio.lowlevel.checkpoint()
