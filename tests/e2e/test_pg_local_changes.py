"""PostgreSQL: local change detection by transaction id cannot miss a late commit.

An `updated_at` watermark misses a row whose transaction commits after the watermark passed
its `updated_at`, unless the overlap window is longer than the transaction. On PostgreSQL
the engine reads every row written by a transaction at or after the mark it took before its
previous read (`BoundTable.xid_marks`), so here the overlap is 0 and the app's transaction
stays open across cycles with an `updated_at` an hour in the past: nothing is missed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.store.repo import StateRepo
from tests.harness import World, sample_local_values, world

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

NO_OVERLAP = {"local_overlap_seconds": 0, "full_resync_seconds": 86_400}


async def _mark(w: World) -> int | None:
    async with w.store.connect() as conn:
        state = await StateRepo().get_binding_state(conn, w.binding.name)
    return None if state is None else state.local_xid_mark


async def test_late_commit_with_an_old_updated_at_is_not_missed(
    tmp_path: Path, pg_url: str
) -> None:
    async with world(tmp_path, db_url=pg_url, seed_rows=10, **NO_OVERLAP) as w:
        await w.converge(2)
        await w.assert_converged()
        keys = sorted(w.coda_keys())
        old = w.clock.now() - timedelta(hours=1)
        new_key = "0f0e0d0c-0000-4000-8000-000000000001"
        edited = keys[3]
        async with w.store.engine.connect() as app:  # the app's long transaction
            current = (await w.engine.bound.get_rows(app, [edited]))[edited].values
            rows = [
                (new_key, sample_local_values(w.rng)),
                (edited, {**current, "comment": "written in a long transaction"}),
            ]
            await w.engine.bound.upsert_rows(app, rows, updated_at=old)
            for _ in range(3):  # cycles pass while it is open: watermark and mark move on
                r = await w.cycle()
                assert r.stats["pushed_inserts"] == r.stats["pushed_updates"] == 0, r.summary()
            assert not r.full_scan
            await app.commit()
        results = await w.converge(3)
        assert not any(r.full_scan for r in results)
        coda = await w.assert_converged()
        assert new_key in coda
        assert coda[edited]["comment"] == "written in a long transaction"
        idle = await w.cycle()
        assert (idle.reads, idle.writes) == (1, 0), idle.summary()
        assert idle.stats["local_rows_read"] == 0, idle.summary()  # the mark moved past it


async def test_mark_ahead_of_the_server_falls_back_to_updated_at(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A mark from a restored or different cluster is ignored (updated_at minus the overlap
    instead) and replaced by a fresh one."""
    async with world(tmp_path, db_url=pg_url, seed_rows=5, **NO_OVERLAP) as w:
        await w.converge(2)
        assert (await _mark(w) or 0) > 0
        async with w.store.begin() as conn:
            await conn.execute(
                sa.text("UPDATE coda_sync_binding_state SET local_xid_mark = 9000000000000")
            )
        key = sorted(w.coda_keys())[0]
        w.clock.advance(1)
        await w.app_upsert(key, {"comment": "edited after the restore"})
        await w.converge(3)
        coda = await w.assert_converged()
        assert coda[key]["comment"] == "edited after the restore"
        assert "ahead of this server" in caplog.text
        assert 0 < (await _mark(w) or 0) < 9000000000000
