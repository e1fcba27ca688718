"""`CodaClient`: the only code that speaks HTTP to Coda API v1.

This module owns requests to Coda: URLs and auth, paging (`nextPageToken` only), pacing
(every request first awaits the shared `RateLimiter`), retries with backoff inside a budget,
and mapping every failure once into the `daemon.errors` tree (no `httpx.*` exception leaves
`daemon.coda`). Payload shapes live in `schema`, retry timing in `daemon.backoff`, pacing in
`pacing`. It knows nothing of SQL or reconciliation; it must not import `daemon.store`.

One request, as the client runs it::

    acquire(read|write) -> send (httpx.Timeout + attempt deadline) -> 2xx: parse JSON, done
                 ^                                                  -> 401/403/404/4xx: raise
                 |                                                  -> 429/5xx/timeout/conn:
                 +-- clock.sleep(max(full jitter, Retry-After)) <---- retry while the budget lasts

All our requests are idempotent (GET, upsert by key, PUT, DELETE), so all are retried. The
API token is held in `_Token`, whose repr is ``***``; it is only ever put in the
Authorization header of an outgoing request, never in logs, errors or reprs.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeAlias, TypeVar
from urllib.parse import quote

import anyio
import httpx

from daemon import backoff, mutants
from daemon.clock import Clock
from daemon.coda import schema
from daemon.coda.pacing import RateLimiter, limit_class
from daemon.errors import (
    CodaAuthError,
    CodaBadRequest,
    CodaError,
    CodaForbidden,
    CodaNotFound,
    CodaPayloadError,
    CodaRateLimited,
    CodaServerError,
    CodaTimeout,
    CodaTransientError,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://coda.io/apis/v1"

OK: Final = "ok"
CLIENT_ERROR: Final = "client_error"
SERVER_ERROR: Final = "server_error"
RATE_LIMITED: Final = "rate_limited"
TIMEOUT: Final = "timeout"
CONNECTION_ERROR: Final = "connection_error"
#: Every outcome label `on_request` and `ClientStats` use (bounded; for metric pre-init).
OUTCOMES: Final = (OK, CLIENT_ERROR, SERVER_ERROR, RATE_LIMITED, TIMEOUT, CONNECTION_ERROR)

VALUE_FORMATS: Final = frozenset({"simple", "simpleWithArrays", "rich"})
SORT_KEYS: Final = frozenset({"createdAt", "natural", "updatedAt"})
_BODY_SNIPPET_CHARS: Final = 200

Scalar: TypeAlias = str | int | float | bool
#: What a cell write may carry (OpenAPI `Value`): a scalar or an array nested at most twice.
Value: TypeAlias = Scalar | Sequence[Scalar | Sequence[Scalar]]
Cells: TypeAlias = Sequence[tuple[str, Value]]
OnRequest: TypeAlias = Callable[[str, str, float], None]
_T = TypeVar("_T")


class SecretLike(Protocol):
    """A wrapped secret such as pydantic's `SecretStr`."""

    def get_secret_value(self) -> str: ...


class _Token(httpx.Auth):
    """Holds the API token and adds it to each request as httpx auth; prints as ``***``.

    As an `httpx.Auth` the header is set inside httpx, so no local variable of ours ever holds
    the ``Bearer`` string (tracebacks with locals stay clean).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value or not value.strip():
            raise ValueError("the Coda API token is empty")
        self._value = value.strip()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._value}"
        yield request

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Per-client knobs; every duration is in seconds."""

    timeout_seconds: float = 30.0  # httpx connect/read/write/pool timeout of one attempt
    deadline_seconds: float = 120.0  # hard cap on one attempt, body included (slow drip)
    max_attempts: int = 6  # tries per request, the first included
    max_retry_elapsed_seconds: float = 120.0  # first try to last retry, waits included
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    page_size: int = 500  # rows per listing page (Coda's real cap is undocumented, ~500)
    mutation_poll_seconds: float = 1.0
    mutation_404_grace_seconds: float = 30.0  # mutationStatus 404s briefly after a write

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0 or self.deadline_seconds <= 0:
            raise ValueError("timeouts must be > 0")
        if self.page_size < 1 or self.mutation_poll_seconds <= 0:
            raise ValueError("page_size and mutation_poll_seconds must be positive")
        backoff.RetryBudget(self.max_attempts, self.max_retry_elapsed_seconds)  # validates


