"""daemon.systemd: sd_notify datagrams on real AF_UNIX sockets, and the progress-gated watchdog."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import anyio
import pytest

from daemon.systemd import STATUS_MAX_CHARS, Notifier, WatchdogGate, run_pinger


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket on the filesystem, as systemd creates for NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1.0)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in the abstract namespace, named '@...' in NOTIFY_SOCKET."""
    name = f"coda-sync-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1.0)
    yield sock, "@" + name
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, decoded (non-blocking once the first has arrived)."""
    out = [sock.recv(4096).decode()]
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(1.0)


def nothing_received(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(1.0)
    return False


def test_filesystem_socket_receives_each_message(notify_socket: tuple[socket.socket, str]) -> None:
    """READY=1, STATUS=..., STOPPING=1, WATCHDOG=1 arrive as separate datagrams on a path."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("syncing 3 tables")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert received(sock) == ["READY=1", "STATUS=syncing 3 tables", "WATCHDOG=1", "STOPPING=1"]
    notifier.close()


def test_abstract_socket_receives_messages(abstract_socket: tuple[socket.socket, str]) -> None:
    """'@name' in NOTIFY_SOCKET addresses the abstract namespace."""
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.ready("up")
    assert notifier.watchdog()
    assert received(sock) == ["READY=1\nSTATUS=up", "WATCHDOG=1"]


def test_notify_sends_several_assignments_in_one_datagram(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """notify() joins assignments with newlines into a single datagram."""
    sock, path = notify_socket
    Notifier({"NOTIFY_SOCKET": path}).notify("READY=1", "STATUS=ok", "MAINPID=42")
    assert received(sock) == ["READY=1\nSTATUS=ok\nMAINPID=42"]


def test_status_is_one_capped_line(notify_socket: tuple[socket.socket, str]) -> None:
    """STATUS folds newlines into spaces and is capped at STATUS_MAX_CHARS characters."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.status("line one\nline two\r\n")
    notifier.status("x" * 1000)
    short, long = received(sock)
    assert short == "STATUS=line one line two"
    assert long.startswith("STATUS=x")
    assert len(long) == len("STATUS=") + STATUS_MAX_CHARS


def test_reloading_and_extend_timeout(notify_socket: tuple[socket.socket, str]) -> None:
    """RELOADING=1 carries MONOTONIC_USEC; EXTEND_TIMEOUT_USEC is in microseconds."""
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.reloading(123456)
    notifier.extend_timeout(2.5)
    assert received(sock) == ["RELOADING=1\nMONOTONIC_USEC=123456", "EXTEND_TIMEOUT_USEC=2500000"]


def test_invalid_assignment_is_a_programming_error(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """An assignment without '=' or spanning lines is refused before anything is sent."""
    _, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    with pytest.raises(ValueError, match="KEY=value"):
        notifier.notify("READY")
    with pytest.raises(ValueError, match="KEY=value"):
        notifier.notify("STATUS=a\nREADY=1")


@pytest.mark.parametrize("value", [None, "", "relative/path.sock", "@", "vsock:2:1234"])
def test_without_usable_socket_everything_is_a_no_op(value: str | None) -> None:
    """No (usable) NOTIFY_SOCKET: disabled, every call returns False and raises nothing."""
    environ = {} if value is None else {"NOTIFY_SOCKET": value}
    notifier = Notifier(environ)
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.stopping()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.notify("READY=1")
    notifier.close()


def test_send_errors_are_logged_once_at_debug_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket path nobody listens on makes sends fail quietly: False, one DEBUG record."""
    caplog.set_level(logging.DEBUG, logger="daemon.systemd")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    records = [r for r in caplog.records if r.name == "daemon.systemd"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(
    environ: dict[str, str], expected: float | None
) -> None:
    """Half of WATCHDOG_USEC in seconds, only when WATCHDOG_PID is absent or ours."""
    notifier = Notifier({"NOTIFY_SOCKET": "/run/x", **environ}, pid=4242)
    assert notifier.watchdog_interval_seconds() == expected


def test_watchdog_pid_defaults_to_this_process() -> None:
    """Without an injected pid, WATCHDOG_PID is compared with os.getpid()."""
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ).watchdog_interval_seconds() == 1.0


def test_gate_reports_progress_once() -> None:
    """consume() is True once per batch of progress() calls, then False until the next."""
    gate = WatchdogGate()
    assert not gate.consume()
    gate.progress()
    gate.progress()
    assert gate.consume()
    assert not gate.consume()
    assert gate.reports == 2


class StepClock:
    """A clock whose sleep() returns only when the test calls step()."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.asleep = anyio.Event()
        self._t = 0.0
        self._permits_tx, self._permits_rx = anyio.create_memory_object_stream[None]()

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return datetime(2026, 1, 5, tzinfo=UTC)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.asleep.set()
        await self._permits_rx.receive()
        self._t += seconds

    async def step(self) -> None:
        """Let the pending sleep finish, and wait until the pinger sleeps again."""
        self.asleep = anyio.Event()
        await self._permits_tx.send(None)
        await self.asleep.wait()

    def close(self) -> None:
        self._permits_tx.close()
        self._permits_rx.close()


@pytest.mark.anyio
async def test_pinger_pings_only_after_progress(
    notify_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    """WATCHDOG=1 goes out once per interval with progress, never for a silent (hung) loop."""
    caplog.set_level(logging.INFO, logger="daemon.systemd")
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    gate = WatchdogGate()
    clock = StepClock()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            gate.progress()  # READY=1 time: the first check pings at once
            tg.start_soon(run_pinger, notifier, gate, clock)
            await clock.asleep.wait()
            assert received(sock) == ["WATCHDOG=1"]

            for _ in range(3):  # a hung loop: no progress, no pings
                await clock.step()
            assert nothing_received(sock)

            gate.progress()
            await clock.step()
            assert received(sock) == ["WATCHDOG=1"]
            tg.cancel_scope.cancel()
    clock.close()
    assert clock.sleeps == [5.0] * 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1  # one transition into "withholding", not one per interval
    assert len(infos) == 1 and "resumed" in infos[0].getMessage()


@pytest.mark.anyio
async def test_pinger_without_watchdog_returns_at_once(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """No WATCHDOG_USEC (or no socket): run_pinger returns instead of running forever."""
    _, path = notify_socket
    clock = StepClock()
    with anyio.fail_after(1):
        await run_pinger(Notifier({"NOTIFY_SOCKET": path}), WatchdogGate(), clock)
        await run_pinger(Notifier({"WATCHDOG_USEC": "1000000"}), WatchdogGate(), clock)
    assert clock.sleeps == []
    clock.close()


@pytest.mark.anyio
async def test_pinger_interval_can_be_overridden(notify_socket: tuple[socket.socket, str]) -> None:
    """interval_seconds replaces the WATCHDOG_USEC-derived interval."""
    _, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    clock = StepClock()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                partial(run_pinger, notifier, WatchdogGate(), clock, interval_seconds=1.5)
            )
            await clock.asleep.wait()
            tg.cancel_scope.cancel()
    clock.close()
    assert clock.sleeps == [1.5]
