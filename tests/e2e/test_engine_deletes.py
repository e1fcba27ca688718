"""Acceptance criteria 6 and 9: deletes on either side, per policy, and the reads that must
never be taken as deletes (empty, failed or partial listings; mass deletes)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from daemon.coda.schema import RowPage
from daemon.emulator import TABLE_ID, FaultRule
from daemon.errors import CodaError, CodaServerError
from daemon.model import ConflictRule, Side
from daemon.store.repo import DeleteRecord
from tests.harness import World, world

pytestmark = pytest.mark.anyio

SEED = 20
SOFT = {"deletes": "soft", "soft_delete_column": "deleted_at"}


async def _ready(w: World, cycles: int = 2) -> list[str]:
    await w.converge(cycles)
    await w.assert_converged()
    return sorted(w.coda_rows())


async def _audit(w: World) -> list[DeleteRecord]:
    async with w.store.connect() as conn:
        return await w.engine.repo.list_deletes(conn, w.binding.name)


async def _raw_local(w: World) -> dict[str, Any]:
    """Every local row, soft-deleted ones included."""
    async with w.store.connect() as conn:
        out = {}
        async for batch in w.engine.bound.iter_rows(conn):
            out.update({r.key: r for r in batch})
        return out


async def _conflicts(w: World) -> list[Any]:
    async with w.store.connect() as conn:
        return [c.conflict for c in await w.engine.repo.list_conflicts(conn, w.binding.name)]


# ---------------------------------------------------------------- Coda-side deletes (6)


async def test_coda_delete_propagates(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        gone = keys[4]
        old = (await w.local_rows())[gone]
        w.person_delete(gone)
        r = await w.cycle()  # incremental listings cannot see deletes: nothing happens
        assert r.stats["pulled_deletes"] == 0 and gone in await w.local_rows()
        r = await w.cycle(full=True)
        print(r.summary())
        assert r.stats["pulled_deletes"] == 1 and r.guard is None, r.summary()
        assert gone not in await _raw_local(w)
        await w.assert_converged()
        [audit] = await _audit(w)
        assert (audit.audit.key, audit.audit.side_deleted) == (gone, "local")
        assert audit.audit.old_values == old
        for _ in range(2):  # nothing comes back
            r = await w.cycle()
            assert (r.reads, r.writes) == (1, 0), r.summary()
        assert gone not in await _raw_local(w) and gone not in w.coda_rows()


async def test_coda_delete_soft(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED, binding=SOFT) as w:
        keys = await _ready(w)
        gone = keys[3]
        w.person_delete(gone)
        r = await w.cycle(full=True)
        assert r.stats["pulled_deletes"] == 1, r.summary()
        raw = await _raw_local(w)
        assert raw[gone].soft_deleted  # kept, marked
        await w.assert_converged()  # local_rows() leaves soft-deleted rows out
        [audit] = await _audit(w)
        assert (audit.audit.key, audit.audit.side_deleted) == (gone, "soft")
        for _ in range(2):
            r = await w.cycle()
            assert r.writes == 0, r.summary()
        r = await w.cycle(full=True)
        assert r.writes == 0, r.summary()
        assert gone not in w.coda_rows()  # never resurrected in Coda
        # the app marking a row deleted deletes it in Coda
        await w.app_soft_delete(keys[8])
        await w.converge(3)
        assert keys[8] not in w.coda_rows()
        assert (await _raw_local(w))[keys[8]].soft_deleted
        await w.assert_converged()


async def test_coda_delete_ignored(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED, binding={"deletes": "ignore"}) as w:
        keys = await _ready(w)
        gone = keys[6]
        w.person_delete(gone)
        r = await w.cycle(full=True)
        assert r.stats["pulled_deletes"] == 0 and r.writes == 0, r.summary()
        assert gone in await w.local_rows()  # nothing deleted
        async with w.store.connect() as conn:
            state = (await w.engine.repo.get_row_states(conn, w.binding.name, [gone]))[gone]
        assert state.detached
        # the survivor is not synced back, not even after the app edits it
        await w.app_upsert(gone, {"comment": "edited after the Coda delete"})
        for _ in range(3):
            r = await w.cycle()
            assert r.writes == 0, r.summary()
        r = await w.cycle(full=True)
        assert r.writes == 0, r.summary()
        assert gone not in w.coda_rows()
        assert await _audit(w) == []
        # other rows still sync
        w.person_update(keys[0], {"c-Comment01": "still syncing"})
        await w.converge(2)
        assert (await w.local_rows())[keys[0]]["comment"] == "still syncing"


async def test_empty_listing_deletes_nothing(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        await _ready(w)
        before = await w.local_rows()
        w.emu.faults.add(FaultRule("empty_listing", endpoint="listRows"))
        r = await w.cycle(full=True)
        print(r.summary())
        assert r.guard is not None and "empty" in r.guard.reason, r.summary()
        assert r.stats["pulled_deletes"] == 0
        assert await w.local_rows() == before
        assert await _audit(w) == []
        await w.converge(2)
        r = await w.cycle(full=True)
        assert r.guard is None and r.stats["pulled_deletes"] == 0, r.summary()
        assert await w.local_rows() == before


async def test_an_empty_first_listing_mints_no_sync_token(tmp_path: Path, db_url: str) -> None:
    """A first sync (no row states: the breaker has nothing to protect) whose full listing
    comes back empty must not save that listing's sync token: the token's watermark is the
    table's newest row, so every existing row would wait for the next full scan (an hour).
    The next cycle scans in full again, at the same cost as an incremental one (soak seed
    10077)."""
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        w.emu.faults.add(FaultRule("empty_listing", endpoint="listRows"))
        r = await w.cycle(full=True)
        assert r.stats["pulled_inserts"] == 0 and r.guard is None, r.summary()
        r = await w.cycle(advance=30)
        assert r.full_scan and r.stats["pulled_inserts"] == SEED, r.summary()
        r = await w.cycle(advance=30)
        assert not r.full_scan
        await w.assert_converged()


async def test_failed_listing_deletes_nothing(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        before = await w.local_rows()
        w.person_delete(keys[2])  # a real delete the failed scan must not act on either
        w.emu.faults.add(FaultRule("http_error", status=503, count=None, endpoint="listRows"))
        with pytest.raises(CodaError):
            await w.cycle(full=True)
        assert await w.local_rows() == before
        w.emu.faults.clear()
        w.emu.faults.add(FaultRule("no_items", endpoint="listRows"))
        with pytest.raises(CodaError):
            await w.cycle(full=True)
        assert await w.local_rows() == before
        assert await _audit(w) == []
        r = await w.cycle(full=True)  # Coda answers again: the real delete goes through
        assert r.stats["pulled_deletes"] == 1, r.summary()
        assert set(await w.local_rows()) == set(before) - {keys[2]}


def _cut_listing(w: World, *, after_pages: int, fail: bool) -> None:
    """Make the engine's next full listing stop after `after_pages` pages: with an error
    (`fail`), or silently, as a listing that looks complete but is not."""
    real = w.client.list_rows

    async def cut(*args: Any, **kwargs: Any) -> AsyncGenerator[RowPage, None]:
        n = 0
        async for page in real(*args, **kwargs):
            if n == after_pages and kwargs.get("query") is None:
                if fail:
                    raise CodaServerError("Coda server error", status=502)
                return
            n += 1
            yield page

    w.client.list_rows = cut  # type: ignore[method-assign]


@pytest.mark.parametrize("fail", [True, False], ids=["page-2-fails", "page-2-missing"])
@pytest.mark.parametrize("page_size", [5, 9])
async def test_partial_listing_deletes_nothing(
    tmp_path: Path, db_url: str, fail: bool, page_size: int
) -> None:
    """20 rows in pages of 5 (15 rows unseen: over the guard) or 9 (2 unseen: each is checked
    by GET row, which finds it): nothing is deleted either way."""
    async with world(tmp_path, db_url=db_url, seed_rows=SEED, coda={"page_size": page_size}) as w:
        await _ready(w)
        before = await w.local_rows()
        _cut_listing(w, after_pages=2 if page_size == 9 else 1, fail=fail)
        if fail:
            with pytest.raises(CodaError):
                await w.cycle(full=True)
        else:
            r = await w.cycle(full=True)
            print(r.summary())
            assert r.stats["pulled_deletes"] == 0, r.summary()
        assert await w.local_rows() == before
        assert await _audit(w) == []


async def test_mass_delete_is_refused_by_the_guard(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=50) as w:
        keys = await _ready(w)
        doomed = keys[:30]  # 60 %
        for key in doomed:
            w.person_delete(key)
        before = await w.local_rows()
        for _ in range(2):
            r = await w.cycle(full=True)
            print(r.summary())
            assert r.guard is not None, r.summary()
            assert r.guard.refused_local_deletes == 30
            assert "refused 30 deletes" in r.guard.reason
            assert r.stats["pulled_deletes"] == 0 and r.writes == 0
            assert await w.local_rows() == before
        assert await _audit(w) == []
        # incremental cycles cannot see deletes at all: nothing to refuse, nothing deleted
        r = await w.cycle()
        assert r.guard is None and await w.local_rows() == before


# ---------------------------------------------------------------- local deletes (9)


async def test_local_delete_propagates(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        gone = keys[9]
        await w.app_delete(gone)
        results = await w.converge(3)
        print([r.summary() for r in results])
        assert results[0].stats["pushed_deletes"] == 1
        assert gone not in w.coda_rows()
        assert len(w.emu.true_records(TABLE_ID)) == SEED - 1
        await w.assert_converged()
        [audit] = await _audit(w)
        assert (audit.audit.key, audit.audit.side_deleted) == (gone, "remote")
        async with w.store.connect() as conn:
            [tomb] = (await w.engine.repo.get_row_states(conn, w.binding.name, [gone])).values()
        # a tombstone for the stale window, so a lagging read cannot pull the row back
        assert tomb.detached and tomb.fence_until is not None
        for _ in range(2):
            r = await w.cycle()
            assert (r.reads, r.writes) == (1, 0), r.summary()
        w.clock.advance(w.settings.sync.stale_window_seconds)
        r = await w.cycle(full=True)
        assert r.writes == 0 and r.stats["pulled_inserts"] == 0, r.summary()
        async with w.store.connect() as conn:  # the full scan past the window forgot the key
            assert gone not in await w.engine.repo.get_row_states(conn, w.binding.name, [gone])


async def test_local_delete_vs_coda_edit_edit_wins(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        key = keys[11]
        await w.app_delete(key)
        w.person_update(key, {"c-Comment01": "edited in Coda after the local delete"})
        results = await w.converge(3)
        print([r.summary() for r in results])
        coda = await w.assert_converged()
        assert coda[key]["comment"] == "edited in Coda after the local delete"
        [c] = await _conflicts(w)
        assert (c.key, c.rule, c.winner) == (key, ConflictRule.EDIT_BEATS_DELETE, Side.REMOTE)


async def test_coda_delete_vs_local_edit_edit_wins(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        key = keys[12]
        w.person_delete(key)
        await w.app_upsert(key, {"comment": "edited locally after the Coda delete"})
        results = [await w.cycle(full=True)] + await w.converge(3)
        print([r.summary() for r in results])
        coda = await w.assert_converged()
        assert coda[key]["comment"] == "edited locally after the Coda delete"
        [c] = await _conflicts(w)
        assert (c.key, c.rule, c.winner) == (key, ConflictRule.EDIT_BEATS_DELETE, Side.LOCAL)
        r = await w.cycle(full=True)
        assert r.writes == 0 and r.stats["pulled_deletes"] == 0, r.summary()
        await w.assert_converged()


async def test_new_row_not_yet_visible_is_not_taken_as_deleted(tmp_path: Path, db_url: str) -> None:
    """Our insert is confirmed (mutationStatus completed) but the read snapshot lags 40 s: a
    full scan in between must not conclude that the row was deleted in Coda."""
    from daemon.emulator import EmulatorConfig

    emu = EmulatorConfig(apply_delay_seconds=1, read_lag_seconds=40, mutation_404_seconds=0.5)
    async with world(tmp_path, db_url=db_url, seed_rows=SEED, emulator=emu) as w:
        await w.converge(4)
        key = await w.app_insert({"comment": "brand new"})
        for n in range(12):
            r = await w.cycle(advance=5, full=n >= 2)
            assert r.stats["pulled_deletes"] == 0 and r.stats["pushed_deletes"] == 0, r.summary()
            assert key in await w.local_rows(), f"cycle {n}: {r.summary()}"
        await w.converge(3)
        assert (await w.assert_converged())[key]["comment"] == "brand new"
