"""Injectable, scriptable faults: what can go wrong between the daemon and Coda.

A `FaultRule` says which requests it hits (method, path regex, endpoint = operationId, read or
write) and what happens; it fires for the next `count` matching requests (None = forever).
Scripted rules are tried first, in the order added; then, with `random_fault_rate`, a preset
from `random_fault_kinds` is drawn with the state's seeded fault rng. Every injected fault is
counted by class (`FaultPlan.counts`).

Kinds:
    http_error      answer `status` (500/502/503/...) with Coda's JSON error body; nothing applied
    html_error      answer `status` with an HTML error page (a proxy/CDN failure)
    rate_limit      429 with Coda's body, with a Retry-After header iff retry_after_seconds is set
    delay           sleep `delay_seconds` on the injected clock, then answer normally (slow)
    hang            sleep `hang_seconds` (config) on the injected clock, then answer normally;
                    a client times out first. With `after_handler` the request is processed
                    BEFORE the sleep (a timed-out write still applies: "lost response"),
                    otherwise after it (a timed-out request is lost: "lost request")
    malformed_json  the normal answer with its JSON body cut in half (status unchanged)
    no_items        a listing page without its `items` key
    empty_listing   a listing with `items: []` and no next page (sync token kept)
    lost_response   the request is processed (a write is accepted and will apply), then 500
    never_apply     a write is accepted (202) but never applies: completed stays false forever
    slow_apply      a write applies after `delay_seconds` instead of the configured delay
    fail_apply      a write is reported completed but changes nothing ([U] failure reporting)
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, get_args

FaultKind = Literal[
    "http_error",
    "html_error",
    "rate_limit",
    "delay",
    "hang",
    "malformed_json",
    "no_items",
    "empty_listing",
    "lost_response",
    "never_apply",
    "slow_apply",
    "fail_apply",
]
Access = Literal["read", "write"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
LIST_ENDPOINTS = frozenset({"listRows", "listTables", "listColumns"})
WRITE_ENDPOINTS = frozenset({"upsertRows", "updateRow", "deleteRow", "deleteRows"})


@dataclass(frozen=True)
class FaultRule:
    """One scripted fault; see the module docstring for the kinds."""

    kind: FaultKind
    count: int | None = 1
    method: str | None = None
    path: str | None = None
    """Regex searched in the request path (with or without the /apis/v1 prefix)."""
    endpoint: str | None = None
    """operationId, e.g. "listRows", "upsertRows", "getMutationStatus"."""
    access: Access | None = None
    status: int = 500
    retry_after_seconds: float | None = None
    delay_seconds: float = 5.0
    after_handler: bool = False
    """For delay/hang: process the request first, then sleep before answering."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    @property
    def label(self) -> str:
        """The class a fault is counted under."""
        if self.kind in ("http_error", "html_error"):
            return f"{self.kind.split('_')[0]}_{self.status}"
        if self.kind == "rate_limit" and self.retry_after_seconds is not None:
            return "rate_limit_retry_after"
        if self.kind in ("delay", "hang") and self.after_handler:
            return f"{self.kind}_after"
        return self.kind

    def matches(self, method: str, path: str, endpoint: str, access: Access) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        if self.access is not None and self.access != access:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        return applicable(self.kind, endpoint)


def applicable(kind: str, endpoint: str) -> bool:
    """Listing faults only hit listings; mutation fates only hit writes."""
    if kind in ("no_items", "empty_listing"):
        return endpoint in LIST_ENDPOINTS
    if kind in ("never_apply", "slow_apply", "fail_apply"):
        return endpoint in WRITE_ENDPOINTS
    return True


PRESETS: dict[str, FaultRule] = {
    "http_500": FaultRule("http_error", status=500),
    "http_502": FaultRule("http_error", status=502),
    "http_503": FaultRule("http_error", status=503),
    "html_502": FaultRule("html_error", status=502),
    "html_504": FaultRule("html_error", status=504),
    "rate_limit": FaultRule("rate_limit"),
    "rate_limit_retry_after": FaultRule("rate_limit", retry_after_seconds=2.0),
    "slow": FaultRule("delay", delay_seconds=5.0),
    "hang": FaultRule("hang"),
    "malformed_json": FaultRule("malformed_json"),
    "no_items": FaultRule("no_items"),
    "empty_listing": FaultRule("empty_listing"),
    "lost_response": FaultRule("lost_response"),
    "never_apply": FaultRule("never_apply"),
    "slow_apply": FaultRule("slow_apply", delay_seconds=120.0),
    "fail_apply": FaultRule("fail_apply"),
    "hang_after": FaultRule("hang", after_handler=True),
}


@dataclass
class _Armed:
    rule: FaultRule
    remaining: int | None


@dataclass
class FaultPlan:
    """The scripted rules still armed, and counts of faults injected so far."""

    counts: Counter[str] = field(default_factory=Counter)
    _armed: list[_Armed] = field(default_factory=list)

    def add(self, rule: FaultRule) -> None:
        self._armed.append(_Armed(rule, rule.count))

    def clear(self) -> None:
        """Disarm every scripted rule (counts are kept)."""
        self._armed.clear()

    @property
    def armed(self) -> list[FaultRule]:
        return [armed.rule for armed in self._armed]

    def pick(
        self,
        method: str,
        path: str,
        endpoint: str,
        access: Access,
        *,
        rng: random.Random,
        rate: float,
        kinds: tuple[str, ...],
    ) -> FaultRule | None:
        """The fault for this request, if any (consumes one use of a scripted rule)."""
        for armed in self._armed:
            if armed.rule.matches(method, path, endpoint, access):
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        self._armed.remove(armed)
                return armed.rule
        if rate > 0.0 and kinds and rng.random() < rate:
            rule = PRESETS[rng.choice(kinds)]
            if applicable(rule.kind, endpoint):
                return rule
        return None

    def record(self, rule: FaultRule) -> None:
        self.counts[rule.label] += 1


def html_page(status: int, reason: str) -> bytes:
    """A CDN-style HTML error page (not JSON)."""
    return (
        f"<!DOCTYPE html><html><head><title>{status} {reason}</title></head><body>"
        f"<h1>{status} {reason}</h1><p>The server encountered a temporary error.</p>"
        "</body></html>"
    ).encode()


def truncate(body: bytes) -> bytes:
    """Cut a JSON body in half (so it no longer parses)."""
    return body[: max(1, len(body) // 2)]
