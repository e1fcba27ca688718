"""Leadership per binding: a process that lost it writes nothing more; standbys take over.

engine   `leader_check` flips to False mid-push (SQLite and PostgreSQL): the cycle ends
         with LeadershipLost; no further Coda write, no further commit
engine   the real PgLeader's session is terminated by the server (PostgreSQL)
service  two instances on one PostgreSQL: one leader, one standby (ready, role standby);
         the leader stops -> the standby leads within the lease
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from daemon import config as config_mod
from daemon import service as service_mod
from daemon.clock import SystemClock
from daemon.emulator import DEFAULT_TOKEN, EmulatorConfig, EmulatorState, seed_participation
from daemon.emulator import create_app as emulator_app
from daemon.engine import Engine
from daemon.errors import LeadershipLost
from daemon.leadership import PgLeadership
from daemon.service import Service
from tests.harness import World, example_config_data, world

pytestmark = pytest.mark.anyio


async def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    with anyio.fail_after(limit):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


async def _snapshot(w: World) -> tuple[Any, ...]:
    """What a cycle commits: mutations, row states, binding state, the local table."""
    async with w.store.connect() as conn:
        counts = [
            (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar()
            for table in ("coda_sync_mutations", "coda_sync_row_state", "participation")
        ]
        sent = await conn.execute(
            sa.text("SELECT count(*) FROM coda_sync_mutations WHERE request_id IS NOT NULL")
        )
        state = await conn.execute(sa.text("SELECT * FROM coda_sync_binding_state"))
        return (*counts, sent.scalar(), [tuple(r) for r in state])


def _engine(w: World, leader_check: Callable[[], Awaitable[bool]]) -> Engine:
    return Engine(
        settings=w.settings,
        binding=w.binding,
        client=w.client,
        store=w.store,
        clock=w.clock,
        rng=random.Random(3),
        leader_check=leader_check,
    )


async def test_engine_stops_at_once_when_leadership_is_lost(tmp_path: Path, db_url: str) -> None:
    """500 local rows go out in batches of 100; the check fails after the 2nd batch was sent:
    the cycle raises LeadershipLost, and nothing more is sent or committed."""
    async with world(tmp_path, db_url=db_url, seed_rows=5) as w:
        await w.converge(2)
        await w.app_insert_many(500)
        lost: list[tuple[int, tuple[Any, ...]]] = []
        calls_after_loss = 0

        async def leader_check() -> bool:
            nonlocal calls_after_loss
            if lost:
                calls_after_loss += 1
                return False
            if w.client.stats.count("write") >= 2:
                lost.append((w.client.stats.count("write"), await _snapshot(w)))
                return False
            return True

        engine = _engine(w, leader_check)
        w.clock.advance(w.settings.sync.interval_seconds)
        with pytest.raises(LeadershipLost):
            await engine.cycle()
        assert lost, "the check never failed"
        writes_at_loss, committed_at_loss = lost[0]
        assert writes_at_loss == 2
        assert w.client.stats.count("write") == 2  # no Coda write after the loss
        assert await _snapshot(w) == committed_at_loss  # no commit after the loss
        assert calls_after_loss == 0  # it stopped at the first "no"
        # another leader (here: the plain engine) continues from the shared state
        await w.converge(4)
        coda = await w.assert_converged()
        assert len(coda) == 505


@pytest.mark.postgres
async def test_terminated_lock_session_stops_the_engine(tmp_path: Path, pg_url: str) -> None:
    """The server ends the advisory-lock session (as after a lost connection): the next check
    fails, the push is not sent, and the lock is free for another instance."""
    async with world(tmp_path, db_url=pg_url, seed_rows=5) as w:
        await w.converge(2)
        ours = PgLeadership(pg_url, [w.binding.name], lease_seconds=6)
        other = PgLeadership(pg_url, [w.binding.name], lease_seconds=6)
        try:
            assert await ours.holds(w.binding.name)
            assert not await other.holds(w.binding.name)
            assert ours.role(w.binding.name) == "leader"
            assert other.role(w.binding.name) == "standby"
            engine = _engine(w, ours.checker(w.binding.name))
            await w.app_insert_many(3)
            async with w.store.begin() as conn:
                await conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'coda-sync leader%' "
                        "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
                    )
                )
            writes = w.client.stats.count("write")
            w.clock.advance(w.settings.sync.interval_seconds)
            with pytest.raises(LeadershipLost):
                await engine.cycle()
            assert w.client.stats.count("write") == writes
            assert ours.role(w.binding.name) == "standby"
            with anyio.fail_after(10):
                while True:  # the server freed the lock with the session
                    if await other.holds(w.binding.name):
                        break
                    await anyio.sleep(0.1)
        finally:
            await ours.release()
            await other.release()


@pytest.mark.postgres
async def test_two_instances_one_leader_then_takeover(tmp_path: Path, pg_url: str) -> None:
    """Two services on one PostgreSQL: one syncs, the other stands by (ready, 200, role
    standby; /status shows the role per binding). The leader stops: the standby leads
    within the lease (here 3 s: it retries every second)."""
    emu = EmulatorState(EmulatorConfig(), SystemClock(), random.Random(1))
    seed_participation(emu, 10, rng=random.Random(1))
    data = example_config_data(pg_url, interval_seconds=0.5, jitter=0)
    data["database"]["lease_seconds"] = 3
    data["control"] = {"port": 0}
    settings = config_mod.parse(data, source="t.toml", env={"CODA_API_TOKEN": DEFAULT_TOKEN})
    services: list[Service] = []
    codes: list[int] = []

    async def instance(seed: int) -> None:
        codes.append(
            await service_mod.run(
                settings,
                clock=SystemClock(),
                environ={},
                ready_callback=services.append,
                transport=httpx.ASGITransport(app=emulator_app(emu)),
                rng=random.Random(seed),
                handle_signals=False,
            )
        )

    def roles() -> list[str | None]:
        return [s.schedulers["participation"].status.role for s in services]

    async def readyz(service: Service) -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:
            return await http.get("/readyz")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(instance, 1)
            tg.start_soon(instance, 2)
            await wait_for(lambda: len(services) == 2 and None not in roles(), limit=20)
            assert sorted(roles(), key=str) == ["leader", "standby"]
            leader = services[roles().index("leader")]
            standby = services[roles().index("standby")]
            await wait_for(lambda: leader.readiness().ok, limit=20)
            r = await readyz(standby)
            assert (r.status_code, r.json()) == (200, {"ready": True, "role": "standby"})
            r = await readyz(leader)
            assert (r.status_code, r.json()) == (200, {"ready": True, "role": "leader"})
            assert standby.status()["bindings"]["participation"]["role"] == "standby"
            assert standby.status()["role"] == "standby"
            assert standby.schedulers["participation"].status.cycles == 0  # never synced
            leader.request_stop()
            stopped = time.monotonic()
            await wait_for(lambda: codes == [0], limit=10)
            await wait_for(
                lambda: standby.schedulers["participation"].status.last_result == "success",
                limit=10,
            )
            handover = time.monotonic() - stopped
            print(f"handover after a clean stop: {handover:.2f} s")
            assert handover < settings.database.lease_seconds
            r = await readyz(standby)
            assert (r.status_code, r.json()) == (200, {"ready": True, "role": "leader"})
            standby.request_stop()
    assert codes == [0, 0]
