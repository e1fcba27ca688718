"""Acceptance: two `coda-sync run` processes on one PostgreSQL never sync a binding at once.

Real processes over loopback: one `coda-sync emulator`, two daemons with the same config
(PostgreSQL, interval 2 s, lease 9 s) but different API tokens (A: `--token` of the
emulator; B: the emulator's default token, which it always accepts), so the emulator's
request log tells them apart. For CODA_SYNC_HA_SECONDS (default 120) a person edits Coda
and the application edits its table (updates, inserts, a few deletes); at 1/3 and 2/3 of
the time the leader is SIGKILLed, the handover is timed (kill -> first request of the other
token) and the killed instance is started again (it stands by). Then:

    * requests (reads and writes) of the two tokens never interleave: the log is one block
      per leadership term, each new term starting after a kill, and the killed token never
      appears again within the next term; a standby makes no Coda request at all
    * each handover is shorter than the lease
    * the end state converges: Coda's true rows equal the PostgreSQL table, no duplicates

Skipped without CODA_SYNC_TEST_PG_URL. Every wait is bounded; processes are killed at the end.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from daemon import config as config_mod
from daemon.emulator import DEFAULT_TOKEN
from daemon.store.bound import BoundTable
from daemon.store.db import Store, open_store
from tests.harness import sample_local_values
from tests.processes import EMULATOR_URL, Proc, emulator_args, example_config, wait_until

HA_SECONDS = float(os.environ.get("CODA_SYNC_HA_SECONDS", "120"))
LEASE_SECONDS = 9.0
TOKENS = {"A": "ha-instance-a-token", "B": DEFAULT_TOKEN}
TABLE = "grid-PaRtc1pnt"
KEY_COLUMN = "c-SyncKey01"
COMMENT, HOURS = "c-Comment01", "c-Hours0001"
SEED_ROWS = 40

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(HA_SECONDS + 300),
]


def token_hash(token: str) -> str:
    """As the emulator logs it (daemon.emulator.app.token_hash)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class Instance:
    """One `coda-sync run` process with its own API token."""

    def __init__(self, name: str, config: Path) -> None:
        self.name = name
        self.token = TOKENS[name]
        self.hash = token_hash(self.token)
        self.config = config
        self.proc: Proc | None = None
        self.control: httpx.Client | None = None

    def start(self) -> None:
        env = {**os.environ, "CODA_API_TOKEN": self.token}
        self.proc = Proc.coda_sync("run", "--config", str(self.config), env=env)
        url = self.proc.wait_line(r"control port listening on (http://\S+)").group(1)
        if self.control is not None:
            self.control.close()
        self.control = httpx.Client(base_url=url, trust_env=False, timeout=10)

    def status(self) -> dict[str, Any]:
        assert self.control is not None
        try:
            body: dict[str, Any] = self.control.get("/status").json()
        except httpx.HTTPError:
            return {}
        return body

    def role(self) -> str | None:
        binding = self.status().get("bindings", {}).get("participation", {})
        role: str | None = binding.get("role")
        return role

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.popen.poll() is None:
            self.proc.popen.send_signal(signal.SIGTERM)
            try:
                return self.proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.popen.returncode

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        if self.control is not None:
            self.control.close()


