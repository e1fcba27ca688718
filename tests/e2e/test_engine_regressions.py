"""Regression tests for engine bugs found by reviews, the demo and the simulation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from daemon.emulator import EmulatorConfig
from daemon.model import SyncKey
from tests.harness import World, world

pytestmark = pytest.mark.anyio


async def test_person_edit_right_after_our_write_is_pulled_promptly(tmp_path: Path) -> None:
    """A Coda edit landing just after our own write applied is pulled, not held by the fence.

    Found by the demo at --speed 3: the edit was deferred behind the stale-read fence and only
    re-read once the fence expired. The re-read uses X-Coda-Doc-Version: latest, which Coda
    answers with 400 rather than stale data, so it can run as soon as the write is confirmed.
    """
    emu = EmulatorConfig(apply_delay_seconds=1.0, read_lag_seconds=0.5, rate_limit_enabled=False)
    async with world(
        tmp_path, seed_rows=20, emulator=emu, clock_skew_seconds=1, interval_seconds=1.67
    ) as w:
        await w.converge(4)
        key = sorted(w.coda_keys())[3]
        await w.app_upsert(key, {"hours": 11.0})
        await w.cycle(advance=1.67)
        w.clock.advance(1.0)
        w.emu.tick()
        w.person_update(key, {"c-Hours0001": 12.5})
        for _ in range(3):  # well inside the 60 s fence
            await w.cycle(advance=1.67)
        assert (await w.local_rows())[key]["hours"] == "12.5"
        await w.assert_converged()


async def test_key_write_back_is_budgeted_per_cycle(tmp_path: Path) -> None:
    """120 rows people created: at most key_writeback_per_cycle PUTs per cycle, all synced."""
    emu = EmulatorConfig(apply_delay_seconds=1.0, read_lag_seconds=0.5)
    async with world(tmp_path, seed_rows=0, emulator=emu, key_writeback_per_cycle=50) as w:
        for n in range(120):
            w.person_insert({"c-Activity1": f"Субботник {n}", "c-Email0001": f"p{n}@example.com"})
        writes = []
        for _ in range(8):
            r = await w.cycle()
            writes.append(r.writes)
        assert max(writes) <= 50, writes
        assert sum(writes) == 120, writes
        coda = w.coda_rows()
        assert len(coda) == 120 and all("-" in k for k in coda)  # every row has a uuid key
        await w.assert_converged()


async def test_second_app_edit_with_the_same_coarse_updated_at_is_pushed(tmp_path: Path) -> None:
    """An app stamping updated_at in whole seconds may give two edits the same stamp: the
    second one is still pushed by the next incremental cycle (found by bench/)."""
    async with world(tmp_path, seed_rows=10) as w:
        await w.converge(3)
        key = sorted(w.coda_keys())[0]
        stamp = w.clock.now().replace(microsecond=0)
        bound = w.engine.bound
        for comment in ("first", "second"):
            async with w.store.begin() as conn:
                row = (await bound.get_rows(conn, [key]))[key]
                await bound.upsert_rows(
                    conn, [(key, {**row.values, "comment": comment})], updated_at=stamp
                )
            await w.converge(3)
        assert w.coda_rows()[key]["comment"] == "second"
        await w.assert_converged()


async def _mark_for_recheck(w: World, key: str) -> None:
    """As a released write or an undecided listing leaves a key: marked, old row id kept."""
    repo, name = w.engine.repo, w.engine.binding.name
    async with w.store.begin() as conn:
        state = (await repo.get_row_states(conn, name, [key]))[SyncKey(key)]
        await repo.put_row_states(conn, [replace(state, recheck=True)])


async def test_recheck_of_a_row_gone_from_coda_lets_the_local_edit_win(tmp_path: Path) -> None:
    """A marked key whose row answers 404 (latest) and whose key no row holds was deleted in
    Coda: the app's later edit beats the delete (the row is re-inserted whole), decided by the
    recheck phase of an incremental cycle, without waiting for a full scan."""
    async with world(tmp_path, seed_rows=10) as w:
        await w.converge(3)
        key = sorted(w.coda_keys())[2]
        w.person_delete(key)
        await w.app_upsert(key, {"comment": "still here"})
        await _mark_for_recheck(w, key)
        r = await w.cycle(advance=30)
        # re-inserted whole at once (not a partial update that Coda would turn into a row
        # holding just the comment)
        assert not r.full_scan and r.stats["rechecked"] == 1, r.stats
        assert (r.stats["pushed_inserts"], r.stats["pushed_updates"]) == (1, 0), r.stats
        await w.converge(2)
        assert w.coda_rows()[key]["comment"] == "still here"
        assert w.coda_rows()[key]["activity"] is not None  # the whole row, not just the edit
        await w.assert_converged()


async def test_recheck_of_a_row_gone_from_coda_deletes_the_unchanged_local_row(
    tmp_path: Path,
) -> None:
    """The same, with no local edit: the Coda delete propagates (audited)."""
    async with world(tmp_path, seed_rows=10) as w:
        await w.converge(3)
        key = sorted(w.coda_keys())[2]
        w.person_delete(key)
        await _mark_for_recheck(w, key)
        r = await w.cycle(advance=30)
        assert not r.full_scan and r.stats["pulled_deletes"] == 1
        assert key not in await w.local_rows()
        await w.assert_converged()


async def test_recheck_restores_a_row_our_partial_upsert_re_created(tmp_path: Path) -> None:
    """A person deletes a row and the app edits it: our partial upsert re-creates it in Coda
    with just the comment. The listing that shows the key on its new row cannot read the old
    row yet (a later edit elsewhere keeps the snapshot behind: latest reads answer 400), and
    the sync token will not list the row again. The key is marked; the next cycle's recheck
    reads the old row (404), finds the key's new row and restores the other columns from SQL,
    journaled as edit-beats-delete, without waiting for a full scan (soak seed 1107)."""
    emu = EmulatorConfig(apply_delay_seconds=1.0, read_lag_seconds=5.0, rate_limit_enabled=False)
    async with world(tmp_path, seed_rows=10, emulator=emu) as w:
        await w.converge(3)
        key, other = sorted(w.coda_keys())[2:4]
        w.person_delete(key)
        await w.app_upsert(key, {"comment": "pushed alone"})
        await w.cycle(advance=30)  # the partial upsert goes out
        w.clock.advance(10)
        w.emu.tick()  # applied: Coda re-created the row, holding the key and the comment
        w.person_update(other, {"c-Comment01": "a later edit"})  # snapshot behind again
        await w.cycle(advance=2)
        assert w.coda_rows()[key]["activity"] is None  # the blank columns, still undecided
        results = [await w.cycle(advance=30) for _ in range(3)]
        assert not any(r.full_scan for r in results)
        assert sum(r.stats["rechecked"] for r in results) == 1
        coda = w.coda_rows()[key]
        assert coda["comment"] == "pushed alone" and coda["activity"] is not None
        await w.assert_converged()
        async with w.store.connect() as conn:
            journal = await w.engine.repo.list_conflicts(conn, w.engine.binding.name)
        assert [c.conflict.rule.value for c in journal] == ["edit-beats-delete"]
