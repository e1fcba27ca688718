"""The local control port: an ASGI app (Starlette) over a `Controller` (the running service).

Routes (the Coda Pack and `coda-sync trigger/status` depend on these exact shapes):

    POST /sync            ?binding=NAME&full=true  or JSON {"binding": "NAME", "full": false}
                          (both optional; no binding = all bindings; the body wins over the
                          query) -> 202 {"run_id": "r-...", "binding": NAME|null, "full": bool,
                          "state": "queued"}
    GET  /runs/{run_id}   200 {"run_id", "state", "binding", "full", "started_at",
                          "finished_at", "result": {...}|null, "error"} | 404 unknown_run
    GET  /healthz         liveness: 200 while the loop runs and no cycle is stuck, else 503
    GET  /readyz          200 {"ready": true} | 503 {"ready": false, "reasons": [...]}
                          (+ "role": "leader" | "standby" | "mixed" on PostgreSQL, where
                          instances elect a leader per binding: a standby is ready, 200)
    GET  /metrics         Prometheus text format, from the injected registry
    GET  /status          JSON: the service and each binding

Errors are JSON ``{"error": CODE, "message": TEXT}``: 400 bad_request, 401 unauthorized,
404 unknown_binding (+ "bindings") / unknown_run / not_found, 405 method_not_allowed,
413 too_large, 429 busy (too many triggers; Retry-After), 503 busy (stopping; Retry-After),
500 internal. When a trigger token is configured, POST /sync and GET /runs/... need
``Authorization: Bearer <token>``, compared with `hmac.compare_digest` BEFORE anything else
is looked at (the Pack's connection check: wrong token -> 401, right token -> 404
unknown_run). The probes, /metrics and /status stay open: the port binds to loopback.

Nothing on this port can take the daemon down: every handler runs inside `_guarded`, which
turns an exception into a logged 500. Triggers only flip flags (coalescing happens in the
service), and more than `max_triggers` per `trigger_window_seconds` are refused with 429.
Knows nothing of sync logic; must not import the engine, the store or httpx.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.config import Secret
from daemon.metrics import Metrics

logger = logging.getLogger(__name__)

DEFAULT_MAX_TRIGGERS: Final = 100
DEFAULT_TRIGGER_WINDOW_SECONDS: Final = 60.0
DEFAULT_MAX_BODY_BYTES: Final = 4096
MAX_RUN_ID_CHARS: Final = 200
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
_TRIGGER_KEYS: Final = frozenset({"binding", "full"})

Handler = Callable[[Request], Awaitable[Response]]


class Busy(Exception):
    """Raised by `Controller.trigger` when no trigger can be accepted now (e.g. stopping)."""

    def __init__(self, message: str, *, retry_after_seconds: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer of a health or readiness check: ok, or the reasons it is not."""

    ok: bool
    reasons: tuple[str, ...] = ()
    role: str | None = None
    """Readiness on PostgreSQL: leader | standby | mixed (of this instance's bindings)."""


@dataclass(frozen=True, slots=True)
class Triggered:
    """What `Controller.trigger` did: the new run (as /runs shows it), and whether it joined a
    cycle request that was already pending (coalesced)."""

    run: Mapping[str, Any]
    coalesced: bool


class Controller(Protocol):
    """What the control port needs from the service (tests pass small fakes)."""

    @property
    def bindings(self) -> Sequence[str]:
        """Configured binding names."""
        ...

    @property
    def trigger_token(self) -> Secret | None:
        """The bearer token POST /sync and GET /runs need; None = no auth (loopback only)."""
        ...

    @property
    def metrics(self) -> Metrics:
        """The process's metrics (its `registry` is what /metrics exports)."""
        ...

    def trigger(self, binding: str | None, *, full: bool) -> Triggered:
        """Request a cycle of `binding` (None = all) now; raise `Busy` to refuse."""
        ...

    async def run_info(self, run_id: str) -> Mapping[str, Any] | None:
        """The /runs document of `run_id`, or None when unknown."""
        ...

    def health(self) -> Probe:
        """Liveness: the loop runs and no cycle is stuck."""
        ...

    def readiness(self) -> Probe:
        """Readiness: every binding synced successfully recently."""
        ...

    def status(self) -> Mapping[str, Any]:
        """The /status document."""
        ...

    def refresh_metrics(self) -> None:
        """Bring pull-style counters up to date before a scrape."""
        ...


class _HttpError(Exception):
    """Internal: answer with a JSON error document."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": error, "message": message, **extra}
        self.headers = dict(headers or {})


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(dict(body), status_code=status, headers=dict(headers or {}))


class _TriggerWindow:
    """At most `limit` triggers in any `window_seconds` (a sliding log of accept times)."""

    def __init__(self, limit: int, window_seconds: float, monotonic: Callable[[], float]) -> None:
        self._limit = limit
        self._window = window_seconds
        self._monotonic = monotonic
        self._times: deque[float] = deque()

    def admit(self) -> float | None:
        """None when admitted (and recorded); else the seconds until one would be."""
        now = self._monotonic()
        while self._times and self._times[0] + self._window <= now:
            self._times.popleft()
        if len(self._times) >= self._limit:
            return self._times[0] + self._window - now
        self._times.append(now)
        return None


def _guarded(handler: Handler) -> Handler:
    """Run `handler`; `_HttpError` -> its JSON answer; any other exception -> logged 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _HttpError as error:
            return _json(error.status, error.body, error.headers)
        except Exception:
            logger.exception("control port: %s %s failed", request.method, request.url.path)
            return _json(500, {"error": "internal", "message": "internal error; see the log"})

    return endpoint


