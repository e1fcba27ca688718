"""daemon.service with the in-process Coda emulator and SQLite: scheduling, triggers,
backoff, sd_notify, shutdown and cancellation.

Coda is the emulator behind `httpx.ASGITransport`; the control port is served over loopback
(port 0) only where READY=1 ordering is checked. Tests of timing in *virtual* time share one
`FakeClock` between the daemon and the emulator; tests of shutdown use the real clock with
short graces. Every test is bounded with `anyio.fail_after`.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from daemon import config as config_mod
from daemon import service as service_mod
from daemon.clock import Clock, FakeClock, SystemClock
from daemon.emulator import (
    DEFAULT_TOKEN,
    EmulatorConfig,
    EmulatorState,
    FaultRule,
    seed_participation,
)
from daemon.emulator import create_app as emulator_app
from daemon.errors import LockHeldError
from daemon.runtime import Runtime
from daemon.service import Service
from tests.harness import example_config_data

pytestmark = pytest.mark.anyio

TOKEN = "trigger-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MIRROR_TABLE = "Участие"  # the same Coda table, addressed by name: its own request paths


def make_settings(
    tmp_path: Path,
    *,
    db_url: str | None = None,
    mirror: bool = False,
    max_attempts: int = 2,
    **sync: Any,
) -> config_mod.Settings:
    """The example config on `db_url` (default: SQLite in tmp_path); `mirror` adds a second
    binding."""
    data = example_config_data(db_url or f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", **sync)
    data["coda"]["max_attempts"] = max_attempts
    data["control"] = {"port": 0, "trigger_token_env": "TRIGGER_TOKEN"}
    if mirror:
        second = dict(
            data["binding"][0],
            name="mirror",
            table_id=MIRROR_TABLE,
            local_table="participation_mirror",
        )
        data["binding"].append(second)
    env = {"CODA_API_TOKEN": DEFAULT_TOKEN, "TRIGGER_TOKEN": TOKEN}
    return config_mod.parse(data, source="test.toml", env=env)


def new_emulator(clock: Clock, rows: int = 20) -> EmulatorState:
    emu = EmulatorState(EmulatorConfig(), clock, random.Random(1))
    seed_participation(emu, rows, rng=random.Random(1))
    return emu


async def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll `predicate` until true; fail after `limit` seconds."""
    with anyio.fail_after(limit):
        while True:
            if predicate():
                return
            await anyio.sleep(0.005)


