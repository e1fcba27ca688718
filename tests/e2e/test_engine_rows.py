"""Acceptance criteria 7 and 8: bad rows are quarantined (and released when fixed); rows
people create in Coda get a sync key written back and arrive locally exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.emulator import KEY_COLUMN, TABLE_ID, EmulatorConfig, FaultRule
from daemon.store.repo import QuarantineEntry
from tests.harness import World, world

pytestmark = pytest.mark.anyio

SEED = 20


async def _quarantine(w: World) -> list[QuarantineEntry]:
    async with w.store.connect() as conn:
        return await w.engine.repo.quarantine_list(conn, w.binding.name)


async def _ready(w: World) -> list[str]:
    await w.converge(2)
    await w.assert_converged()
    return sorted(w.coda_rows())


def _key_of(w: World, row_id: str) -> str | None:
    for row in w.emu.true_records(TABLE_ID):
        if row.id == row_id:
            value = row.cells.get(KEY_COLUMN)
            return str(value) if value else None
    raise KeyError(row_id)


# ---------------------------------------------------------------- quarantine (7)


BAD_CELLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("date", {"c-ActDate01": "next Tuesday-ish"}, "activity_date", "a date"),
    ("number", {"c-Hours0001": "about three"}, "hours", "a number"),
    ("checkbox", {"c-Confirm01": "maybe"}, "confirmed", "a checkbox"),
]


@pytest.mark.parametrize(
    ("cells", "column", "what"), [p[1:] for p in BAD_CELLS], ids=[p[0] for p in BAD_CELLS]
)
@pytest.mark.parametrize("fix", ["new-value", "old-value"])
async def test_bad_coda_row_is_quarantined_then_released(
    tmp_path: Path, db_url: str, cells: dict[str, Any], column: str, what: str, fix: str
) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        bad, good = keys[3], keys[4]
        before = (await w.local_rows())[bad]
        # a person types something Coda cannot parse: the emulator stores it as raw text
        # "old-value": the person only mistyped the cell and then types the old value back
        extra = {"c-Comment01": "edited with the bad cell"} if fix == "new-value" else {}
        w.person_update(bad, {**cells, **extra})
        w.person_update(good, {"c-Comment01": "a good edit"})
        r = await w.cycle()
        print(r.summary())
        assert r.stats["quarantined"] == 1, r.summary()
        [entry] = await _quarantine(w)
        assert (entry.item.side, entry.item.ref) == ("remote", bad)
        assert column in entry.item.reason and what in entry.item.reason, entry.item.reason
        local = await w.local_rows()
        assert local[good]["comment"] == "a good edit"  # other rows sync
        assert local[bad] == before  # the bad row is left alone on both sides
        for _ in range(2):
            r = await w.cycle()
            assert r.writes == 0, r.summary()
        r = await w.cycle(full=True)
        assert r.writes == 0 and r.stats["pulled_deletes"] == 0, r.summary()
        assert (await w.local_rows())[bad] == before
        assert len(await _quarantine(w)) == 1
        # the person fixes the cell: the row syncs and leaves the quarantine
        original = {
            "activity_date": before["activity_date"],
            "hours": before["hours"],
            "confirmed": "true" if before["confirmed"] else "false",
        }[column]
        value = {"activity_date": "2025-05-05", "hours": 4, "confirmed": True}[column]
        w.person_update(bad, {next(iter(cells)): value if fix == "new-value" else original})
        await w.converge(2)
        assert await _quarantine(w) == []
        coda = await w.assert_converged()
        if fix == "new-value":
            assert coda[bad]["comment"] == "edited with the bad cell"
        else:
            assert coda[bad] == before
        r = await w.cycle()
        assert (r.reads, r.writes) == (1, 0), r.summary()


async def test_bad_local_row_is_quarantined_then_released(tmp_path: Path, db_url: str) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        bad = keys[2]
        coda_before = w.coda_rows()[bad]
        # the app stores a value of the wrong type (an object where a list of tags belongs)
        await w.app_upsert(bad, {"tags": {"not": "a list"}, "comment": "with bad tags"})
        await w.app_upsert(keys[5], {"comment": "fine"})
        r = await w.cycle()
        print(r.summary())
        [entry] = await _quarantine(w)
        assert (entry.item.side, entry.item.ref) == ("local", bad)
        assert "tags" in entry.item.reason, entry.item.reason
        assert w.coda_rows()[bad] == coda_before
        await w.converge(2)
        assert w.coda_rows()[keys[5]]["comment"] == "fine"
        await w.app_upsert(bad, {"tags": ["спорт"]})
        await w.converge(3)
        assert await _quarantine(w) == []
        coda = await w.assert_converged()
        assert coda[bad]["tags"] == ("спорт",) and coda[bad]["comment"] == "with bad tags"


# ---------------------------------------------------------------- keys for new rows (8)

PERSON_ROW = {"c-Activity1": "Added by hand", "c-Comment01": "no key yet", "c-Hours0001": 2}


@pytest.mark.parametrize(
    "emu",
    [
        EmulatorConfig(),
        EmulatorConfig(apply_delay_seconds=90, read_lag_seconds=20),
        EmulatorConfig(apply_delay_seconds=40, read_lag_seconds=10, mutation_404_seconds=120),
    ],
    ids=["default", "slow-write-back", "slow-write-back-404"],
)
async def test_rows_created_in_coda_get_a_key_once(
    tmp_path: Path, db_url: str, emu: EmulatorConfig
) -> None:
    async with world(tmp_path, db_url=db_url, seed_rows=SEED, emulator=emu) as w:
        await _ready(w)
        row_ids = [w.person_insert({**PERSON_ROW, "c-Activity1": f"by hand {n}"}) for n in range(3)]
        inserted = 0
        for n in range(12):
            r = await w.cycle(advance=15, full=n == 2)  # a full scan while keys are in flight
            inserted += r.stats["pulled_inserts"]
            local = await w.local_rows()
            mine = [k for k, v in local.items() if str(v["activity"]).startswith("by hand")]
            assert len(mine) == (3 if n else len(mine)), f"cycle {n}: {mine}"
            assert len(local) == SEED + len(mine), f"cycle {n}: duplicates locally"
        assert inserted == 3
        keys = {row_id: _key_of(w, row_id) for row_id in row_ids}
        assert all(keys.values()), keys  # the key column is filled in Coda
        local = await w.local_rows()
        assert set(keys.values()) <= set(local)
        assert len(w.emu.true_records(TABLE_ID)) == SEED + 3  # no duplicate in Coda either
        await w.assert_converged()
        r = await w.cycle(full=True)
        assert r.writes == 0 and r.stats["pulled_inserts"] == 0, r.summary()
        r = await w.cycle()
        assert (r.reads, r.writes) == (1, 0), r.summary()
        # a later edit of such a row still syncs both ways
        key = next(iter(keys.values()))
        assert key is not None
        w.person_update(key, {"c-Comment01": "edited after the key was written"})
        await w.converge(2)
        assert (await w.local_rows())[key]["comment"] == "edited after the key was written"


async def test_lost_key_write_back_is_resent(tmp_path: Path, db_url: str) -> None:
    """The PUT of the key is accepted but never applied: it is sent again; still one row."""
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        await _ready(w)
        row_id = w.person_insert(PERSON_ROW)
        await w.cycle()  # pulled locally, key write-back recorded
        w.emu.faults.add(FaultRule("never_apply", endpoint="updateRow"))
        for _ in range(16):  # past mutation_timeout_seconds (300 s)
            await w.cycle()
        key = _key_of(w, row_id)
        assert key is not None
        local = await w.local_rows()
        assert key in local
        assert len(local) == SEED + 1 and len(w.emu.true_records(TABLE_ID)) == SEED + 1
        await w.assert_converged()


async def test_many_rows_created_in_coda(tmp_path: Path, db_url: str) -> None:
    """More new rows than key_writeback_per_cycle: all get keys, each inserted once."""
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        await _ready(w)
        for n in range(120):
            w.person_insert({**PERSON_ROW, "c-Activity1": f"bulk {n}"})
        results = await w.converge(6)
        print([(r.reads, r.writes, r.stats["keys_assigned"]) for r in results])
        assert sum(r.stats["pulled_inserts"] for r in results) == 120
        assert w.emu.stats.count(status=429) == 0
        await w.assert_converged()
        assert all(_key_of(w, row.id) for row in w.emu.true_records(TABLE_ID))
        assert len(await w.local_rows()) == SEED + 120


async def test_bad_local_row_edited_in_coda_meanwhile(tmp_path: Path, db_url: str) -> None:
    """A row that is bad locally is edited in Coda: the cycle goes on, and once the app fixes
    its row both edits are there."""
    async with world(tmp_path, db_url=db_url, seed_rows=SEED) as w:
        keys = await _ready(w)
        bad = keys[7]
        await w.app_upsert(bad, {"tags": {"not": "a list"}, "comment": "local edit"})
        w.person_update(bad, {"c-Hours0001": 5})
        w.person_update(keys[8], {"c-Hours0001": 6})
        for _ in range(3):
            r = await w.cycle()
            print(r.summary())
            assert [q.item.ref for q in await _quarantine(w)] == [bad]
            assert r.writes == 0, r.summary()
        assert w.coda_rows()[keys[8]]["hours"] == "6"
        async with w.store.connect() as conn:
            local = await w.engine.bound.get_rows(conn, [bad, keys[8]])
        assert local[keys[8]].values["hours"] == 6  # other rows sync
        assert local[bad].values["tags"] == {"not": "a list"}  # the bad row is left alone
        await w.app_upsert(bad, {"tags": ["митап"]})
        await w.converge(3)
        coda = await w.assert_converged()
        assert coda[bad]["hours"] == "5"
        assert coda[bad]["comment"] == "local edit"
        assert coda[bad]["tags"] == ("митап",)
        assert await _quarantine(w) == []