@dataclass(slots=True)
class ClientStats:
    """Counters for metrics; labels are bounded: class (read|write) x outcome (`OUTCOMES`)."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    retries_by_class: Counter[str] = field(default_factory=Counter)
    """The same retries by request class (read|write), for `coda_sync_api_retries_total`."""
    rate_limited: int = 0  # HTTP 429 answers received
    limiter_wait_seconds: float = 0.0

    def count(self, cls: str | None = None, outcome: str | None = None) -> int:
        """Requests sent (attempts, not logical calls), optionally filtered."""
        return sum(
            n
            for (c, o), n in self.requests.items()
            if (cls is None or c == cls) and (outcome is None or o == outcome)
        )


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt, before it becomes an exception."""

    kind: type[CodaError]
    message: str
    retryable: bool
    status: int | None = None
    coda_message: str | None = None
    retry_after_seconds: float | None = None
    cause: BaseException | None = None


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="")  # NB: "mutate:<uuid>" -> "mutate%3A<uuid>"


def _encode_value(value: object, depth: int = 0) -> Any:
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot send {value!r} as a Coda cell value (not JSON)")
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray) and depth < 2:
        return [_encode_value(item, depth + 1) for item in value]
    raise TypeError(f"cannot send {type(value).__name__} as a Coda cell value")


def encode_cells(cells: Cells) -> list[dict[str, Any]]:
    """`[(column_id, value), ...]` -> the `CellEdit` list ``[{"column": .., "value": ..}]``."""
    out = []
    for column, value in cells:
        if not isinstance(column, str) or not column:
            raise ValueError(f"cell column must be a non-empty string, got {column!r}")
        out.append({"column": column, "value": _encode_value(value)})
    return out


def _snippet(response: httpx.Response) -> str | None:
    text = response.content[:_BODY_SNIPPET_CHARS].decode("utf-8", errors="replace").strip()
    return text or None


def _failure_for_status(response: httpx.Response, *, now_retry_after: float | None) -> _Failure:
    """Map a non-2xx answer to a `_Failure` (Coda's error body is {statusCode, statusMessage,
    message}; anything else contributes its first characters)."""
    status = response.status_code
    try:
        coda_message = schema.error_message(json.loads(response.content)) or _snippet(response)
    except ValueError:
        coda_message = _snippet(response)
    if status == 429:
        return _Failure(
            CodaRateLimited, "Coda rate limit hit", True, status, coda_message, now_retry_after
        )
    if status >= 500:
        return _Failure(CodaServerError, "Coda server error", True, status, coda_message)
    kinds: dict[int, tuple[type[CodaError], str]] = {
        401: (CodaAuthError, "Coda rejected the API token"),
        403: (CodaForbidden, "the API token has no access"),
        404: (CodaNotFound, "not found (or not visible to this token)"),
    }
    if 400 <= status < 500:
        kind, message = kinds.get(status, (CodaBadRequest, "Coda refused the request"))
        return _Failure(kind, message, False, status, coda_message)
    return _Failure(CodaPayloadError, "unexpected HTTP status", False, status, coda_message)