def _parse_bool(value: str, *, what: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _HttpError(400, "bad_request", f"{what} must be true or false, got {value!r}")


def _body_params(raw: bytes) -> dict[str, Any]:
    """The JSON body of POST /sync as {"binding"?: str|None, "full"?: bool}, validated."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _HttpError(400, "bad_request", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _HttpError(400, "bad_request", "the request body must be a JSON object")
    unknown = sorted(set(data) - _TRIGGER_KEYS)
    if unknown:
        raise _HttpError(400, "bad_request", f"unknown field(s) {unknown}; use binding, full")
    if "binding" in data and not (data["binding"] is None or isinstance(data["binding"], str)):
        raise _HttpError(400, "bad_request", "binding must be a string (or absent for all)")
    if "full" in data and not isinstance(data["full"], bool):
        raise _HttpError(400, "bad_request", "full must be true or false")
    return data


class _Endpoints:
    """The route handlers, sharing the controller, the trigger window and the body cap."""

    def __init__(self, controller: Controller, window: _TriggerWindow, max_body_bytes: int):
        self.controller = controller
        self.window = window
        self.max_body_bytes = max_body_bytes

    def check_token(self, request: Request) -> None:
        """401 unless the bearer token matches (constant time), when one is configured."""
        token = self.controller.trigger_token
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        # NB: compared even when the header is absent, so timing tells nothing.
        if not hmac.compare_digest(given.strip().encode(), token.get().encode()):
            raise _HttpError(
                401,
                "unauthorized",
                "missing or wrong trigger token (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def trigger_params(self, request: Request) -> tuple[str | None, bool]:
        """(binding, full) from the query string and/or the JSON body (which wins)."""
        query = request.query_params
        unknown = sorted(set(query) - _TRIGGER_KEYS)
        if unknown:
            raise _HttpError(400, "bad_request", f"unknown parameter(s) {unknown}")
        binding: str | None = query.get("binding")
        full = _parse_bool(query["full"], what="full") if "full" in query else False
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            raise _HttpError(413, "too_large", f"the body exceeds {self.max_body_bytes} bytes")
        if raw.strip():
            data = _body_params(raw)
            binding = data.get("binding", binding)
            full = data.get("full", full)
        if binding is not None and not binding.strip():
            raise _HttpError(400, "bad_request", "binding must not be empty")
        if binding is not None and binding not in self.controller.bindings:
            raise _HttpError(
                404,
                "unknown_binding",
                f"binding {binding!r} is not configured",
                bindings=list(self.controller.bindings),
            )
        return binding, full

    def admit(self) -> None:
        wait = self.window.admit()
        if wait is not None:
            raise _HttpError(
                429,
                "busy",
                "too many sync requests; a sync is already queued",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def sync(self, request: Request) -> Response:
        triggers = self.controller.metrics.triggers
        try:
            self.check_token(request)
        except _HttpError:
            triggers.labels("unauthorized").inc()
            raise
        try:
            binding, full = await self.trigger_params(request)
            self.admit()
            try:
                done = self.controller.trigger(binding, full=full)
            except Busy as exc:
                retry = str(max(1, math.ceil(exc.retry_after_seconds)))
                raise _HttpError(503, "busy", str(exc), headers={"Retry-After": retry}) from None
        except _HttpError:
            triggers.labels("rejected").inc()
            raise
        triggers.labels("coalesced" if done.coalesced else "accepted").inc()
        body = {k: done.run.get(k) for k in ("run_id", "binding", "full", "state")}
        return _json(202, body)

    async def runs(self, request: Request) -> Response:
        self.check_token(request)  # NB: before the lookup (the Pack's connection check)
        run_id = str(request.path_params["run_id"])
        info = None
        if len(run_id) <= MAX_RUN_ID_CHARS:
            info = await self.controller.run_info(run_id)
        if info is None:
            raise _HttpError(404, "unknown_run", f"no run {run_id[:MAX_RUN_ID_CHARS]!r}")
        return _json(200, info)

    async def healthz(self, request: Request) -> Response:
        probe = self.controller.health()
        if probe.ok:
            return _json(200, {"healthy": True})
        return _json(503, {"healthy": False, "reasons": list(probe.reasons)})

    async def readyz(self, request: Request) -> Response:
        probe = self.controller.readiness()
        role = {} if probe.role is None else {"role": probe.role}
        if probe.ok:
            return _json(200, {"ready": True, **role})
        return _json(503, {"ready": False, "reasons": list(probe.reasons), **role})

    async def metrics(self, request: Request) -> Response:
        self.controller.refresh_metrics()
        registry = self.controller.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def status(self, request: Request) -> Response:
        return _json(200, self.controller.status())


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method) as JSON."""
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = codes.get(exc.status_code, "http_error")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return _json(exc.status_code, {"error": error, "message": message}, exc.headers)


def create_app(
    controller: Controller,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_triggers: int = DEFAULT_MAX_TRIGGERS,
    trigger_window_seconds: float = DEFAULT_TRIGGER_WINDOW_SECONDS,
    monotonic: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The control port's ASGI app over `controller` (served by `asgi_server.serve`).

    At most `max_triggers` POST /sync are accepted per `trigger_window_seconds` (sliding, on
    `monotonic`); bodies over `max_body_bytes` are refused with 413 (the server caps too).
    """
    window = _TriggerWindow(max_triggers, trigger_window_seconds, monotonic)
    ep = _Endpoints(controller, window, max_body_bytes)
    routes = [
        Route("/sync", _guarded(ep.sync), methods=["POST"]),
        Route("/runs/{run_id:path}", _guarded(ep.runs), methods=["GET"]),
        Route("/healthz", _guarded(ep.healthz), methods=["GET"]),
        Route("/readyz", _guarded(ep.readyz), methods=["GET"]),
        Route("/metrics", _guarded(ep.metrics), methods=["GET"]),
        Route("/status", _guarded(ep.status), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