@asynccontextmanager
async def running(
    settings: config_mod.Settings, emu: EmulatorState, **kwargs: Any
) -> AsyncIterator[tuple[Service, list[int]]]:
    """service.run() in a task group; yields the Service (after READY) and its exit codes."""
    box: list[Service] = []
    codes: list[int] = []

    async def main() -> None:
        codes.append(
            await service_mod.run(
                settings,
                clock=emu.clock,
                environ=kwargs.pop("environ", {}),
                ready_callback=box.append,
                transport=httpx.ASGITransport(app=emulator_app(emu)),
                rng=random.Random(5),
                handle_signals=False,
                **kwargs,
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(main)
        await wait_for(lambda: bool(box) or bool(codes))
        assert box, f"service.run() returned {codes} before READY"
        yield box[0], codes
        box[0].request_stop()


def cycles(service: Service, name: str = "participation") -> int:
    return service.schedulers[name].status.cycles


# --------------------------------------------------------------------------- triggers


async def test_a_thousand_triggers_during_a_cycle_cause_one_follow_up(
    tmp_path: Path, db_url: str
) -> None:
    """1,000 triggers while a cycle runs -> exactly one more cycle (coalesced), full remembered;
    over HTTP at most 100/minute are accepted, the rest get 429, none 5xx."""
    emu = new_emulator(SystemClock())
    settings = make_settings(tmp_path, db_url=db_url, interval_seconds=3600)
    async with running(settings, emu) as (service, _):
        await wait_for(lambda: cycles(service) == 1)
        emu.faults.add(FaultRule("delay", delay_seconds=1.0, endpoint="listRows"))
        first = service.trigger("participation", full=False)
        assert not first.coalesced
        await wait_for(lambda: service.schedulers["participation"].status.running)
        joined = [service.trigger(None, full=(i == 500)) for i in range(1000)]
        # the first one queues the follow-up cycle; the other 999 join it
        assert not joined[0].coalesced and all(t.coalesced for t in joined[1:])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app), base_url="http://control"
        ) as http:
            answers: list[int] = []

            async def post() -> None:
                answers.append((await http.post("/sync", headers=AUTH)).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(post)
        assert set(answers) <= {202, 429} and answers.count(202) == 100
        assert cycles(service) == 1  # the slow cycle is still running
        await wait_for(lambda: cycles(service) == 3)
        await anyio.sleep(0.3)
        assert cycles(service) == 3  # the running one + ONE follow-up, nothing more
        assert "full scan" in (service.schedulers["participation"].status.last_summary or "")
        states = {(await service.run_info(t.run["run_id"]) or {}).get("state") for t in joined}
        assert states == {"succeeded"}


async def test_trigger_cuts_the_idle_wait_short(tmp_path: Path, db_url: str) -> None:
    """With an hour-long interval, a trigger starts a cycle at once."""
    emu = new_emulator(SystemClock())
    async with running(make_settings(tmp_path, db_url=db_url, interval_seconds=3600), emu) as (
        service,
        _,
    ):
        await wait_for(lambda: cycles(service) == 1)
        started = time.monotonic()
        service.trigger(None, full=False)
        await wait_for(lambda: cycles(service) == 2, limit=5)
        assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- backoff


async def test_failing_binding_backs_off_while_the_other_keeps_syncing(
    tmp_path: Path, db_url: str
) -> None:
    """5xx on one binding: delays 1,2,4,8 x interval capped at max_backoff; the other binding
    keeps its interval; once the fault clears the delay resets (virtual time)."""
    clock = FakeClock()
    emu = new_emulator(clock)
    emu.faults.add(FaultRule("http_error", status=503, count=None, path=MIRROR_TABLE))
    settings = make_settings(
        tmp_path, db_url=db_url, mirror=True, interval_seconds=10, jitter=0, max_backoff_seconds=80
    )
    async with running(settings, emu) as (service, codes):
        mirror = service.schedulers["mirror"]
        await wait_for(lambda: len(mirror.history) >= 5)
        assert mirror.history[:5] == [
            ("failure", 10),
            ("failure", 20),
            ("failure", 40),
            ("failure", 80),
            ("failure", 80),
        ]
        assert mirror.status.state == "backoff"
        assert mirror.status.last_error is not None
        assert mirror.status.last_error["class"] == "CodaServerError"
        ok = service.schedulers["participation"]
        await wait_for(lambda: cycles(service) >= 5)
        assert set(ok.history) == {("success", 10)}
        reasons = service.readiness().reasons
        assert any(r.startswith("mirror: no successful cycle") for r in reasons)
        assert service.health().ok
        emu.faults.clear()
        await wait_for(lambda: mirror.history[-1][0] == "success")
        assert mirror.history[-1] == ("success", 10)
        assert mirror.status.consecutive_failures == 0 and mirror.status.last_error is None
        failures = service.metrics.registry.get_sample_value(
            "coda_sync_cycles_total", {"binding": "mirror", "outcome": "failure"}
        )
        assert failures is not None and failures >= 5
        assert codes == []


async def test_retry_after_is_a_floor_for_the_next_cycle(tmp_path: Path, db_url: str) -> None:
    """A 429 with Retry-After 300 s -> the next cycle waits 300 s, above max_backoff."""
    clock = FakeClock()
    emu = new_emulator(clock)
    # NB: 300 s is beyond the client's retry budget, so the first attempt's 429 fails the cycle
    emu.faults.add(FaultRule("rate_limit", retry_after_seconds=300, count=1, path=MIRROR_TABLE))
    settings = make_settings(
        tmp_path, db_url=db_url, mirror=True, interval_seconds=10, jitter=0, max_backoff_seconds=80
    )
    async with running(settings, emu) as (service, _):
        mirror = service.schedulers["mirror"]
        await wait_for(lambda: len(mirror.history) >= 2)
        assert mirror.history[0] == ("failure", 300)
        assert mirror.history[1][0] == "success"


async def test_auth_failure_marks_the_binding_and_retries_at_max_backoff(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """401 on one binding -> 'failed: auth', loud log, metric, status, readiness reason; it
    retries at max_backoff; the other binding is unaffected."""
    clock = FakeClock()
    emu = new_emulator(clock)
    emu.faults.add(FaultRule("http_error", status=401, count=None, path=MIRROR_TABLE))
    settings = make_settings(
        tmp_path, db_url=db_url, mirror=True, interval_seconds=10, jitter=0, max_backoff_seconds=80
    )
    async with running(settings, emu) as (service, _):
        mirror = service.schedulers["mirror"]
        await wait_for(lambda: len(mirror.history) >= 3)
        assert mirror.history[:3] == [("failure", 80)] * 3
        assert mirror.status.state == "failed: auth"
        assert (
            service.metrics.registry.get_sample_value(
                "coda_sync_auth_failed", {"binding": "mirror"}
            )
            == 1
        )
        assert any(r.startswith("mirror: failed: auth") for r in service.readiness().reasons)
        assert "mirror: FAILED: auth" in service.status_line()
        assert "Coda refused the API token" in caplog.text
        assert DEFAULT_TOKEN not in caplog.text
        ok = service.schedulers["participation"].status
        await wait_for(lambda: ok.last_result == "success")
        assert ok.state == "ok" and not ok.auth_failed


# --------------------------------------------------------------------------- lifecycle


async def test_ready_only_after_the_port_is_bound_then_status_and_stopping(
    tmp_path: Path,
    db_url: str,
) -> None:
    """READY=1 arrives when the control port already answers; STATUS= after a cycle;
    STOPPING=1 on stop."""
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.setblocking(False)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    emu = new_emulator(SystemClock())
    settings = make_settings(tmp_path, db_url=db_url, interval_seconds=3600)
    box: list[Service] = []
    codes: list[int] = []
    bound_at_ready: list[bool] = []

    def ready(service: Service) -> None:
        box.append(service)
        assert any("READY=1" in m for m in drain())
        assert service.control_url is not None
        host, port = service.control_url.removeprefix("http://").rsplit(":", 1)
        # the listening socket accepts (kernel backlog) even before the loop serves it
        socket.create_connection((host, int(port)), timeout=1).close()
        bound_at_ready.append(True)

    async def main() -> None:
        codes.append(
            await service_mod.run(
                settings,
                clock=SystemClock(),
                environ={"NOTIFY_SOCKET": sock_path},
                ready_callback=ready,
                transport=httpx.ASGITransport(app=emulator_app(emu)),
                handle_signals=False,
            )
        )

    with anyio.fail_after(10), sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(main)
            await wait_for(lambda: bool(box) and cycles(box[0]) == 1)
            await wait_for(lambda: any("participation: ok" in m for m in drain()))
            box[0].request_stop()
        drain()
    assert bound_at_ready == [True]
    assert codes == [0]
    status = next(m for m in messages if "participation: ok" in m)
    assert "0 pending; next in" in status
    assert any(m.startswith("STOPPING=1") for m in messages)


async def test_stop_lets_a_running_cycle_finish_within_the_grace(
    tmp_path: Path, db_url: str
) -> None:
    """A stop during a short cycle waits for it: the run succeeds, exit code 0."""
    emu = new_emulator(SystemClock())
    settings = make_settings(tmp_path, db_url=db_url, interval_seconds=3600, stop_grace_seconds=5)
    async with running(settings, emu) as (service, codes):
        await wait_for(lambda: cycles(service) == 1)
        emu.faults.add(FaultRule("delay", delay_seconds=0.5, endpoint="listRows"))
        run = service.trigger(None, full=False).run
        await wait_for(lambda: service.schedulers["participation"].status.running)
        started = time.monotonic()
        service.request_stop()
        await wait_for(lambda: codes == [0])
        assert time.monotonic() - started < 3
    info = await service.run_info(run["run_id"])
    assert info is not None and info["state"] == "succeeded"


async def test_stop_cancels_a_cycle_that_outlives_the_grace(tmp_path: Path, db_url: str) -> None:
    """A cycle stuck on Coda is cancelled when the grace ends: exit 0 quickly, the run is
    failed, the cycle counted as abandoned, and the run record saved for after a restart."""
    emu = new_emulator(SystemClock())
    settings = make_settings(tmp_path, db_url=db_url, interval_seconds=3600, stop_grace_seconds=0.3)
    async with running(settings, emu) as (service, codes):
        await wait_for(lambda: cycles(service) == 1)
        emu.faults.add(FaultRule("delay", delay_seconds=60, endpoint="listRows"))
        run_id = service.trigger(None, full=False).run["run_id"]
        await wait_for(lambda: service.schedulers["participation"].status.running)
        started = time.monotonic()
        service.request_stop()
        await wait_for(lambda: codes == [0], limit=5)
        assert time.monotonic() - started < 2
        assert (
            service.metrics.registry.get_sample_value(
                "coda_sync_cycles_total", {"binding": "participation", "outcome": "abandoned"}
            )
            == 1
        )
    emu.faults.clear()
    async with Runtime(settings, transport=httpx.ASGITransport(app=emulator_app(emu))) as rt:
        async with rt.store.connect() as conn:
            record = await rt.engines["participation"].repo.get_run(conn, run_id)
    assert record is not None and record.state == "failed"
    assert record.error is not None and "stopped" in record.error


async def test_cancellation_is_not_swallowed(tmp_path: Path, db_url: str) -> None:
    """Cancelling run() from outside while a cycle waits on Coda ends it promptly."""
    emu = new_emulator(SystemClock())
    emu.faults.add(FaultRule("delay", delay_seconds=60, endpoint="listRows"))
    settings = make_settings(tmp_path, db_url=db_url, interval_seconds=3600)
    started = time.monotonic()
    with anyio.fail_after(5), anyio.move_on_after(0.5) as scope:
        await service_mod.run(
            settings,
            environ={},
            transport=httpx.ASGITransport(app=emulator_app(emu)),
            handle_signals=False,
        )
    assert scope.cancelled_caught
    assert time.monotonic() - started < 3


async def test_run_once_takes_the_lock(tmp_path: Path, db_url: str) -> None:
    """run_once syncs each binding once; while another Runtime holds the lock it refuses."""
    emu = new_emulator(SystemClock(), rows=7)
    settings = make_settings(tmp_path, db_url=db_url)
    transport = httpx.ASGITransport(app=emulator_app(emu))
    results = await service_mod.run_once(settings, transport=transport, full=True)
    assert [r.binding for r in results] == ["participation"]
    assert results[0].stats["pulled_inserts"] == 7
    async with Runtime(settings, transport=transport) as holder:
        assert await holder.leadership.holds("participation")  # PostgreSQL: takes the lock
        with pytest.raises(LockHeldError):
            await service_mod.run_once(settings, transport=transport)
    dry = await service_mod.run_once(
        settings, transport=transport, binding="participation", dry_run=True
    )
    assert dry[0].dry_run and dry[0].writes == 0
