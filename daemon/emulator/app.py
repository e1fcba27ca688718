"""The emulator as an ASGI app (Starlette): Coda API v1 routes plus the /_emulator controls.

Every API request goes through one pipeline, in this order:

    tick (apply due mutations) -> body size -> auth (401/403) -> rate limit (429)
    -> injected fault, pre-handler part -> `X-Coda-Doc-Version: latest` check (400 if stale)
    -> handler -> injected fault, post-handler part -> request log + counters

The API is served under /apis/v1 and, identically, at the root, so base URLs with or without
the prefix work. All errors use Coda's body {"statusCode", "statusMessage", "message"}.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from daemon.emulator import control, listing, resources, writes
from daemon.emulator.faults import Access, FaultRule, html_page, truncate
from daemon.emulator.model import STATUS_MESSAGES, ApiError, TableSpec
from daemon.emulator.mutations import NORMAL, Fate
from daemon.emulator.ratelimit import RequestLogEntry
from daemon.emulator.state import EmulatorState
from daemon.emulator.values import iso_utc_ms

API_PREFIX = "/apis/v1"
DOC_READS = frozenset(
    {"getDoc", "listTables", "getTable", "listColumns", "getColumn", "listRows", "getRow"}
)


@dataclass
class Call:
    """One API request, as handlers see it."""

    state: EmulatorState
    request: Request
    query: Mapping[str, str]
    body: bytes
    token_hash: str | None
    fate: Fate = NORMAL

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def table(self) -> TableSpec:
        self.doc()
        return self.state.find_table(self.param("tableIdOrName"))

    def doc(self) -> None:
        if self.param("docId") != self.state.doc.id:
            raise ApiError(404, f"Could not find a doc with ID '{self.param('docId')}'.")

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON.") from None


Handler = Callable[[Call], Any]


def token_hash(token: str) -> str:
    """A short, stable, non-reversible id of a token for logs (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _relative(path: str) -> str:
    return path[len(API_PREFIX) :] or "/" if path.startswith(API_PREFIX) else path


@dataclass
class _Answer:
    content: bytes
    status: int
    headers: dict[str, str]
    media: str = "application/json"

    @classmethod
    def error(cls, error: ApiError) -> _Answer:
        return cls(_json_bytes(error.body()), error.status, error.headers)


@dataclass
class _Seen:
    """What the request log records about a request."""

    endpoint: str
    access: Access
    body: bytes
    token_hash: str | None
    fault: FaultRule | None = None


async def _pipeline(
    request: Request, endpoint: str, access: Access, handler: Handler, ok: int
) -> Response:
    state: EmulatorState = request.app.state.emulator
    state.tick()
    token = _bearer(request)
    seen = _Seen(endpoint, access, await request.body(), token_hash(token) if token else None)
    try:
        _admit(state, request, token, seen)
        seen.fault = _pick_fault(state, request, seen)
        early = await _pre_fault(state, seen.fault) if seen.fault else None
        if early is not None:
            return _finish(state, request, seen, early)
        if (
            endpoint in DOC_READS
            and request.headers.get("x-coda-doc-version") == "latest"
            and state.is_stale()
        ):
            raise ApiError(400, "The doc version is not the latest: the API's snapshot is behind.")
        query = dict(request.query_params)
        payload = handler(
            Call(state, request, query, seen.body, seen.token_hash, _fate(seen.fault))
        )
        answer = _Answer(await _post_fault(state, seen.fault, payload), ok, {})
    except ApiError as error:
        answer = _Answer.error(error)
    return _finish(state, request, seen, answer)


def _admit(state: EmulatorState, request: Request, token: str | None, seen: _Seen) -> None:
    """Body size (413), auth (401/403) and the token's rate budget (429)."""
    cfg = state.config
    if cfg.max_body_bytes is not None and len(seen.body) > cfg.max_body_bytes:
        raise ApiError(413, f"The request body exceeds {cfg.max_body_bytes} bytes.")
    if token is None or (token not in cfg.tokens and token not in cfg.read_only_tokens):
        raise ApiError(401, "The API token is invalid or has expired.")
    if seen.access == "write" and token not in cfg.tokens:
        raise ApiError(403, "The API token does not grant write access.")
    wait = state.limiter.check(seen.token_hash or "", seen.access, state.clock.monotonic(), cfg)
    if wait is not None:
        seconds = str(max(1, math.ceil(wait)))
        retry = {"Retry-After": seconds} if cfg.rate_limit_retry_after else {}
        raise ApiError(429, "Too Many Requests", headers=retry)


def _pick_fault(state: EmulatorState, request: Request, seen: _Seen) -> FaultRule | None:
    cfg = state.config
    fault = state.faults.pick(
        request.method,
        request.url.path,
        seen.endpoint,
        seen.access,
        rng=state.fault_rng,
        rate=cfg.random_fault_rate,
        kinds=cfg.random_fault_kinds,
    )
    if fault is not None:
        state.faults.record(fault)
    return fault


async def _pre_fault(state: EmulatorState, fault: FaultRule) -> _Answer | None:
    """Faults that answer before the handler runs (None: carry on to the handler)."""
    if fault.kind in ("http_error", "rate_limit"):
        status = 429 if fault.kind == "rate_limit" else fault.status
        headers = {}
        if fault.kind == "rate_limit" and fault.retry_after_seconds is not None:
            headers["Retry-After"] = str(max(1, round(fault.retry_after_seconds)))
        return _Answer.error(ApiError(status, STATUS_MESSAGES.get(status), headers=headers))
    if fault.kind == "html_error":
        page = html_page(fault.status, STATUS_MESSAGES.get(fault.status, "Error"))
        return _Answer(page, fault.status, {}, "text/html; charset=utf-8")
    if fault.kind in ("delay", "hang") and not fault.after_handler:
        await _sleep(state, fault)
    return None


async def _sleep(state: EmulatorState, fault: FaultRule) -> None:
    seconds = fault.delay_seconds if fault.kind == "delay" else state.config.hang_seconds
    await state.clock.sleep(seconds)
    state.tick()


def _fate(fault: FaultRule | None) -> Fate:
    if fault is None:
        return NORMAL
    if fault.kind == "never_apply":
        return Fate(never_apply=True)
    if fault.kind == "fail_apply":
        return Fate(fail=True)
    if fault.kind == "slow_apply":
        return Fate(delay_seconds=fault.delay_seconds)
    return NORMAL


async def _post_fault(state: EmulatorState, fault: FaultRule | None, payload: Any) -> bytes:
    """The answer's body, after faults that act once the request was processed."""
    if fault is not None:
        if fault.kind in ("delay", "hang") and fault.after_handler:
            await _sleep(state, fault)  # processed; the answer is late (or never read)
        if fault.kind == "lost_response":
            raise ApiError(500, "Internal Server Error")
        if isinstance(payload, dict) and fault.kind == "no_items":
            payload = {k: v for k, v in payload.items() if k != "items"}
        if isinstance(payload, dict) and fault.kind == "empty_listing":
            kept = {k: v for k, v in payload.items() if k not in ("nextPageToken", "nextPageLink")}
            payload = kept | {"items": []}
    content = _json_bytes(payload)
    return truncate(content) if fault is not None and fault.kind == "malformed_json" else content


def _finish(state: EmulatorState, request: Request, seen: _Seen, answer: _Answer) -> Response:
    state.stats.record(
        RequestLogEntry(
            seq=state.stats.total + 1,
            monotonic=state.clock.monotonic(),
            at=iso_utc_ms(state.now_ms()),
            method=request.method,
            path=_relative(request.url.path),
            query=request.url.query,
            endpoint=seen.endpoint,
            access=seen.access,
            status=answer.status,
            token_hash=seen.token_hash,
            request_bytes=len(seen.body),
            response_bytes=len(answer.content),
            fault=seen.fault.label if seen.fault is not None else None,
        )
    )
    return Response(
        answer.content, status_code=answer.status, headers=answer.headers, media_type=answer.media
    )


def _route(path: str, handlers: dict[str, tuple[str, Handler, int]]) -> Route:
    """One path; `handlers` maps method -> (operationId, handler, success status)."""

    async def endpoint(request: Request) -> Response:
        operation, handler, ok = handlers[request.method if request.method != "HEAD" else "GET"]
        access: Access = "read" if request.method in ("GET", "HEAD") else "write"
        return await _pipeline(request, operation, access, handler, ok)

    return Route(path, endpoint, methods=list(handlers))


def _doc(call: Call) -> Any:
    call.doc()
    return resources.get_doc(call.state)


def _tables(call: Call) -> Any:
    call.doc()
    return resources.list_tables(call.state, call.query)


def _mutation_status(call: Call) -> Any:
    return call.state.mutation_status(call.param("requestId"))


def api_routes() -> list[BaseRoute]:
    rows = "/docs/{docId}/tables/{tableIdOrName}/rows"
    return [
        _route("/whoami", {"GET": ("whoami", lambda c: resources.whoami(c.state), 200)}),
        _route("/docs/{docId}", {"GET": ("getDoc", _doc, 200)}),
        _route("/docs/{docId}/tables", {"GET": ("listTables", _tables, 200)}),
        _route(
            "/docs/{docId}/tables/{tableIdOrName}",
            {"GET": ("getTable", lambda c: resources.get_table(c.state, c.table()), 200)},
        ),
        _route(
            "/docs/{docId}/tables/{tableIdOrName}/columns",
            {
                "GET": (
                    "listColumns",
                    lambda c: resources.list_columns(c.state, c.table(), c.query),
                    200,
                )
            },
        ),
        _route(
            "/docs/{docId}/tables/{tableIdOrName}/columns/{columnIdOrName}",
            {
                "GET": (
                    "getColumn",
                    lambda c: resources.get_column(c.state, c.table(), c.param("columnIdOrName")),
                    200,
                )
            },
        ),
        _route(
            rows,
            {
                "GET": ("listRows", lambda c: listing.list_rows(c.state, c.table(), c.query), 200),
                "POST": ("upsertRows", _upsert, 202),
                "DELETE": ("deleteRows", _delete_rows, 202),
            },
        ),
        _route(
            rows + "/{rowIdOrName}",
            {
                "GET": (
                    "getRow",
                    lambda c: listing.get_row(c.state, c.table(), c.param("rowIdOrName"), c.query),
                    200,
                ),
                "PUT": ("updateRow", _update, 202),
                "DELETE": ("deleteRow", _delete_row, 202),
            },
        ),
        _route(
            "/mutationStatus/{requestId}", {"GET": ("getMutationStatus", _mutation_status, 200)}
        ),
    ]


def _upsert(call: Call) -> Any:
    table = call.table()
    return writes.upsert_rows(
        call.state,
        table,
        call.json(),
        call.query,
        token_hash=call.token_hash,
        fate=call.fate,
    )


def _update(call: Call) -> Any:
    table = call.table()
    return writes.update_row(
        call.state,
        table,
        call.param("rowIdOrName"),
        call.json(),
        call.query,
        token_hash=call.token_hash,
        fate=call.fate,
    )


def _delete_row(call: Call) -> Any:
    table = call.table()
    return writes.delete_row(
        call.state,
        table,
        call.param("rowIdOrName"),
        token_hash=call.token_hash,
        fate=call.fate,
    )


def _delete_rows(call: Call) -> Any:
    table = call.table()
    return writes.delete_rows(
        call.state, table, call.json(), token_hash=call.token_hash, fate=call.fate
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods still answer with Coda's error body."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = ApiError(
        status, "The requested resource or method does not exist." if status in (404, 405) else None
    )
    answer = _Answer.error(error)
    if request.url.path.startswith("/_emulator"):
        return Response(answer.content, status_code=status, media_type=answer.media)
    state: EmulatorState = request.app.state.emulator
    token = _bearer(request)
    access: Access = "read" if request.method in ("GET", "HEAD") else "write"
    seen = _Seen("unknown", access, await request.body(), token_hash(token) if token else None)
    return _finish(state, request, seen, answer)


def create_app(state: EmulatorState) -> Starlette:
    """The ASGI app serving `state` (in process: httpx.ASGITransport(app=create_app(state)))."""
    routes = api_routes()
    app = Starlette(
        routes=[
            Mount("/_emulator", routes=control.routes()),
            Mount(API_PREFIX, routes=routes),
            *routes,
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.emulator = state
    return app
