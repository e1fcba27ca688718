"""A small, hardened HTTP/1.1 server for ASGI apps, on anyio + h11.

What it owns: the daemon's local control port (``POST /sync``, ``/healthz``, ``/readyz``,
``/metrics``, ``/status``): accepting TCP connections, speaking HTTP/1.1 through h11 and calling an
ASGI 3 app once per request. It must not install signal handlers, start threads, send lifespan
events or outlive its caller's task group: ``service.run()`` starts it with
``await tg.start(serve, app, ...)``, so the port is bound before ``READY=1``, and cancelling that
task group closes the listener and every connection at once (STYLE 2.6).

Why our own server rather than uvicorn/hypercorn: structured concurrency (no ``serve()`` that
owns the event loop or the signals), and every phase of a connection has its own deadline, which
is what slow-client (slowloris) protection needs (TESTING 9). Per connection::

    accept      head done      body done                 response done
      |--header--->|---body---->|--response (app)-------->|
                                                          |--keepalive-->|--header--->| ...
                                                          idle           first byte   next head

    header = header_timeout_seconds, body = body_timeout_seconds,
    response = response_timeout_seconds, keepalive = keepalive_timeout_seconds.

A phase that overruns ends the connection: head -> dropped without an answer; body -> 408;
app -> 503 if nothing was sent yet, otherwise the connection is cut; idle -> closed quietly.

Deliberate simplifications, fine for a control port:

- Request bodies are read completely (at most ``max_body_bytes``) *before* the app is called, so
  the size cap (413) and the body deadline (408) hold without the app's cooperation, and an
  oversized request never reaches the app. ``receive()`` returns the whole body in one message,
  then waits until the response is complete and returns ``http.disconnect``.
- One request at a time per connection; pipelined requests are answered in order.
- Only origin-form targets (``/path?query``); CONNECT is answered 501; no Upgrade.
- ``scope["asgi"]["spec_version"]`` is ``"2.4"``: ``send()`` on a connection the client has left
  raises :class:`ClientDisconnected` (an ``OSError``), which Starlette expects.
- Errors the server answers itself (400, 408, 413, 431, 500, 501, 503) are small plain-text
  responses with ``Connection: close``; the server then closes "lingering" (shut down the write
  side, drain briefly), so the client reads the answer instead of a TCP reset.

Imports only anyio and h11 (no Starlette), so any ASGI 3 app works, including
``prometheus_client.make_asgi_app()``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import anyio
import h11
from anyio.abc import Listener, SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_READ_SIZE: Final = 65536
#: After an error answer: how long (and how many bytes) to drain the client's unread request,
#: so that closing does not turn into a TCP reset that destroys the answer in flight.
_LINGER_SECONDS: Final = 1.0
_LINGER_MAX_BYTES: Final = 1 << 20
#: At most this many x max_connections refused connections are answered 503 at once (each holds
#: its socket for up to _LINGER_SECONDS); past that, a flood is closed without an answer.
_REJECTING_FACTOR: Final = 4
#: Pause after a failed accept() (EMFILE, ENOBUFS...), so a persistent error cannot spin the loop.
_ACCEPT_RETRY_SECONDS: Final = 0.1
_LOG_TARGET_CHARS: Final = 200

_REASONS: Final[dict[int, bytes]] = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Deadlines (seconds) and sizes (bytes) that bound what one client can cost us."""

    header_timeout_seconds: float = 5.0
    """The whole request head must arrive within this (from accept, or from the first byte of a
    keep-alive request), else the connection is dropped: slowloris protection."""
    body_timeout_seconds: float = 10.0
    """The whole request body must arrive within this after the head, else 408."""
    keepalive_timeout_seconds: float = 5.0
    """An idle keep-alive connection is closed when no new request starts within this."""
    max_body_bytes: int = 64 * 1024
    """Larger Content-Length -> 413 before the body is read; a chunked body past it -> 413."""
    max_header_bytes: int = 16 * 1024
    """A request head larger than this -> 431."""
    max_connections: int = 64
    """Open connections served at once; connections beyond it are answered 503 and closed (up
    to 4 x this many at once; a flood beyond that is closed without an answer)."""
    response_timeout_seconds: float = 30.0
    """The app must finish its response within this, else 503 (or a cut connection when part of
    the response was already sent). Starlette background tasks count towards it."""
    write_timeout_seconds: float = 10.0
    """Bound on writing an answer the server produces itself (error pages, 100 Continue)."""

    def __post_init__(self) -> None:
        for name in (
            "header_timeout_seconds",
            "body_timeout_seconds",
            "keepalive_timeout_seconds",
            "response_timeout_seconds",
            "write_timeout_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServerLimits.{name} must be > 0")
        for name in ("max_body_bytes", "max_header_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerLimits.{name} must be >= 1")


