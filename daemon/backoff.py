"""Retry timing, pure: exponential backoff with full jitter, Retry-After, retry budgets.

This module owns *how long to wait* before trying again and *whether* another try is allowed.
It does no I/O, reads no clock and never sleeps: the caller passes the attempt number, the
elapsed time, "now" (for HTTP-date Retry-After values) and a seeded `random.Random`, so every
result is reproducible in tests. It must not import httpx, anyio or sqlalchemy.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the n-th retry waits a
uniform random time in ``[0, min(cap, base * 2**(n-1)))``::

    attempt    1      2      3      4      5       6 ...
    ceiling    base   2base  4base  8base  16base  ... capped at `cap`
    delay      U(0, ceiling)  -> then raised to Retry-After when the server sent one

NB: a server-sent Retry-After is a floor, never a ceiling: we may wait longer (jitter spreads
many clients), never shorter.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_BASE_SECONDS = 1.0
DEFAULT_CAP_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_ELAPSED_SECONDS = 120.0

# 2.0**62 is far above any sane cap; clamping the exponent keeps the float finite.
_MAX_EXPONENT = 62


def ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The largest delay the `attempt`-th retry may draw: ``min(cap, base * 2**(attempt-1))``.

    `attempt` is 1-based: 1 is the wait after the first failed try.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    exponent = min(attempt - 1, _MAX_EXPONENT)
    return min(cap, base * 2.0**exponent)


def delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """A full-jitter delay in seconds for the `attempt`-th retry (1-based).

    Uniform in ``[0, ceiling(attempt))``; the injected `rng` makes it deterministic in tests.
    """
    return rng.uniform(0.0, ceiling(attempt, base=base, cap=cap))


def merge_retry_after(delay_seconds: float, retry_after_seconds: float | None) -> float:
    """Return the delay to use: never below the server's Retry-After when it sent one."""
    if retry_after_seconds is None:
        return delay_seconds
    return max(delay_seconds, retry_after_seconds)


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random,
    retry_after_seconds: float | None = None,
) -> float:
    """`delay()` merged with Retry-After: the wait before the `attempt`-th retry."""
    return merge_retry_after(delay(attempt, base=base, cap=cap, rng=rng), retry_after_seconds)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header value into seconds from `now` (RFC 9110 section 10.2.3).

    Accepts delay-seconds (``"3"``; a decimal such as ``"1.5"`` is tolerated) or an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past gives 0. Returns None when the
    header is absent or unparseable, so the caller falls back to jittered backoff. `now` is
    only needed for HTTP-dates and must be timezone-aware (defaults to the current UTC time,
    the one impurity here, kept optional so production callers may pass `clock.now()`).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; RFC 9110 dates are always GMT
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How much retrying one logical request may cost.

    `max_attempts` counts every try, the first included (6 means 1 try + 5 retries).
    `max_elapsed_seconds` bounds the time from the first try to the start of the last one,
    waits included: a retry whose wait would end past it is not started.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_elapsed_seconds: float = DEFAULT_MAX_ELAPSED_SECONDS

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_elapsed_seconds < 0:
            raise ValueError("max_elapsed_seconds must be >= 0")

    def allows(self, *, attempts: int, elapsed_seconds: float, next_delay_seconds: float) -> bool:
        """True when, after `attempts` tries and `elapsed_seconds`, one more try may follow
        a wait of `next_delay_seconds`."""
        if attempts >= self.max_attempts:
            return False
        return elapsed_seconds + next_delay_seconds <= self.max_elapsed_seconds