class HaWorld:
    """The emulator process, the PostgreSQL database, two instances, and the edits."""

    def __init__(self, tmp_path: Path, pg_url: str) -> None:
        self.pg_url = pg_url
        self.rng = random.Random(20261126)
        args = emulator_args(
            seed_rows=SEED_ROWS, token=TOKENS["A"], read_lag="0.5", apply_delay="0.5"
        )
        self.emulator = Proc([sys.executable, "-m", "daemon", *args])
        api_url = self.emulator.wait_line(EMULATOR_URL).group(1)
        self.emu = httpx.Client(
            base_url=api_url.removesuffix("/apis/v1"), trust_env=False, timeout=10
        )
        config = tmp_path / "coda-sync.toml"
        config.write_text(self._config_text(api_url), encoding="utf-8")
        self.settings = config_mod.load(config, env={"CODA_API_TOKEN": "unused"})
        self.instances = {name: Instance(name, config) for name in TOKENS}
        self.log: list[dict[str, Any]] = []
        self.edits = 0

    def _config_text(self, api_url: str) -> str:
        return example_config(
            {
                'api_base_url = "https://coda.io/apis/v1"': f'api_base_url = "{api_url}"',
                'url = "sqlite+aiosqlite:///coda-sync.db"': f'url = "{self.pg_url}"\n'
                f"lease_seconds = {LEASE_SECONDS}",
                "interval_seconds = 30": "interval_seconds = 2\nstop_grace_seconds = 2",
                "full_resync_seconds = 3600": "full_resync_seconds = 20",
                "port = 8787": "port = 0",
                'format = "auto"': 'format = "json"',
            }
        )

    def close(self) -> None:
        for instance in self.instances.values():
            instance.close()
        self.emulator.kill()
        self.emu.close()

    # ------------------------------------------------------------------ the request log

    def fetch_log(self) -> list[dict[str, Any]]:
        """New request-log entries since the last call (kept in `self.log`)."""
        since = self.log[-1]["seq"] if self.log else 0
        fresh: list[dict[str, Any]] = []
        while True:
            page = self.emu.get("/_emulator/requests", params={"since": since, "limit": 5000})
            items: list[dict[str, Any]] = page.json()["items"]
            if not items:
                break
            fresh.extend(items)
            since = items[-1]["seq"]
        self.log.extend(fresh)
        return fresh

    # ------------------------------------------------------------------ Coda (a person)

    def coda_rows(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.emu.get(f"/_emulator/tables/{TABLE}/rows").json()[
            "items"
        ]
        return items

    def person_edit(self) -> None:
        rows = self.coda_rows()
        roll = self.rng.random()
        if roll < 0.12:
            values = {"c-Activity1": "HA", COMMENT: f"P-new-{self.edits}", HOURS: 1}
            self.emu.post(f"/_emulator/tables/{TABLE}/rows", json={"values": values})
        elif roll < 0.17 and len(rows) > SEED_ROWS - 5:
            row = self.rng.choice(rows)
            self.emu.delete(f"/_emulator/tables/{TABLE}/rows/{row['id']}")
        elif rows:
            row = self.rng.choice(rows)
            values = {COMMENT: f"P-{self.edits}", HOURS: self.rng.choice([1, 2.5, 4])}
            self.emu.patch(f"/_emulator/tables/{TABLE}/rows/{row['id']}", json={"values": values})
        self.edits += 1

    # ------------------------------------------------------------------ PostgreSQL (the app)

    async def app_edit(self, store: Store) -> None:
        bound = BoundTable(self.settings.bindings[0])
        async with store.begin() as conn:
            keys = [str(k) for (k,) in await conn.execute(sa.text("SELECT id FROM participation"))]
            roll = self.rng.random()
            now = datetime.now(UTC)
            if roll < 0.12 or not keys:
                values = sample_local_values(self.rng) | {"comment": f"A-new-{self.edits}"}
                await bound.upsert_rows(conn, [(str(uuid.uuid4()), values)], updated_at=now)
            elif roll < 0.17 and len(keys) > SEED_ROWS - 5:
                await bound.delete_rows(conn, [self.rng.choice(keys)])
            else:
                key = self.rng.choice(keys)
                values = (await bound.get_rows(conn, [key]))[key].values
                values |= {"comment": f"A-{self.edits}", "hours": self.rng.choice([3.0, 5.5])}
                await bound.upsert_rows(conn, [(key, values)], updated_at=now)
        self.edits += 1

    async def local_rows(self, store: Store) -> dict[str, tuple[Any, Any]]:
        async with store.connect() as conn:
            rows = await conn.execute(sa.text("SELECT id, comment, hours FROM participation"))
            return {str(k): (c or None, None if h is None else float(h)) for k, c, h in rows}


@pytest.fixture
def ha(tmp_path: Path, pg_url: str) -> Iterator[HaWorld]:
    world = HaWorld(tmp_path, pg_url)
    try:
        yield world
    finally:
        world.close()


def _leader(ha: HaWorld) -> Instance:
    leaders = [i for i in ha.instances.values() if i.role() == "leader"]
    assert len(leaders) == 1, [(i.name, i.role()) for i in ha.instances.values()]
    return leaders[0]


def _coda_state(ha: HaWorld) -> dict[str, tuple[Any, Any]] | None:
    """Key -> (comment, hours) of Coda's true rows; None while a row has no key yet."""
    out: dict[str, tuple[Any, Any]] = {}
    for row in ha.coda_rows():
        key = row["values"].get(KEY_COLUMN) or ""
        if not key:
            return None
        assert key not in out, f"duplicate key {key} in Coda"
        hours = row["values"].get(HOURS)
        out[key] = (row["values"].get(COMMENT) or None, None if hours is None else float(hours))
    return out


def _terms(log: list[dict[str, Any]], hashes: set[str]) -> list[tuple[str, int, int]]:
    """The log as blocks of one token: (token hash, first seq, last seq)."""
    terms: list[tuple[str, int, int]] = []
    for entry in log:
        token = entry["tokenHash"]
        assert token in hashes, f"a request with an unknown token: {entry}"
        if terms and terms[-1][0] == token:
            terms[-1] = (token, terms[-1][1], entry["seq"])
        else:
            terms.append((token, entry["seq"], entry["seq"]))
    return terms


async def test_two_instances_one_postgres_no_double_sync(ha: HaWorld) -> None:
    a, b = ha.instances["A"], ha.instances["B"]
    a.start()
    b.start()
    await anyio.to_thread.run_sync(
        lambda: wait_until(
            lambda: sorted(str(i.role()) for i in (a, b)) == ["leader", "standby"],
            30,
            "one leader and one standby",
        )
    )
    standby = b if a.role() == "leader" else a
    assert standby.control is not None
    ready = standby.control.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "role": "standby"})

    store = await open_store(ha.pg_url, migrate=False)
    try:
        with anyio.fail_after(60):
            while True:  # the first pull
                if len(await ha.local_rows(store)) >= SEED_ROWS:
                    break
                await anyio.sleep(0.2)
        kills_at = [HA_SECONDS / 3, 2 * HA_SECONDS / 3]
        kills: list[dict[str, Any]] = []
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < HA_SECONDS:
            if kills_at and elapsed >= kills_at[0]:
                kills_at.pop(0)
                kills.append(await _kill_leader(ha))
            if ha.rng.random() < 0.5:
                ha.person_edit()
            else:
                await ha.app_edit(store)
            await anyio.sleep(0.25)
        print(f"{ha.edits} edits in {HA_SECONDS:.0f} s; handovers: ", end="")
        print(", ".join(f"{k['handover']:.2f} s" for k in kills))

        # ---------------------------------------------------------------- convergence
        leader = _leader(ha)
        assert leader.control is not None
        deadline = time.monotonic() + 90
        coda: dict[str, tuple[Any, Any]] | None = None
        local: dict[str, tuple[Any, Any]] = {}
        while time.monotonic() < deadline:
            leader.control.post("/sync", json={"binding": "participation", "full": True})
            await anyio.sleep(3)
            coda, local = _coda_state(ha), await ha.local_rows(store)
            pending = leader.status()["bindings"]["participation"]["pending_mutations"]
            if coda == local and pending == 0:
                break
        assert coda is not None, "rows created in Coda never got a key"
        only_coda, only_local = set(coda) - set(local), set(local) - set(coda)
        assert not only_coda and not only_local, (sorted(only_coda)[:5], sorted(only_local)[:5])
        differ = {k: (coda[k], local[k]) for k in coda if coda[k] != local[k]}
        assert not differ, list(differ.items())[:5]
        print(f"converged: {len(coda)} rows on both sides, no duplicates")
    finally:
        await store.close()

    # -------------------------------------------------------------------- the request log
    ha.fetch_log()
    terms = _terms(ha.log, {a.hash, b.hash})
    names = {a.hash: "A", b.hash: "B"}
    print("terms (token, first seq, last seq):", [(names[t], f, last) for t, f, last in terms])
    assert len(terms) == len(kills) + 1, terms
    for kill, (old, new) in zip(kills, zip(terms, terms[1:], strict=False), strict=True):
        assert old[0] == kill["killed"] and new[0] == kill["successor"]
        assert new[1] > kill["seq_at_kill"], (kill, new)  # the new term began after the kill
    writes = [e for e in ha.log if e["access"] == "write"]
    assert len(_terms(writes, {a.hash, b.hash})) <= len(kills) + 1
    for kill in kills:
        assert kill["handover"] < LEASE_SECONDS, kill
    assert a.stop() == 0 and b.stop() == 0


async def _kill_leader(ha: HaWorld) -> dict[str, Any]:
    """SIGKILL the leader; time until the other instance's first Coda request; restart."""
    leader = _leader(ha)
    other = next(i for i in ha.instances.values() if i is not leader)
    ha.fetch_log()
    seq_at_kill = ha.log[-1]["seq"] if ha.log else 0
    killed_at = time.monotonic()
    leader.kill()
    handover: float | None = None
    with anyio.fail_after(LEASE_SECONDS * 3):
        while handover is None:
            if any(e["tokenHash"] == other.hash for e in ha.fetch_log()):
                handover = time.monotonic() - killed_at
            else:
                await anyio.sleep(0.05)
    print(f"killed {leader.name} (the leader): {other.name} synced after {handover:.2f} s")
    await anyio.to_thread.run_sync(leader.start)  # back as a standby
    await anyio.to_thread.run_sync(
        lambda: wait_until(lambda: leader.role() == "standby", 30, "the restarted standby")
    )
    return {
        "killed": leader.hash,
        "successor": other.hash,
        "seq_at_kill": seq_at_kill,
        "handover": handover,
    }