class CodaClient:
    """Async client for the parts of Coda API v1 a row sync needs.

    The caller owns `http` (and closes it) and shares one `limiter` per API token. Tests pass
    an `httpx.AsyncClient` over `MockTransport`, `ASGITransport(app=...)` or respx, a
    `FakeClock` and a seeded `random.Random`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token: str | SecretLike,
        base_url: str = DEFAULT_BASE_URL,
        limiter: RateLimiter,
        clock: Clock,
        rng: random.Random,
        settings: ClientSettings | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        self._http = http
        self._token = _Token(token if isinstance(token, str) else token.get_secret_value())
        self._base_url = base_url.rstrip("/")
        self._limiter = limiter
        self._clock = clock
        self._rng = rng
        self.settings = settings or ClientSettings()
        self._on_request = on_request
        self._budget = backoff.RetryBudget(
            self.settings.max_attempts, self.settings.max_retry_elapsed_seconds
        )
        t = self.settings.timeout_seconds
        self._timeout = httpx.Timeout(connect=min(t, 10.0), read=t, write=t, pool=t)
        self.stats = ClientStats()
        self._quiet_until = 0.0
        """Monotonic time before which no request is sent (the last Retry-After)."""

    def __repr__(self) -> str:
        return f"CodaClient(base_url={self._base_url!r}, token=***)"

    __str__ = __repr__

    # --- transport ---------------------------------------------------------------------------

    def _record(self, cls: str, outcome: str, seconds: float) -> None:
        self.stats.requests[(cls, outcome)] += 1
        if outcome == RATE_LIMITED:
            self.stats.rate_limited += 1
        if self._on_request is not None:
            try:
                self._on_request(cls, outcome, seconds)
            except Exception:  # a metrics bug must not fail the sync
                logger.exception("on_request hook failed")

    async def _send_once(
        self,
        method: str,
        path: str,
        cls: str,
        params: Mapping[str, str] | None,
        body: object | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[object, _Failure | None]:
        """One attempt: returns (decoded JSON, None) or (None, failure); never raises httpx."""
        request_headers = {"Accept": "application/json", **(headers or {})}
        started = self._clock.monotonic()
        failure: _Failure
        try:
            with anyio.move_on_after(self.settings.deadline_seconds) as scope:
                response = await self._http.request(
                    method,
                    self._base_url + path,
                    params=params,
                    json=body,
                    headers=request_headers,
                    auth=self._token,
                    timeout=self._timeout,
                )
        except httpx.TimeoutException as exc:
            outcome, failure = TIMEOUT, _Failure(CodaTimeout, "request timed out", True, cause=exc)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            outcome = CLIENT_ERROR
            failure = _Failure(CodaBadRequest, "request could not be sent", False, cause=exc)
        except httpx.TransportError as exc:
            outcome = CONNECTION_ERROR
            message = f"connection to Coda failed ({type(exc).__name__})"
            failure = _Failure(CodaTransientError, message, True, cause=exc)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            outcome = CLIENT_ERROR
            message = f"HTTP failure ({type(exc).__name__})"
            failure = _Failure(CodaPayloadError, message, False, cause=exc)
        else:
            if not scope.cancelled_caught:
                elapsed = self._clock.monotonic() - started
                return self._classify(method, path, cls, response, elapsed)
            outcome = TIMEOUT
            failure = _Failure(CodaTimeout, "request exceeded its deadline", True)
        self._record(cls, outcome, self._clock.monotonic() - started)
        return None, failure

    def _classify(
        self, method: str, path: str, cls: str, response: httpx.Response, elapsed: float
    ) -> tuple[object, _Failure | None]:
        status = response.status_code
        logger.debug("Coda %s %s -> HTTP %d in %.3f s", method, path, status, elapsed)
        if 200 <= status < 300:
            self._record(cls, OK, elapsed)
            try:
                return json.loads(response.content), None
            except ValueError:
                return None, _Failure(
                    CodaPayloadError,
                    "Coda answered with a body that is not JSON",
                    False,
                    status,
                    _snippet(response),
                )
        retry_after = None
        if status == 429:
            retry_after = backoff.parse_retry_after(
                response.headers.get("Retry-After"), now=self._clock.now()
            )
        failure = _failure_for_status(response, now_retry_after=retry_after)
        outcome = {429: RATE_LIMITED}.get(status, SERVER_ERROR if status >= 500 else CLIENT_ERROR)
        self._record(cls, outcome, elapsed)
        return None, failure

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> object:
        """Send with pacing and retries; return the decoded JSON or raise a `CodaError`.

        `path` is relative to the base URL, already encoded; it (not the URL, never headers)
        goes into logs and errors.
        """
        cls = limit_class(method, path)
        first_try_at = self._clock.monotonic()
        attempt = 0
        while True:
            attempt += 1
            hold = self._quiet_until - self._clock.monotonic()
            if hold > self.settings.max_retry_elapsed_seconds:
                raise CodaRateLimited(
                    f"Coda asked for a pause of {hold:.0f} s more (Retry-After); not sent",
                    method=method,
                    path=path,
                    retry_after_seconds=hold,
                )
            if hold > 0:  # a 429's Retry-After binds every request of this token, not one
                await self._clock.sleep(hold)
            waited = await self._limiter.acquire(cls)  # NB: not `x += await ...` (lost update)
            self.stats.limiter_wait_seconds += waited
            payload, failure = await self._send_once(method, path, cls, params, body, headers)
            if failure is None:
                return payload
            pause = backoff.retry_delay(
                attempt,
                base=self.settings.backoff_base_seconds,
                cap=self.settings.backoff_cap_seconds,
                rng=self._rng,
                retry_after_seconds=None
                if mutants.on("ignore_retry_after")  # planted bug (tests only)
                else failure.retry_after_seconds,
            )
            if failure.retry_after_seconds is not None and not mutants.on("ignore_retry_after"):
                # Also when this call gives up: the next call (another mutation's status,
                # the listing after a failed settle) must not go out before Coda allows it.
                self._quiet_until = max(
                    self._quiet_until, self._clock.monotonic() + failure.retry_after_seconds
                )
            elapsed = self._clock.monotonic() - first_try_at
            if not failure.retryable or not self._budget.allows(
                attempts=attempt, elapsed_seconds=elapsed, next_delay_seconds=pause
            ):
                raise self._error(failure, method, path, attempt, pause) from failure.cause
            logger.warning(
                "Coda %s %s failed: %s; attempt #%d/%d, retrying in %.2f s",
                method,
                path,
                failure.message if failure.status is None else f"HTTP {failure.status}",
                attempt,
                self._budget.max_attempts,
                pause,
            )
            self.stats.retries += 1
            self.stats.retries_by_class[cls] += 1
            await self._clock.sleep(pause)

    def _error(
        self, failure: _Failure, method: str, path: str, attempts: int, next_delay: float
    ) -> CodaError:
        message = failure.message
        if failure.retryable:
            message = f"{message}; gave up after attempt #{attempts}/{self._budget.max_attempts}"
        retry_after = failure.retry_after_seconds
        if failure.kind is CodaRateLimited and retry_after is None:
            retry_after = next_delay  # no Retry-After: the wait we would have made next
        return failure.kind(
            message,
            status=failure.status,
            method=method,
            path=path,
            coda_message=failure.coda_message,
            retry_after_seconds=retry_after,
        )

    async def _call(
        self,
        parser: Callable[[object], _T],
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _T:
        payload = await self._request(method, path, params=params, body=body, headers=headers)
        try:
            return parser(payload)
        except CodaPayloadError as exc:  # add the request to the pure parser's message
            raise CodaPayloadError(str(exc.args[0]), method=method, path=path) from exc

    @staticmethod
    def _table_path(doc_id: str, table_id: str) -> str:
        return f"/docs/{_segment(doc_id, 'doc_id')}/tables/{_segment(table_id, 'table_id')}"

    # --- metadata ----------------------------------------------------------------------------

    async def whoami(self) -> schema.UserInfo:
        """GET /whoami: works for every valid token; the startup health check."""
        return await self._call(schema.parse_user, "GET", "/whoami")

    async def get_doc(self, doc_id: str) -> schema.DocInfo:
        """GET /docs/{docId}: check `over_api_size_limit` at start."""
        return await self._call(schema.parse_doc, "GET", f"/docs/{_segment(doc_id, 'doc_id')}")

    async def get_table(self, doc_id: str, table_id: str) -> schema.TableInfo:
        """GET /docs/{docId}/tables/{tableId}."""
        return await self._call(schema.parse_table, "GET", self._table_path(doc_id, table_id))

    async def list_columns(self, doc_id: str, table_id: str) -> list[schema.ColumnInfo]:
        """Every column of a table (follows `nextPageToken`, 100 per page)."""
        path = self._table_path(doc_id, table_id) + "/columns"
        params: dict[str, str] = {"limit": "100"}
        columns: list[schema.ColumnInfo] = []
        seen: set[str] = set()
        while True:
            page = await self._call(schema.parse_column_page, "GET", path, params=params)
            columns.extend(page.items)
            if page.next_page_token is None:
                return columns
            self._check_new_token(page.next_page_token, seen, "GET", path)
            params = {"pageToken": page.next_page_token}

    @staticmethod
    def _check_new_token(token: str, seen: set[str], method: str, path: str) -> None:
        """A page token seen before would loop forever: treat it as a broken answer."""
        if token in seen:
            raise CodaPayloadError(
                "nextPageToken repeats an earlier page", method=method, path=path
            )
        seen.add(token)

    # --- rows: reads -------------------------------------------------------------------------

    async def list_rows(
        self,
        doc_id: str,
        table_id: str,
        *,
        sync_token: str | None = None,
        sort_by: str | None = None,
        value_format: str = "rich",
        limit: int | None = None,
        query: str | None = None,
        latest: bool = False,
    ) -> AsyncGenerator[schema.RowPage, None]:
        """Yield the pages of a row listing, in order, until no `nextPageToken` comes back.

        The first request carries the parameters; each later one ONLY `pageToken` (Coda ignores
        the rest because the token encodes the original request). Each `RowPage` carries the
        `nextSyncToken` as received (Coda sends it on the first page already). `latest=True`
        sends ``X-Coda-Doc-Version: latest`` on every page (a stale snapshot then answers 400).
        """
        if value_format not in VALUE_FORMATS:
            raise ValueError(f"value_format must be one of {sorted(VALUE_FORMATS)}")
        if sort_by is not None and sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by must be one of {sorted(SORT_KEYS)}")
        page_limit = self.settings.page_size if limit is None else limit
        if page_limit < 1:
            raise ValueError("limit must be >= 1")
        path = self._table_path(doc_id, table_id) + "/rows"
        params = {"valueFormat": value_format, "limit": str(page_limit)}
        optional = {"sortBy": sort_by, "query": query, "syncToken": sync_token}
        params.update({key: value for key, value in optional.items() if value is not None})
        headers = {"X-Coda-Doc-Version": "latest"} if latest else None
        seen: set[str] = set()
        while True:
            page = await self._call(
                schema.parse_row_page, "GET", path, params=params, headers=headers
            )
            yield page
            if page.next_page_token is None:
                return
            self._check_new_token(page.next_page_token, seen, "GET", path)
            params = {"pageToken": page.next_page_token}

    async def get_row(
        self,
        doc_id: str,
        table_id: str,
        row_id: str,
        *,
        value_format: str = "rich",
        latest: bool = False,
    ) -> schema.RawRow:
        """GET one row by id."""
        if value_format not in VALUE_FORMATS:
            raise ValueError(f"value_format must be one of {sorted(VALUE_FORMATS)}")
        path = f"{self._table_path(doc_id, table_id)}/rows/{_segment(row_id, 'row_id')}"
        headers = {"X-Coda-Doc-Version": "latest"} if latest else None
        params = {"valueFormat": value_format}
        return await self._call(schema.parse_row, "GET", path, params=params, headers=headers)

    # --- rows: writes (each answers 202 + requestId; poll mutation_status) -------------------

    async def upsert_rows(
        self,
        doc_id: str,
        table_id: str,
        rows: Sequence[Cells],
        *,
        key_columns: Sequence[str],
        disable_parsing: bool = False,
    ) -> schema.WriteResult:
        """POST rows: rows whose `key_columns` cells match are updated, the others inserted.

        Empty `key_columns` means plain inserts (not retry-safe; `added_row_ids` then comes
        back). Base tables only. Batching is the caller's job (see `upsert_rows_batched`).
        """
        if not rows:
            raise ValueError("upsert_rows needs at least one row")
        body: dict[str, Any] = {"rows": [{"cells": encode_cells(cells)} for cells in rows]}
        if key_columns:
            body["keyColumns"] = [_column(c) for c in key_columns]
        params = {"disableParsing": "true"} if disable_parsing else None
        path = self._table_path(doc_id, table_id) + "/rows"
        return await self._call(schema.parse_write_result, "POST", path, params=params, body=body)

    async def upsert_rows_batched(
        self,
        doc_id: str,
        table_id: str,
        rows: Sequence[Cells],
        *,
        key_columns: Sequence[str],
        batch_size: int,
        disable_parsing: bool = False,
    ) -> AsyncGenerator[schema.WriteResult, None]:
        """`upsert_rows` in consecutive batches of at most `batch_size`; one result per batch."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for start in range(0, len(rows), batch_size):
            yield await self.upsert_rows(
                doc_id,
                table_id,
                rows[start : start + batch_size],
                key_columns=key_columns,
                disable_parsing=disable_parsing,
            )

    async def update_row(
        self,
        doc_id: str,
        table_id: str,
        row_id: str,
        cells: Cells,
        *,
        disable_parsing: bool = False,
    ) -> schema.WriteResult:
        """PUT ``{"row": {"cells": [...]}}``: only the listed cells change."""
        path = f"{self._table_path(doc_id, table_id)}/rows/{_segment(row_id, 'row_id')}"
        body = {"row": {"cells": encode_cells(cells)}}
        params = {"disableParsing": "true"} if disable_parsing else None
        return await self._call(schema.parse_write_result, "PUT", path, params=params, body=body)

    async def delete_rows(
        self, doc_id: str, table_id: str, row_ids: Sequence[str]
    ) -> schema.WriteResult:
        """DELETE rows by id with the JSON body ``{"rowIds": [...]}``."""
        if not row_ids:
            raise ValueError("delete_rows needs at least one row id")
        body = {"rowIds": [_column(row_id, what="row id") for row_id in row_ids]}
        path = self._table_path(doc_id, table_id) + "/rows"
        return await self._call(schema.parse_write_result, "DELETE", path, body=body)

    async def delete_row(self, doc_id: str, table_id: str, row_id: str) -> schema.WriteResult:
        """DELETE one row by id."""
        path = f"{self._table_path(doc_id, table_id)}/rows/{_segment(row_id, 'row_id')}"
        return await self._call(schema.parse_write_result, "DELETE", path)

    # --- mutations ---------------------------------------------------------------------------

    async def mutation_status(self, request_id: str) -> schema.MutationStatus | None:
        """GET /mutationStatus/{requestId}; None on 404 ("not registered yet", or expired)."""
        path = f"/mutationStatus/{_segment(request_id, 'request_id')}"
        try:
            return await self._call(schema.parse_mutation_status, "GET", path)
        except CodaNotFound:
            return None

    async def wait_for_mutations(
        self, request_ids: Iterable[str], *, timeout_seconds: float
    ) -> dict[str, bool]:
        """Poll until every mutation completed or `timeout_seconds` passed; id -> completed.

        Polls every `mutation_poll_seconds` on the injected clock. A 404 is "not registered
        yet" for up to `mutation_404_grace_seconds` after the id's first 404; after that the id
        is reported False and no longer polled (unknown or expired: verify by reading back).
        """
        settings = self.settings
        deadline = self._clock.monotonic() + timeout_seconds
        result = dict.fromkeys(request_ids, False)
        pending = list(result)
        first_404: dict[str, float] = {}
        while True:
            for request_id in list(pending):
                status = await self.mutation_status(request_id)
                now = self._clock.monotonic()
                if status is None:
                    since = first_404.setdefault(request_id, now)
                    if now - since >= settings.mutation_404_grace_seconds:
                        logger.warning(
                            "mutation %s still unknown after %.0f s of 404s",
                            request_id,
                            now - since,
                        )
                        pending.remove(request_id)
                    continue
                if status.completed:
                    if status.warning:
                        logger.warning(
                            "mutation %s completed with a warning: %s", request_id, status.warning
                        )
                    result[request_id] = True
                    pending.remove(request_id)
            now = self._clock.monotonic()
            if not pending or now >= deadline:
                return result
            await self._clock.sleep(min(settings.mutation_poll_seconds, deadline - now))


def _column(value: str, *, what: str = "key column") -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value