DEFAULT_LIMITS: Final = ServerLimits()


class ClientDisconnected(OSError):
    """Raised by the ASGI ``send`` when the client has gone away (ASGI HTTP spec 2.4)."""


class _Reject(Exception):
    """Internal: answer the current request with ``status`` and close the connection."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class _Drop(Exception):
    """Internal: close the connection without an answer (client gone)."""


async def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    limits: ServerLimits = DEFAULT_LIMITS,
    on_bound: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``app`` over HTTP/1.1 on ``host:port`` until cancelled.

    Binds first, then reports the bound ``(host, port)`` through ``on_bound`` and
    ``task_status.started`` (``port=0`` picks a free port), so ``await tg.start(serve, app)``
    returns only once connections can be accepted. Cancellation closes the listener and aborts
    every connection; nothing is awaited beyond that. Never installs signal handlers.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    try:
        bound_host, bound_port = _bound_address(listener.listeners[0])
        if not _is_loopback(bound_host):
            logger.warning(
                "HTTP control port bound to non-loopback address %s; it must be protected",
                bound_host,
            )
        server = _Server(app, limits)
        async with anyio.create_task_group() as tg:
            for sub_listener in listener.listeners:
                if not isinstance(sub_listener, SocketListener):  # pragma: no cover
                    raise TypeError(f"unexpected listener {sub_listener!r}")
                tg.start_soon(server.accept_loop, sub_listener, tg)
            logger.info("HTTP control port listening on %s:%d", bound_host, bound_port)
            if on_bound is not None:
                on_bound(bound_host, bound_port)
            task_status.started((bound_host, bound_port))
    finally:
        # NB: MultiListener.aclose() would stop at the first cancelled await; close each one.
        for sub_listener in listener.listeners:
            await anyio.aclose_forcefully(sub_listener)


def _bound_address(listener: Listener[SocketStream]) -> tuple[str, int]:
    address = listener.extra(SocketAttribute.local_address)
    if not isinstance(address, tuple):  # pragma: no cover - TCP listeners give (host, port, ...)
        raise RuntimeError(f"unexpected listener address {address!r}")
    return str(address[0]), int(address[1])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _peer(stream: SocketStream, attribute: Any) -> tuple[str, int] | None:
    try:
        address = stream.extra(attribute)
    except anyio.TypedAttributeLookupError:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


def _error_response(status: int, *, head_only: bool = False) -> bytes:
    """A complete ``Connection: close`` plain-text answer, built without h11 so it can be sent
    whatever state the h11 connection is in (including after a protocol error)."""
    reason = _REASONS.get(status, b"Error")
    body = b"%d %s\n" % (status, reason)
    lines = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if status == 503:
        lines.append(b"retry-after: 1")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


async def _linger_close(stream: SocketStream) -> None:
    """Close after an answer: shut down our side, drain what the client still sends, close.

    Closing a socket with unread input makes the kernel send a reset, which can destroy the answer
    before the client reads it (e.g. a 413 sent while the client is still uploading).
    """
    try:
        await stream.send_eof()
        with anyio.move_on_after(_LINGER_SECONDS):
            drained = 0
            while drained < _LINGER_MAX_BYTES:
                drained += len(await stream.receive(_READ_SIZE))
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        await anyio.aclose_forcefully(stream)


class _Server:
    """Accept loop and connection accounting shared by all listeners of one ``serve()``."""

    def __init__(self, app: ASGIApp, limits: ServerLimits) -> None:
        self._app = app
        self._limits = limits
        self._active = 0
        self._rejecting = 0
        self._refused = 0  # since the cap was last hit
        self._accept_failing = False

    async def accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:
                # EMFILE/ENFILE/ENOBUFS or a client that reset before accept finished: keep going.
                log = logger.debug if self._accept_failing else logger.warning
                log("accept() failed: %s; retrying", exc)
                self._accept_failing = True
                await anyio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            self._accept_failing = False
            await self._dispatch(stream, tg)

    async def _dispatch(self, stream: SocketStream, tg: TaskGroup) -> None:
        limit = self._limits.max_connections
        if self._active < limit:
            # Hysteresis: one WARNING when the cap is hit, one INFO once well below it again.
            if self._refused and self._active < max(1, limit // 2):
                logger.info("HTTP control port below capacity; %d refused", self._refused)
                self._refused = 0
            self._active += 1
            tg.start_soon(self._serve_connection, stream)
            return
        if not self._refused:
            logger.warning("HTTP control port at %d connections; answering 503", limit)
        self._refused += 1
        if self._rejecting < limit * _REJECTING_FACTOR:
            self._rejecting += 1
            tg.start_soon(self._reject_connection, stream)
        else:  # a flood: not even worth an answer
            await anyio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: SocketStream) -> None:
        try:
            await _Connection(stream, self._app, self._limits).run()
        except Exception:  # a bug in this module; never let it take the server down
            logger.exception("unexpected error on an HTTP control connection")
        finally:
            self._active -= 1

    async def _reject_connection(self, stream: SocketStream) -> None:
        try:
            with anyio.move_on_after(self._limits.write_timeout_seconds):
                await stream.send(_error_response(503))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            try:
                await _linger_close(stream)
            finally:
                self._rejecting -= 1


class _Connection:
    """One client connection: a loop of request/response cycles until either side closes."""

    def __init__(self, stream: SocketStream, app: ASGIApp, limits: ServerLimits) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._app = app
        self._limits = limits
        self._client = _peer(stream, SocketAttribute.remote_address)
        self._server = _peer(stream, SocketAttribute.local_address)
        self._accepted_at = anyio.current_time()
        # True once bytes of an answer may still be in flight: then close by lingering.
        self._linger = False

    async def run(self) -> None:
        try:
            await self._cycles()
        except _Drop as exc:
            logger.debug("HTTP client %s dropped: %s", self._client, exc)
        finally:
            if self._linger:
                await _linger_close(self.stream)
            else:
                await anyio.aclose_forcefully(self.stream)

    async def _cycles(self) -> None:
        first = True
        while True:
            request: h11.Request | None = None
            try:
                request = await self._read_head(first=first)
                if request is None:
                    return
                self._check_request(request)
                body = await self._read_body(request)
            except _Reject as exc:
                logger.debug("HTTP client %s: %d (%s)", self._client, exc.status, exc)
                await self._send_error(exc.status, request)
                return
            except h11.RemoteProtocolError as exc:
                if self.h11.trailing_data[1]:  # the client closed mid-message: nobody to answer
                    raise _Drop(f"closed mid-request ({exc})") from None
                logger.debug("HTTP client %s: bad request (%s)", self._client, exc)
                await self._send_error(exc.error_status_hint, request)
                return
            if not await self._respond(request, body):
                return
            self.h11.start_next_cycle()
            self._linger = False
            first = False

    def _check_request(self, request: h11.Request) -> None:
        # NB: h11's max_incomplete_event_size only bounds a head that is still arriving; a big
        # head that arrives in one read is parsed whole, so measure the parsed head as well.
        head_size = len(request.method) + len(request.target) + 12
        head_size += sum(len(name) + len(value) + 4 for name, value in request.headers)
        if head_size > self._limits.max_header_bytes:
            raise _Reject(431, f"request head of about {head_size} bytes")
        if request.method == b"CONNECT":
            raise _Reject(501, "CONNECT")
        if not request.target.startswith(b"/"):  # absolute-form or asterisk-form
            raise _Reject(400, "request target is not origin-form")

    async def _fill(self) -> None:
        """Feed h11 one read from the socket (b"" means the client closed)."""
        try:
            data = await self.stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""
        self.h11.receive_data(data)

    async def _next_event(self) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                await self._fill()
            elif event is h11.PAUSED:  # pragma: no cover - we never read ahead of our answer
                raise _Drop("h11 paused")
            else:
                return event  # type: ignore[return-value]

    async def _read_head(self, *, first: bool) -> h11.Request | None:
        """The next request head, or None when the connection should end quietly."""
        if first:
            started_at = self._accepted_at
        else:
            if not self.h11.trailing_data[0]:
                with anyio.move_on_after(self._limits.keepalive_timeout_seconds) as idle:
                    await self._fill()
                if idle.cancelled_caught:
                    logger.debug("HTTP client %s: idle keep-alive connection closed", self._client)
                    return None
            started_at = anyio.current_time()
        event: h11.Event | None = None
        deadline = started_at + self._limits.header_timeout_seconds
        with anyio.CancelScope(deadline=deadline) as scope:
            event = await self._next_event()
        if scope.cancelled_caught:
            logger.debug("HTTP client %s: request head not complete in time", self._client)
            return None
        return event if isinstance(event, h11.Request) else None

    async def _read_body(self, request: h11.Request) -> bytes:
        length = _content_length(request)
        if length is not None and length > self._limits.max_body_bytes:
            raise _Reject(413, f"Content-Length {length}")
        if self.h11.they_are_waiting_for_100_continue:
            await self._write_own(
                self._h11_bytes(h11.InformationalResponse(status_code=100, headers=[]))
            )
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self._limits.body_timeout_seconds):
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self._limits.max_body_bytes:
                        raise _Reject(413, f"body over {self._limits.max_body_bytes} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
                else:
                    raise _Drop("closed mid-body")
        raise _Reject(408, "request body not complete in time")

    async def _respond(self, request: h11.Request, body: bytes) -> bool:
        """Run the app for one request; True when the connection may serve another."""
        exchange = _Exchange(self, request, body)
        failed = False
        with anyio.move_on_after(self._limits.response_timeout_seconds) as deadline:
            try:
                await self._app(self._scope(request), exchange.receive, exchange.send)
            except Exception:
                failed = True
                if exchange.disconnected:
                    logger.debug("ASGI app stopped: client %s disconnected", self._client)
                else:
                    logger.exception("ASGI app raised on %s", _describe(request))
        exchange.done.set()
        if deadline.cancelled_caught:
            logger.warning(
                "ASGI app did not finish %s within %.1f s",
                _describe(request),
                self._limits.response_timeout_seconds,
            )
        if exchange.disconnected:
            return False
        if exchange.complete:
            if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                return True
            self._linger = True  # e.g. "Connection: close" or HTTP/1.0
            return False
        if exchange.headers_sent:  # a partial response cannot be repaired: cut it
            logger.warning("ASGI response to %s cut short", _describe(request))
            return False
        if not failed and not deadline.cancelled_caught:
            logger.error("ASGI app returned without a response to %s", _describe(request))
        await self._send_error(503 if deadline.cancelled_caught else 500, request)
        return False

    def _scope(self, request: h11.Request) -> Scope:
        raw_path, _, query_string = request.target.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"),
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": "",
            "headers": [(bytes(name), bytes(value)) for name, value in request.headers],
            "client": self._client,
            "server": self._server,
        }

    def _h11_bytes(self, event: h11.Event) -> bytes:
        return self.h11.send(event) or b""

    async def _write_own(self, data: bytes) -> None:
        """Write something the server itself produced, under the write deadline."""
        with anyio.move_on_after(self._limits.write_timeout_seconds) as scope:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise _Drop("write failed") from exc
        if scope.cancelled_caught:
            raise _Drop("write timed out")

    async def _send_error(self, status: int, request: h11.Request | None) -> None:
        head_only = request is not None and request.method == b"HEAD"
        self._linger = True
        await self._write_own(_error_response(status, head_only=head_only))


class _Exchange:
    """The ASGI ``receive``/``send`` pair for one request, and the response's progress."""

    def __init__(self, conn: _Connection, request: h11.Request, body: bytes) -> None:
        self._conn = conn
        self._head_only = request.method == b"HEAD"
        self._body: bytes | None = body
        self._start: Message | None = None
        self.headers_sent = False
        self.complete = False
        self.disconnected = False
        self.done = anyio.Event()  # set when the response is complete or can no longer be sent

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the HTTP client disconnected")
        kind = message.get("type")
        if kind == "http.response.start":
            if self._start is not None:
                raise RuntimeError("ASGI: http.response.start sent twice")
            self._start = message
        elif kind == "http.response.body":
            await self._send_body(message)
        else:
            raise RuntimeError(f"ASGI: unsupported message type {kind!r}")

    async def _send_body(self, message: Message) -> None:
        if self._start is None:
            raise RuntimeError("ASGI: http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("ASGI: http.response.body after the response completed")
        conn = self._conn
        data = bytearray()
        if not self.headers_sent:
            # The head waits for the first body message, so an app that fails between the two
            # can still be answered 500.
            head = h11.Response(
                status_code=int(self._start["status"]),
                headers=list(self._start.get("headers", [])),
            )
            data += conn._h11_bytes(head)
        body = bytes(message.get("body", b""))
        if body and not self._head_only:
            data += conn._h11_bytes(h11.Data(data=body))
        complete = not message.get("more_body", False)
        if complete:
            data += conn._h11_bytes(h11.EndOfMessage())
        # Only now is the message known to be valid HTTP (h11 raised otherwise): write it.
        if data:
            try:
                await conn.stream.send(bytes(data))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self.disconnected = True
                self.done.set()
                raise ClientDisconnected("the HTTP client disconnected") from exc
            finally:
                self.headers_sent = True  # possibly in part: a later failure must cut
        if complete:
            self.complete = True
            self.done.set()


def _content_length(request: h11.Request) -> int | None:
    # h11 has already rejected malformed or conflicting values.
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None


def _describe(request: h11.Request) -> str:
    target = request.target[:_LOG_TARGET_CHARS].decode("ascii", "replace")
    return f"{request.method.decode('ascii', 'replace')} {target}"
