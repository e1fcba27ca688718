"""Every Prometheus metric of coda-sync, built against an injected `CollectorRegistry`.

Naming follows Prometheus conventions: prefix `coda_sync_`, base units (seconds), `_total` on
counters. Labels are bounded: `binding` comes from the config, `direction` is pull|push,
`kind` insert|update|delete, `class` read|write, `outcome` a fixed small set. No row, doc or
user ids and no URLs ever become label values.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from daemon import __version__

REQUEST_CLASSES = ("read", "write")
REQUEST_OUTCOMES = (
    "ok",
    "client_error",
    "server_error",
    "rate_limited",
    "timeout",
    "connection_error",
)
CYCLE_OUTCOMES = ("success", "failure", "guard_tripped", "abandoned")
DIRECTIONS = ("pull", "push")
KINDS = ("insert", "update", "delete")


class Metrics:
    """The daemon's metrics. Create one per process (tests: one per test, own registry)."""

    def __init__(self, registry: CollectorRegistry, bindings: Iterable[str] = ()) -> None:
        self.registry = registry
        p = "coda_sync_"
        self.build_info = Info(p + "build", "coda-sync version", registry=registry)
        self.build_info.info({"version": __version__})
        self.cycles = Counter(
            p + "cycles_total",
            "Sync cycles run, by outcome.",
            ["binding", "outcome"],
            registry=registry,
        )
        self.cycle_duration = Histogram(
            p + "cycle_duration_seconds",
            "Duration of one sync cycle.",
            ["binding"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=registry,
        )
        self.last_success = Gauge(
            p + "last_success_timestamp_seconds",
            "Unix time of the last successful cycle.",
            ["binding"],
            registry=registry,
        )
        self.rows = Counter(
            p + "rows_synced_total",
            "Rows written, by direction and kind.",
            ["binding", "direction", "kind"],
            registry=registry,
        )
        self.conflicts = Counter(
            p + "conflicts_total",
            "Concurrent edits settled (and journaled).",
            ["binding"],
            registry=registry,
        )
        self.quarantined = Gauge(
            p + "quarantined_rows",
            "Rows that cannot be converted or applied.",
            ["binding"],
            registry=registry,
        )
        self.pending = Gauge(
            p + "pending_mutations",
            "Coda writes sent and not yet confirmed.",
            ["binding"],
            registry=registry,
        )
        self.pending_age = Gauge(
            p + "oldest_pending_mutation_age_seconds",
            "Age of the oldest unconfirmed Coda write (0 when none).",
            ["binding"],
            registry=registry,
        )
        self.guard_trips = Counter(
            p + "guard_trips_total",
            "Cycles whose deletes a safety rail refused.",
            ["binding"],
            registry=registry,
        )
        self.requests = Counter(
            p + "api_requests_total",
            "Requests sent to Coda, by class and outcome.",
            ["class", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            p + "api_request_duration_seconds",
            "Duration of Coda requests.",
            ["class"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.rate_limited = Counter(
            p + "api_rate_limited_total",
            "429 answers received from Coda.",
            registry=registry,
        )
        self.retries = Counter(
            p + "api_retries_total",
            "Requests retried after a transient failure.",
            ["class"],
            registry=registry,
        )
        self.limiter_wait = Counter(
            p + "rate_limiter_wait_seconds_total",
            "Time spent waiting for the client-side rate limiter.",
            ["class"],
            registry=registry,
        )
        self.cycle_errors = Counter(
            p + "cycle_errors_total",
            "Failed cycles, by exception class name.",
            ["binding", "error"],
            registry=registry,
        )
        self.auth_failed = Gauge(
            p + "auth_failed",
            "1 while Coda refuses the binding's token (401/403); it retries at max backoff.",
            ["binding"],
            registry=registry,
        )
        self.consecutive_failures = Gauge(
            p + "consecutive_failures",
            "Failed cycles in a row (0 after a success).",
            ["binding"],
            registry=registry,
        )
        self.triggers = Counter(
            p + "triggers_total",
            "Manual sync requests on the control port, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for cls in REQUEST_CLASSES:
            self.retries.labels(cls)
            self.limiter_wait.labels(cls)
            self.request_duration.labels(cls)
            for outcome in REQUEST_OUTCOMES:
                self.requests.labels(cls, outcome)
        for outcome in ("accepted", "coalesced", "unauthorized", "rejected"):
            self.triggers.labels(outcome)
        for name in bindings:
            self.add_binding(name)

    def add_binding(self, name: str) -> None:
        """Pre-create every series of a binding so they start at 0."""
        for outcome in CYCLE_OUTCOMES:
            self.cycles.labels(name, outcome)
        for d in DIRECTIONS:
            for k in KINDS:
                self.rows.labels(name, d, k)
        self.cycle_duration.labels(name)
        self.last_success.labels(name)
        self.conflicts.labels(name)
        self.quarantined.labels(name)
        self.pending.labels(name)
        self.pending_age.labels(name)
        self.guard_trips.labels(name)
        self.auth_failed.labels(name)
        self.consecutive_failures.labels(name)

    def observe_request(self, cls: str, outcome: str, seconds: float) -> None:
        """Hook for the Coda client: one call per HTTP attempt."""
        self.requests.labels(cls, outcome).inc()
        self.request_duration.labels(cls).observe(seconds)
        if outcome == "rate_limited":
            self.rate_limited.inc()
