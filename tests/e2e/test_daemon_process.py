"""The daemon as real processes over loopback: `coda-sync emulator` + `coda-sync run`.

Black-box (TESTING 10.2, T2): the CLI's emulator serves Coda on 127.0.0.1 (port 0), the daemon
runs from a temporary config (SQLite, a trigger token, control port 0) and is driven only
through HTTP, signals and the SQLite file. Interfaces relied on:

    emulator stdout   "emulator listening on http://127.0.0.1:PORT/apis/v1"
    daemon stderr     "control port listening on http://127.0.0.1:PORT"
    emulator control  /_emulator/tables/{table}/rows (GET, PATCH .../{row}), /_emulator/faults

Every wait is bounded; the processes are killed on teardown whatever happens.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import config as config_mod
from daemon.store.bound import BoundTable
from daemon.store.db import open_store
from tests.harness import sample_local_values
from tests.processes import EMULATOR_URL, Proc, emulator_args, example_config, wait_until

API_TOKEN = "e2e-coda-token"
TRIGGER_TOKEN = "e2e-trigger-token"
TABLE = "grid-PaRtc1pnt"
KEY_COLUMN = "c-SyncKey01"
SEED_ROWS = 50
STOP_GRACE_SECONDS = 1.0


class World:
    """The emulator process, the config, and daemon processes started from it."""

    def __init__(self, tmp_path: Path, *, interval_seconds: float = 2) -> None:
        self.tmp_path = tmp_path
        self.interval_seconds = interval_seconds
        self.procs: list[Proc] = []
        emulator = self.spawn(emulator_args(seed_rows=SEED_ROWS, token=API_TOKEN, read_lag="0"))
        self.api_url = emulator.wait_line(EMULATOR_URL).group(1)
        self.emu = httpx.Client(
            base_url=self.api_url.removesuffix("/apis/v1"), trust_env=False, timeout=10
        )
        self.config = tmp_path / "coda-sync.toml"
        self.config.write_text(self._config_text(), encoding="utf-8")
        self.db = tmp_path / "coda-sync.db"
        self.env = {
            **os.environ,
            "CODA_API_TOKEN": API_TOKEN,
            "CODA_SYNC_TRIGGER_TOKEN": TRIGGER_TOKEN,
        }
        self.daemon: Proc | None = None
        self.control: httpx.Client | None = None

    def _config_text(self) -> str:
        return example_config(
            {
                'api_base_url = "https://coda.io/apis/v1"': f'api_base_url = "{self.api_url}"',
                "interval_seconds = 30": f"interval_seconds = {self.interval_seconds}\n"
                f"stop_grace_seconds = "
                f"{STOP_GRACE_SECONDS}",
                "port = 8787": "port = 0",
                "# trigger_token_env": "trigger_token_env",
                'format = "auto"': 'format = "json"',
            }
        )

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc.coda_sync(*args, env=env)
        self.procs.append(proc)
        return proc

    def start_daemon(self) -> Proc:
        self.daemon = self.spawn(["run", "--config", str(self.config)], env=self.env)
        url = self.daemon.wait_line(r"control port listening on (http://\S+)").group(1)
        self.control = httpx.Client(base_url=url, trust_env=False, timeout=10)
        return self.daemon

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.emu.close()
        if self.control is not None:
            self.control.close()

    # ------------------------------------------------------------------ both sides

    def coda_rows(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.emu.get(f"/_emulator/tables/{TABLE}/rows").json()[
            "items"
        ]
        return items

    def coda_keys(self) -> list[str]:
        return [str(r["values"].get(KEY_COLUMN) or "") for r in self.coda_rows()]

    def local(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:  # the table does not exist yet
                return []

    def local_count(self) -> int:
        rows = self.local("SELECT count(*) FROM participation")
        return int(rows[0][0]) if rows else 0

    def app_insert(self, n: int) -> list[str]:
        """The application inserts n rows into its table (as the daemon's store would)."""
        settings = config_mod.load(self.config, env=self.env)
        binding = settings.bindings[0]
        keys = [str(uuid.uuid4()) for _ in range(n)]

        async def insert() -> None:
            store = await open_store(settings.database, migrate=False)
            try:
                async with store.begin() as conn:
                    rows = [(k, sample_local_values(random.Random(i))) for i, k in enumerate(keys)]
                    await BoundTable(binding).upsert_rows(conn, rows, updated_at=datetime.now(UTC))
            finally:
                await store.close()

        anyio.run(insert)
        return keys

    def trigger(self, *, token: str | None = TRIGGER_TOKEN) -> httpx.Response:
        assert self.control is not None
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.control.post(
            "/sync", headers=headers, json={"binding": "participation", "full": False}
        )

    def wait_run(self, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
        assert self.control is not None
        auth = {"Authorization": f"Bearer {TRIGGER_TOKEN}"}
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.control.get(f"/runs/{run_id}", headers=auth).json()
            if run["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                return run
            time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_person_edit_arrives_after_a_trigger(world: World) -> None:
    """A Coda edit reaches SQLite in the run a token-bearing POST /sync starts; no token ->
    401; /metrics parses."""
    world.start_daemon()
    wait_until(lambda: world.local_count() == SEED_ROWS, what="the initial pull")
    row = world.coda_rows()[0]
    key = row["values"][KEY_COLUMN]
    r = world.emu.patch(
        f"/_emulator/tables/{TABLE}/rows/{row['id']}",
        json={"values": {"c-Comment01": "edited by a person"}},
    )
    assert r.status_code == 200, r.text

    assert world.trigger(token=None).status_code == 401
    assert world.trigger(token="wrong").status_code == 401
    r = world.trigger()
    assert r.status_code == 202, r.text
    run = world.wait_run(r.json()["run_id"])
    assert run["state"] == "succeeded", run
    assert run["result"]["pulled"] >= 1
    assert world.local("SELECT comment FROM participation WHERE id = ?", key) == [
        ("edited by a person",)
    ]

    assert world.control is not None
    metrics = world.control.get("/metrics")
    assert metrics.status_code == 200
    families = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"coda_sync_cycles", "coda_sync_rows_synced", "coda_sync_api_requests"} <= families
    daemon = world.daemon
    assert daemon is not None
    daemon.popen.send_signal(signal.SIGTERM)
    assert daemon.popen.wait(timeout=STOP_GRACE_SECONDS + 10) == 0
    output = daemon.output()
    assert API_TOKEN not in output and TRIGGER_TOKEN not in output


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stop_during_a_push_then_restart_completes_it_once(world: World, sig: int) -> None:
    """SIGTERM (exit 0 within the grace) or SIGKILL while an upsert is in flight; after a
    restart the push completes and every key exists exactly once on both sides."""
    daemon = world.start_daemon()
    wait_until(lambda: world.local_count() == SEED_ROWS, what="the initial pull")
    r = world.emu.post(
        "/_emulator/faults",
        json={"kind": "delay", "delay_seconds": 30, "endpoint": "upsertRows", "count": 1},
    )
    assert r.status_code == 200, r.text
    keys = world.app_insert(5)
    assert world.trigger().status_code == 202

    def upsert_in_flight() -> bool:
        return bool(world.emu.get("/_emulator/faults").json()["injected"].get("delay"))

    wait_until(upsert_in_flight, what="the upsert to reach the emulator")
    started = time.monotonic()
    daemon.popen.send_signal(sig)
    code = daemon.popen.wait(timeout=STOP_GRACE_SECONDS + 10)
    if sig == signal.SIGTERM:
        assert code == 0, daemon.output()
        assert time.monotonic() - started < STOP_GRACE_SECONDS + 5
    else:
        assert code == -signal.SIGKILL

    world.start_daemon()
    wait_until(lambda: set(keys) <= set(world.coda_keys()), what="the push after the restart")
    assert world.control is not None

    def settled() -> bool:
        assert world.control is not None
        status = world.control.get("/status").json()["bindings"]["participation"]
        return bool(status["pending_mutations"] == 0 and status["last_result"] == "success")

    wait_until(settled, what="the write to be confirmed")
    coda = world.coda_keys()
    assert len(coda) == len(set(coda)) == SEED_ROWS + 5
    assert world.local_count() == SEED_ROWS + 5
    assert len({k for (k,) in world.local("SELECT id FROM participation")}) == SEED_ROWS + 5
