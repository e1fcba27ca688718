"""daemon.backoff: full-jitter delays, Retry-After parsing and merging, retry budgets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon import backoff

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_ceiling_doubles_from_base_and_stops_at_cap() -> None:
    """The jitter ceiling is base * 2**(n-1), capped."""
    ceilings = [backoff.ceiling(n, base=1.0, cap=60.0) for n in range(1, 9)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_ceiling_rejects_attempt_zero() -> None:
    """Attempts are 1-based: 0 is a caller bug, not a zero delay."""
    with pytest.raises(ValueError, match="attempt"):
        backoff.ceiling(0, base=1.0, cap=60.0)


def test_delay_is_deterministic_for_a_seeded_rng() -> None:
    """The same seed gives the same delays (tests rely on this)."""
    first = [backoff.delay(n, base=1.0, cap=60.0, rng=random.Random(42)) for n in range(1, 7)]
    second = [backoff.delay(n, base=1.0, cap=60.0, rng=random.Random(42)) for n in range(1, 7)]
    assert first == second
    assert first[0] == random.Random(42).uniform(0.0, 1.0)


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=3600.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_stays_within_zero_and_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    """Full jitter: 0 <= delay <= min(cap, base * 2**(n-1)), with no overflow for huge n."""
    value = backoff.delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= value <= backoff.ceiling(attempt, base=base, cap=cap) <= cap


@given(
    attempt=st.integers(min_value=1, max_value=50),
    retry_after=st.floats(min_value=0.0, max_value=10_000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_retry_delay_is_never_below_retry_after(
    attempt: int, retry_after: float, seed: int
) -> None:
    """A server's Retry-After is a floor for the wait, whatever the jitter drew."""
    value = backoff.retry_delay(
        attempt, base=1.0, cap=60.0, rng=random.Random(seed), retry_after_seconds=retry_after
    )
    assert value >= retry_after


def test_retry_delay_without_retry_after_is_plain_jitter() -> None:
    """No Retry-After: the jittered delay is used as drawn."""
    expected = random.Random(3).uniform(0.0, 4.0)
    assert backoff.retry_delay(3, base=1.0, cap=60.0, rng=random.Random(3)) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    """delay-seconds parse to seconds; garbage and absence give None (fall back to jitter)."""
    assert backoff.parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    "header",
    [
        format_datetime(NOW + timedelta(seconds=10), usegmt=True),  # IMF-fixdate
        "Monday, 05-Jan-26 09:00:10 GMT",  # obsolete RFC 850
        "Mon Jan  5 09:00:10 2026",  # obsolete asctime
    ],
)
def test_parse_retry_after_http_date(header: str) -> None:
    """An HTTP-date Retry-After is the number of seconds from `now` until that date."""
    assert backoff.parse_retry_after(header, now=NOW) == pytest.approx(10.0)


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    """A date already passed means "retry now", not a negative wait."""
    header = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert backoff.parse_retry_after(header, now=NOW) == 0.0


def test_budget_counts_attempts_including_the_first() -> None:
    """max_attempts=3 allows two retries after the first try."""
    budget = backoff.RetryBudget(max_attempts=3, max_elapsed_seconds=1000.0)
    assert budget.allows(attempts=1, elapsed_seconds=0.0, next_delay_seconds=1.0)
    assert budget.allows(attempts=2, elapsed_seconds=5.0, next_delay_seconds=1.0)
    assert not budget.allows(attempts=3, elapsed_seconds=5.0, next_delay_seconds=1.0)


def test_budget_refuses_a_retry_that_would_end_past_the_elapsed_limit() -> None:
    """The next wait counts: a retry that would start after max_elapsed is not started."""
    budget = backoff.RetryBudget(max_attempts=10, max_elapsed_seconds=120.0)
    assert budget.allows(attempts=1, elapsed_seconds=100.0, next_delay_seconds=20.0)
    assert not budget.allows(attempts=1, elapsed_seconds=100.0, next_delay_seconds=20.5)
    assert not budget.allows(attempts=1, elapsed_seconds=0.0, next_delay_seconds=500.0)


@pytest.mark.parametrize(("attempts", "elapsed"), [(0, 10.0), (3, -1.0)])
def test_budget_validates_its_limits(attempts: int, elapsed: float) -> None:
    """Nonsense budgets fail at construction, not mid-retry."""
    with pytest.raises(ValueError, match="max_"):
        backoff.RetryBudget(max_attempts=attempts, max_elapsed_seconds=elapsed)
