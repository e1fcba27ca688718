"""One cycle end to end against the emulator and SQLite (issue: sync engine acceptance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import world

pytestmark = pytest.mark.anyio


async def test_initial_pull_then_idle_cycles_cost_one_read(tmp_path: Path, db_url: str) -> None:
    """2,000 Coda rows arrive locally; afterwards an idle cycle is exactly 1 read, 0 writes."""
    async with world(tmp_path, db_url=db_url, seed_rows=2000) as w:
        first = await w.cycle()
        assert first.full_scan
        assert first.stats["pulled_inserts"] == 2000
        assert first.writes == 0
        print(f"initial pull of 2000 rows: {first.reads} reads, {first.writes} writes")
        await w.converge(2)
        await w.assert_converged()
        for _ in range(5):
            r = await w.cycle()
            assert (r.reads, r.writes) == (1, 0), r.summary()


async def test_initial_push_of_local_rows(tmp_path: Path, db_url: str) -> None:
    """1,000 local rows are pushed in keyed batches; both sides end equal, no duplicate."""
    async with world(tmp_path, db_url=db_url, seed_rows=0) as w:
        keys = [await w.app_insert() for _ in range(1000)]
        first = await w.cycle()
        assert first.stats["pushed_inserts"] == 1000
        assert first.writes == 10, first.summary()  # ceil(1000 / 100)
        results = await w.converge(3)
        coda = await w.assert_converged()
        assert set(coda) == set(keys)
        print("push 1000:", first.summary(), [r.summary() for r in results])
        r = await w.cycle()
        assert (r.reads, r.writes) == (1, 0), r.summary()
