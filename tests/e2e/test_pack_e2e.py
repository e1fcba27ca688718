"""The Coda Pack's SyncNow/SyncStatus drive a real `coda-sync run` on loopback (issue: Pack).

The Pack's own opt-in e2e suite (`npm run test:e2e` in integrations/coda-pack) executes the
formulas through the Packs SDK with a fetcher that forwards to CODA_SYNC_CONTROL_URL; this
test starts the emulator and the daemon, runs that suite against them, and checks that the
sync it triggered really happened.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_daemon_process import KEY_COLUMN, SEED_ROWS, TABLE, TRIGGER_TOKEN, World
from tests.harness import REPO
from tests.processes import wait_until

PACK = REPO / "integrations" / "coda-pack"
NPM = shutil.which("npm")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NPM is None or not (PACK / "node_modules").is_dir(),
        reason="needs npm and the Pack's node_modules (make test runs npm ci first)",
    ),
]


@pytest.fixture
def quiet_world(tmp_path: Path) -> Iterator[World]:
    """Daemon with a 1-hour interval: after the first cycle only a trigger starts one."""
    w = World(tmp_path, interval_seconds=3600)
    try:
        yield w
    finally:
        w.close()


def test_sync_now_from_the_pack_syncs_a_coda_edit(quiet_world: World) -> None:
    """SyncNow -> POST /sync -> the person's Coda edit arrives in SQLite; SyncStatus succeeds."""
    world = quiet_world
    world.start_daemon()
    wait_until(lambda: world.local_count() == SEED_ROWS, what="the initial pull")
    row = world.coda_rows()[0]
    key = row["values"][KEY_COLUMN]
    r = world.emu.patch(
        f"/_emulator/tables/{TABLE}/rows/{row['id']}",
        json={"values": {"c-Comment01": "edited in Coda, synced by the button"}},
    )
    assert r.status_code == 200, r.text
    assert world.control is not None
    env = {
        **os.environ,
        "CODA_SYNC_CONTROL_URL": str(world.control.base_url).rstrip("/"),
        "CODA_SYNC_TRIGGER_TOKEN": TRIGGER_TOKEN,
        "CODA_SYNC_BINDING": "participation",
    }
    assert NPM is not None
    done = subprocess.run(
        [NPM, "run", "--silent", "test:e2e"],
        cwd=PACK,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r"\bpass [1-9]", out) and re.search(r"\bskipped 0\b", out), out
    assert re.search(r"\bfail 0\b", out), out
    wait_until(
        lambda: (
            world.local("SELECT comment FROM participation WHERE id = ?", key)
            == [("edited in Coda, synced by the button",)]
        ),
        what="the edit in SQLite",
    )
