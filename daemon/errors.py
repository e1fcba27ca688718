"""The whole exception tree of coda-sync.

    CodaSyncError
    ├─ ConfigError                 bad configuration; fatal at start -> exit 78 (EX_CONFIG)
    ├─ CodaError                   a failed request to Coda (no httpx.* escapes coda/)
    │  ├─ CodaTransientError       timeouts, connection errors, 5xx: back off and retry
    │  │  ├─ CodaTimeout           the request (or the whole retry budget) timed out
    │  │  ├─ CodaServerError       5xx from Coda
    │  │  └─ CodaRateLimited       429; carries retry_after_seconds when Coda sent one
    │  └─ CodaPermanentError       other 4xx and unparseable answers: fail the step, no retry
    │     ├─ CodaAuthError         401 (token invalid or expired)
    │     ├─ CodaForbidden         403 (token lacks access)
    │     ├─ CodaNotFound          404 (doc, table, row or mutation not found with this token)
    │     ├─ CodaBadRequest        400 (malformed request; also a stale snapshot with
    │     │                        X-Coda-Doc-Version: latest)
    │     └─ CodaPayloadError      the answer was not what the API describes (bad JSON, no items)
    ├─ StoreError                  wraps sqlalchemy errors
    │  ├─ StoreSchemaError         the bound table does not match the mapping
    │  └─ LockHeldError            another process syncs this binding
    │     └─ LeadershipLost        this process lost a binding's leader lock mid-cycle: stop
    │                              writing at once (the scheduler stands by; no failure)
    ├─ RowError                    one row cannot be converted; it is quarantined, the cycle goes on
    └─ GuardTripped                a safety rail refused the cycle (mass delete, empty listing)

Retry semantics live in the type, never in string matching. The API token never appears in
any message: errors carry the method and the path, not headers.
"""

from __future__ import annotations


class CodaSyncError(Exception):
    """Base of every error coda-sync raises on purpose."""


class ConfigError(CodaSyncError):
    """Raised when the configuration file or environment is invalid.

    The message names the file, the key and what is wrong with it.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.key = key


class CodaError(CodaSyncError):
    """Raised when a request to Coda failed; carries status, Coda's message and the request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        coda_message: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        parts = [message]
        if method and path:
            parts.append(f"({method} {path})")
        if status is not None:
            parts.append(f"[HTTP {status}]")
        if coda_message and coda_message not in message:
            parts.append(f"Coda says: {coda_message[:256]}")
        super().__init__(" ".join(parts))
        self.status = status
        self.method = method
        self.path = path
        self.coda_message = coda_message
        self.retry_after_seconds = retry_after_seconds


class CodaTransientError(CodaError):
    """Raised for failures that may pass: timeouts, connection errors, 5xx, 429."""


class CodaTimeout(CodaTransientError):
    """Raised when a request timed out (after the retry budget was spent)."""


class CodaServerError(CodaTransientError):
    """Raised when Coda answered 5xx (after the retry budget was spent)."""


class CodaRateLimited(CodaTransientError):
    """Raised when Coda answered 429 and the retry budget was spent."""


class CodaPermanentError(CodaError):
    """Raised for failures that retrying will not fix (4xx other than 429, bad payloads)."""


class CodaAuthError(CodaPermanentError):
    """Raised on 401: the API token is invalid or expired."""


class CodaForbidden(CodaPermanentError):
    """Raised on 403: the token has no access to this doc or table."""


class CodaNotFound(CodaPermanentError):
    """Raised on 404: the doc, table, row or mutation does not exist for this token."""


class CodaBadRequest(CodaPermanentError):
    """Raised on 400 (and other unexpected 4xx): Coda refused the request as malformed."""


class CodaPayloadError(CodaPermanentError):
    """Raised when Coda's answer does not have the shape the API describes."""


class StoreError(CodaSyncError):
    """Raised when the database failed in a way the engine cannot handle locally."""


class StoreSchemaError(StoreError):
    """Raised at start when the bound table's columns do not match the binding's mapping."""


class LockHeldError(StoreError):
    """Raised when another process already holds the sync lock of a binding."""


class LeadershipLost(LockHeldError):
    """Raised by the engine when the leader lock of its binding is gone (PostgreSQL).

    Checked right before every Coda write batch and every local commit, so a process that
    lost the lock sends and commits nothing more; the scheduler treats it as "not the leader
    now" (standby), not as a failed cycle.
    """


class RowError(CodaSyncError):
    """Raised when one row's value cannot be converted; the row is quarantined with this reason."""

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(f"column {column!r}: {message}" if column else message)
        self.column = column
        self.reason = message


class GuardTripped(CodaSyncError):
    """Raised when a safety rail refused to apply a cycle's deletes or trusted nothing."""
