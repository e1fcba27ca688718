"""Proactive pacing under Coda's per-user rate limits (a sliding-window log per limit class).

This module owns *when a request may be sent*: every request to Coda first awaits
`RateLimiter.acquire(cls)`, which returns at once while its class has room and otherwise
waits (on the injected `Clock`) until it has. It knows nothing of HTTP beyond the
method/path -> class rule in `limit_class`.

Coda publishes reads 100 / 6 s and writes 10 / 6 s, per user, across all docs (API-FACTS
section 6.1). Whether the window is fixed or sliding is not documented, and one integrator
hit 429 at the published numbers, so the defaults keep the published COUNTS over a longer
window (100 reads, 10 writes per 6.5 s) and the window is *sliding*: no interval
``[t, t + window)`` ever holds more than `capacity` grants, so no 6 s window of Coda's, fixed
or sliding, with up to 0.5 s of network jitter between our clock and theirs, sees more than
the limit.
NB: 100/6.5 s is 8% under the published rate, where 95/6 s costs 5% of the rate but a whole
window of waiting per 95 requests: a 100-write push takes 58.5 s at 10/6.5 s and 66 s at
9/6 s (floor: 54 s), measured in bench/.

A refill-rate token bucket does not give the window guarantee (a full bucket plus the refill
lets ~2x capacity through one window), hence the log of grant times::

    capacity 3, window 6 s        grants: |  |  |               |  |  |
    time  0  1  2  3  4  5  6  7  8       0  1  2  (full)  ->  6  7  8
    the 4th request waits until 0 + 6, the 5th until 1 + 6, ...

One `RateLimiter` must be shared by every client that uses the same API token (the limits
are per user); the caller builds one and injects it. It is safe for many concurrent tasks:
each class has its own `anyio.Lock`, so waiters are served in arrival order and a waiting
write never holds up reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Final

import anyio

from daemon.clock import Clock

READ: Final = "read"
WRITE: Final = "write"

#: Coda's published limits (requests, window seconds), for reference.
PUBLISHED_LIMITS: Final[Mapping[str, tuple[int, float]]] = {READ: (100, 6.0), WRITE: (10, 6.0)}
#: What we allow ourselves: the published counts over a window stretched by 0.5 s of margin.
DEFAULT_LIMITS: Final[Mapping[str, tuple[int, float]]] = {READ: (100, 6.5), WRITE: (10, 6.5)}

_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def limit_class(method: str, path: str = "") -> str:
    """The limit class of a request: GET (including ``/mutationStatus``) reads, the rest writes.

    DELETE is named in no published class; we count it as a write (API-FACTS section 6.1).
    `path` is accepted so special endpoints can be classed here later.
    """
    del path  # every endpoint we call is classed by its method alone
    return READ if method.upper() in _READ_METHODS else WRITE


class _Window:
    """The grant log of one class: grant times inside the last window, oldest first."""

    __slots__ = ("capacity", "grants", "lock", "wait_seconds", "window_seconds")

    def __init__(self, capacity: int, window_seconds: float) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        self.capacity = capacity
        self.window_seconds = window_seconds
        self.grants: deque[float] = deque()
        self.lock = anyio.Lock()
        self.wait_seconds = 0.0

    def delay_at(self, now: float) -> float:
        """Forget grants older than one window; return how long until a grant is allowed."""
        while self.grants and self.grants[0] + self.window_seconds <= now:
            self.grants.popleft()
        if len(self.grants) < self.capacity:
            return 0.0
        return self.grants[0] + self.window_seconds - now


class RateLimiter:
    """Sliding-window pacing per limit class, on an injected clock.

    ``RateLimiter(clock, limits={"read": (100, 6.5), "write": (10, 6.5)})``; `limits` defaults
    to `DEFAULT_LIMITS`. Classes not in `limits` raise KeyError on `acquire` (a typo must not
    silently bypass pacing).
    """

    def __init__(self, clock: Clock, limits: Mapping[str, tuple[int, float]] | None = None) -> None:
        self._clock = clock
        chosen = DEFAULT_LIMITS if limits is None else limits
        self._windows = {cls: _Window(cap, window) for cls, (cap, window) in chosen.items()}
        self.grants_total: dict[str, int] = dict.fromkeys(self._windows, 0)

    @property
    def limits(self) -> dict[str, tuple[int, float]]:
        """The configured (capacity, window seconds) per class."""
        return {cls: (w.capacity, w.window_seconds) for cls, w in self._windows.items()}

    @property
    def wait_seconds_total(self) -> float:
        """Seconds callers have waited for grants, summed per request over all classes."""
        return sum(w.wait_seconds for w in self._windows.values())

    def wait_seconds(self, cls: str) -> float:
        """Seconds callers have waited for a grant of class `cls`."""
        return self._windows[cls].wait_seconds

    async def acquire(self, cls: str) -> float:
        """Wait until a request of class `cls` may be sent, record it; return seconds waited.

        Cancellation while waiting records nothing: the slot stays free for the next waiter.
        """
        window = self._windows[cls]
        started = self._clock.monotonic()
        async with window.lock:  # FIFO: queued callers are served in arrival order
            while True:
                now = self._clock.monotonic()
                pause = window.delay_at(now)
                if pause <= 0.0:
                    window.grants.append(now)
                    break
                await self._clock.sleep(pause)
        # NB: measured start-to-grant, so time spent queued behind other waiters counts too.
        waited = max(0.0, now - started)
        window.wait_seconds += waited
        self.grants_total[cls] += 1
        return waited
