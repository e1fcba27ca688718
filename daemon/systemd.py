"""sd_notify(3) without libsystemd: READY, STOPPING, STATUS, and a progress-gated watchdog.

What it owns: the datagrams a ``Type=notify`` service sends to ``$NOTIFY_SOCKET``, and the
watchdog pinger. Imports only the standard library and ``daemon.clock`` (time is injected, so the
pinger is tested on a fake clock); it must not import httpx, sqlalchemy or the service.

Contract with ``service.run()`` (STYLE 2.13, TESTING 8):

- ``READY=1`` only after config loaded, the DB answered, the instance lock is held and the HTTP
  port is bound (``await tg.start(asgi_server.serve, ...)``); ``STOPPING=1`` as shutdown starts.
- ``WATCHDOG=1`` is sent by :func:`run_pinger`, but only when the reconcile loop proved it is
  alive by calling :meth:`WatchdogGate.progress` since the previous ping. A detached timer that
  pinged unconditionally would keep a hung sync alive forever.

Everything is a cheap no-op when ``NOTIFY_SOCKET`` is absent (tests, ``coda-sync once``, a shell).
Send errors are logged once at DEBUG and never raised: notification is best-effort by design, as
in ``sd_notify()`` itself.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

from daemon.clock import Clock

logger = logging.getLogger(__name__)

#: systemd truncates nothing, but a STATUS= longer than a line is useless in ``systemctl status``.
STATUS_MAX_CHARS: Final = 200


class Notifier:
    """Sends sd_notify datagrams to the socket named in ``NOTIFY_SOCKET``.

    ``environ`` is read once, at construction (STYLE 2.5: nothing reads ``os.environ`` later);
    pass ``os.environ`` in production and a dict in tests. ``pid`` (default ``os.getpid()``)
    decides whether ``WATCHDOG_PID`` addresses this process.
    """

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        self._address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(environ, os.getpid() if pid is None else pid)
        self._sock: socket.socket | None = None
        self._error_logged = False

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket to talk to."""
        return self._address is not None

    def watchdog_interval_seconds(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC`` (sd_watchdog_enabled(3)),
        or None when the watchdog is off or ``WATCHDOG_PID`` names another process."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` (``"KEY=value"``) in one datagram; True if it was sent.

        One datagram keeps related state atomic, e.g. ``notify("READY=1", "STATUS=syncing")``.
        Newlines inside an assignment would start a new one, so each must be a single line.
        """
        if self._address is None or not assignments:
            return False
        for assignment in assignments:
            if "=" not in assignment or "\n" in assignment:
                raise ValueError(f"not a single-line KEY=value assignment: {assignment!r}")
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._error_logged:
                self._error_logged = True
                logger.debug("sd_notify to %r failed (not logged again): %s", self._address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (plus ``STATUS=`` when given): start-up is complete."""
        return self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun (systemctl shows "deactivating")."""
        return self.notify("STOPPING=1", *_status(status))

    def reloading(self, monotonic_usec: int, status: str | None = None) -> bool:
        """``RELOADING=1``: a configuration reload has begun; send :meth:`ready` when done.

        ``monotonic_usec`` is CLOCK_MONOTONIC in microseconds (``time.monotonic_ns() // 1000``);
        systemd 253+ requires it with ``Type=notify-reload``, 252 ignores it.
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line for ``systemctl status`` (newlines folded, capped)."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``. Prefer :func:`run_pinger`, which sends it only on loop progress."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: ask for ``seconds`` more before a start/stop timeout."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def close(self) -> None:
        """Close the datagram socket (the notifier reopens it if used again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogGate:
    """Progress reports from the reconcile loop, consumed by :func:`run_pinger`.

    Contract (the loop is the only caller of :meth:`progress`):

    - Call :meth:`progress` whenever the loop demonstrably moves: after every tick (success *or*
      handled failure: a loop that fails but keeps cycling is alive; health is /healthz's job),
      after each wake-up from its idle wait, and inside long ticks (e.g. per page fetched).
    - The loop's idle wait must be at most :func:`run_pinger`'s interval, i.e. cap
      ``move_on_after(next_delay)`` at ``notifier.watchdog_interval_seconds()``, and each tick
      must report progress at least that often (so ``tick_timeout_seconds`` < ``WatchdogSec``
      unless the tick reports progress inside).
    - Never call it from a timer or from the HTTP server: that would hide a hung loop.

    Worst-case detection, with ``I = WatchdogSec / 2`` the ping interval: the loop reports
    progress and hangs right after a ping; the next ping still goes out on that report, then
    pings stop, and systemd aborts the service ``WatchdogSec`` after the last one::

        t:  0              I              2I             3I
            ping           ping           (withheld)     no ping for 2I = WatchdogSec: SIGABRT
            ^ progress, then the loop hangs                  -> Restart=on-failure

    So a hang is acted on at most ``3 x I = 1.5 x WatchdogSec`` after it starts.
    """

    def __init__(self) -> None:
        self._reported = 0
        self._consumed = 0

    def progress(self) -> None:
        """The loop made progress (cheap; safe to call often)."""
        self._reported += 1

    def consume(self) -> bool:
        """True when :meth:`progress` was called since the last ``consume()``."""
        moved = self._reported != self._consumed
        self._consumed = self._reported
        return moved

    @property
    def reports(self) -> int:
        """How many progress reports so far (for /status and tests)."""
        return self._reported


async def run_pinger(
    notifier: Notifier,
    gate: WatchdogGate,
    clock: Clock,
    *,
    interval_seconds: float | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every interval, but only if ``gate`` saw progress since the last ping.

    Runs until cancelled, as one task of the service's root task group. ``interval_seconds``
    defaults to ``notifier.watchdog_interval_seconds()``; returns at once when that is None (no
    watchdog configured or no socket). It checks the gate immediately on start, so a
    ``gate.progress()`` made when ``READY=1`` is sent is pinged without waiting an interval.
    Logs one WARNING when pings are withheld and one INFO when they resume.
    """
    interval = interval_seconds or notifier.watchdog_interval_seconds()
    if interval is None or not notifier.enabled:
        return
    withholding = False
    first = True
    while True:
        if gate.consume():
            notifier.watchdog()
            if withholding:
                withholding = False
                logger.info("reconcile loop made progress again; watchdog pings resumed")
        elif not withholding and not first:
            withholding = True
            logger.warning(
                "no reconcile-loop progress for %.0f s; withholding WATCHDOG=1", interval
            )
        first = False
        await clock.sleep(interval)


def _socket_address(value: str) -> str | None:
    """``NOTIFY_SOCKET`` as a ``sendto`` address: '@name' is abstract (leading NUL), else an
    absolute path. Anything else (empty, relative, vsock:...) disables notification."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        logger.debug("NOTIFY_SOCKET=%r is not supported; notifications disabled", value)
    return None


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` if positive and meant for ``pid`` (``WATCHDOG_PID`` absent or equal)."""
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    line = " ".join(text.split())
    if len(line) > STATUS_MAX_CHARS:
        line = line[: STATUS_MAX_CHARS - 1] + "…"
    return (f"STATUS={line}",)
