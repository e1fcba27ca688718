"""Acceptance criterion 10: every sync-token variant the emulator models keeps convergence and
the idle cost (1 read, 0 writes).

The variants are the [U]ncertain behaviours of Coda's `nextSyncToken`: which pages carry it
(`sync_token_pages`), whether the watermark row is delivered again (`sync_boundary`), whether
`startAt` is the newest row of the whole listing or of the carrying page (`sync_start_at`),
and what Coda answers to a token it does not accept (`bad_sync_token`). 150 rows with
50-row pages make every full listing three pages long.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from daemon.emulator import EmulatorConfig
from daemon.engine import CycleResult
from tests.harness import World, world

pytestmark = pytest.mark.anyio

ROWS = 150
CODA = {"page_size": 50}
# Each knob away from the observed default (first / exclusive / listing_max), then the hostile
# combinations: a token only on the last page whose watermark is that (oldest) page's newest
# row never reaches the newest rows by itself.
COMBOS = [
    ("first", "exclusive", "listing_max"),
    ("every", "exclusive", "listing_max"),
    ("last", "exclusive", "listing_max"),
    ("first", "inclusive", "listing_max"),
    ("first", "exclusive", "page_max"),
    ("every", "inclusive", "page_max"),
    ("last", "exclusive", "page_max"),
    ("last", "inclusive", "page_max"),
]
VARIANTS = [pytest.param(*c, id="-".join(c)) for c in COMBOS]


async def _run_until_idle(w: World, limit: int = 8) -> list[CycleResult]:
    """Cycles until one costs exactly 1 read and 0 writes (at most `limit`)."""
    out = []
    for _ in range(limit):
        r = await w.cycle()
        out.append(r)
        if (r.reads, r.writes) == (1, 0) and r.pending_mutations == 0:
            return out
    raise AssertionError(f"not idle after {limit} cycles: {[x.summary() for x in out]}")


async def _assert_idle(w: World, cycles: int = 3) -> None:
    for _ in range(cycles):
        r = await w.cycle()
        assert (r.reads, r.writes) == (1, 0), r.summary()
        s = r.stats
        assert s["pulled_updates"] == s["pulled_inserts"] == s["pushed_updates"] == 0, r.summary()


async def _edits_and_convergence(w: World) -> None:
    """Edits on both sides (the oldest rows, the newest row, a new row) all arrive."""
    keys = sorted(w.coda_rows())
    w.person_update(keys[0], {"c-Comment01": "edited in Coda"})
    w.person_update(keys[-1], {"c-Hours0001": 7})
    new_coda = w.person_insert({"c-SyncKey01": "k-new-in-coda", "c-Activity1": "new"})
    assert new_coda
    await w.app_upsert(keys[1], {"comment": "edited locally"})
    new_local = await w.app_insert({"activity": "new locally"})
    await _run_until_idle(w)
    coda = await w.assert_converged()
    assert coda[keys[0]]["comment"] == "edited in Coda"
    assert coda[keys[-1]]["hours"] == "7"
    assert coda[keys[1]]["comment"] == "edited locally"
    assert coda["k-new-in-coda"]["activity"] == "new"
    assert coda[new_local]["activity"] == "new locally"
    # an edit while the listing is being paged must not be lost either
    w.person_update(keys[2], {"c-Comment01": "edited between cycles"})
    await _run_until_idle(w)
    assert (await w.assert_converged())[keys[2]]["comment"] == "edited between cycles"


@pytest.mark.parametrize(("pages", "boundary", "start"), VARIANTS)
async def test_sync_token_variants(tmp_path: Path, pages: str, boundary: str, start: str) -> None:
    emu = EmulatorConfig(sync_token_pages=pages, sync_boundary=boundary, sync_start_at=start)  # type: ignore[arg-type]
    async with world(tmp_path, seed_rows=ROWS, emulator=emu, coda=CODA) as w:
        results = await _run_until_idle(w)
        print(f"{pages}/{boundary}/{start}: to idle {[(r.reads, r.writes) for r in results]}")
        assert results[0].full_scan and results[0].stats["pulled_inserts"] == ROWS
        await w.assert_converged()
        await _assert_idle(w)
        await _edits_and_convergence(w)
        await _assert_idle(w)
        # a periodic full scan (new token minted) changes nothing and leaves idle at 1 read
        r = await w.cycle(full=True)
        assert r.writes == 0 and r.stats["pulled_updates"] == 0, r.summary()
        await _run_until_idle(w)
        await _assert_idle(w)


@pytest.mark.parametrize("bad", ["bad_request", "gone", "ignore"])
async def test_refused_sync_token(tmp_path: Path, bad: str) -> None:
    """A token Coda does not accept leads to a full listing, and sync goes on as before."""
    emu = EmulatorConfig(bad_sync_token=bad)  # type: ignore[arg-type]
    async with world(tmp_path, seed_rows=ROWS, emulator=emu, coda=CODA) as w:
        await _run_until_idle(w)
        repo, name = w.engine.repo, w.binding.name
        async with w.store.begin() as conn:
            state = await repo.get_binding_state(conn, name)
            assert state is not None and state.sync_token
            await repo.save_binding_state(conn, replace(state, sync_token="bm90LWEtdG9rZW4"))
        keys = sorted(w.coda_rows())
        w.person_update(keys[5], {"c-Comment01": "edited while the token was bad"})
        results = await _run_until_idle(w)
        print(f"bad token ({bad}): {[(r.reads, r.writes) for r in results]}")
        assert sum(r.writes for r in results) == 0
        coda = await w.assert_converged()
        assert coda[keys[5]]["comment"] == "edited while the token was bad"
        await _assert_idle(w)
        await _edits_and_convergence(w)
        await _assert_idle(w)
