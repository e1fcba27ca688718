"""Per-token rate limits (reads 100 / 6 s, writes 10 / 6 s) and the request log.

Coda's published limits are per user, shared across endpoints of one class (§6.1). GET
requests (mutationStatus included) are reads; POST/PUT/DELETE are writes ([U]: DELETE is not
named in any class; we count it as a write). The window type is [U]: "sliding" keeps the time of
every accepted request in the last window; "fixed" counts per window-aligned bucket. Rejected
requests do not use up the budget. Times are the injected clock's monotonic seconds.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from daemon.emulator.config import EmulatorConfig


class RateLimiter:
    """Decides whether a request fits its token's budget."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._buckets: dict[tuple[str, str], tuple[int, int]] = {}

    def check(
        self, token_key: str, access: str, now: float, config: EmulatorConfig
    ) -> float | None:
        """None if the request is allowed (and counted), else seconds until one would be."""
        if not config.rate_limit_enabled:
            return None
        limit = config.read_limit if access == "read" else config.write_limit
        window = config.rate_window_seconds
        key = (token_key, access)
        if config.rate_window == "fixed":
            bucket = math.floor(now / window)
            seen_bucket, count = self._buckets.get(key, (bucket, 0))
            if seen_bucket != bucket:
                count = 0
            if count >= limit:
                return (bucket + 1) * window - now
            self._buckets[key] = (bucket, count + 1)
            return None
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return hits[0] + window - now
        hits.append(now)
        return None

    def reset(self) -> None:
        self._hits.clear()
        self._buckets.clear()


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One API request as the emulator saw it (control routes are not logged)."""

    seq: int
    monotonic: float
    at: str
    method: str
    path: str
    query: str
    endpoint: str
    access: str
    status: int
    token_hash: str | None
    request_bytes: int
    response_bytes: int
    fault: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "monotonic": self.monotonic,
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "endpoint": self.endpoint,
            "access": self.access,
            "status": self.status,
            "tokenHash": self.token_hash,
            "requestBytes": self.request_bytes,
            "responseBytes": self.response_bytes,
            "fault": self.fault,
        }


@dataclass
class RequestStats:
    """Counters by (method, endpoint, status) and a bounded log of requests."""

    limit: int = 100_000
    counters: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    log: deque[RequestLogEntry] = field(default_factory=deque)
    total: int = 0

    def record(self, entry: RequestLogEntry) -> None:
        self.total += 1
        self.counters[(entry.method, entry.endpoint, entry.status)] += 1
        self.log.append(entry)
        while len(self.log) > self.limit:
            self.log.popleft()

    def count(
        self, *, method: str | None = None, endpoint: str | None = None, status: int | None = None
    ) -> int:
        """Requests matching every given filter."""
        return sum(
            n
            for (m, e, s), n in self.counters.items()
            if (method is None or m == method)
            and (endpoint is None or e == endpoint)
            and (status is None or s == status)
        )

    def by_status_class(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, _, status), n in self.counters.items():
            out[f"{status // 100}xx"] += n
        return dict(out)

    def reset(self) -> None:
        self.counters.clear()
        self.log.clear()
        self.total = 0
