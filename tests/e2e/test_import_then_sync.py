"""Import, then sync: the next cycles link imported rows to Coda, push the rest, duplicate nothing.

The emulator already holds part of the imported rows (with the same key, under another key,
without a key, with other values); after the import, cycles run until quiet and both sides
must hold each participation exactly once, with equal values, and an idle cycle must cost
exactly one read and no write.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from daemon import normalize
from daemon.emulator import seed_participation
from daemon.emulator.seed import KEY_COLUMN
from daemon.importer import run_import
from tests.exports import (
    Person,
    Row,
    build_exports,
    coda_plan,
    export_csv,
    export_json_pages,
    make_rows,
    seed_coda,
)
from tests.harness import World, world

pytestmark = pytest.mark.anyio

BINDING = "participation"


def natural_keys(rows: Mapping[str, Mapping[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(_nk(v) for v in rows.values())


async def settle(w: World, cycles: int = 6) -> None:
    """Cycle until a cycle does nothing, then prove the idle cost: 1 read, 0 writes."""
    for _ in range(cycles):
        r = await w.cycle()
        if (r.reads, r.writes, r.pending_mutations) == (1, 0, 0):
            break
    for _ in range(2):
        r = await w.cycle()
        assert (r.reads, r.writes) == (1, 0), r.summary()


async def test_import_links_to_existing_coda_rows_and_pushes_the_rest(tmp_path: Path) -> None:
    """Coda holds 130 of ~570 good rows (keyed, keyless, under another key, edited)."""
    exports = build_exports(tmp_path / "files", rows=600)
    plan = coda_plan(exports, same=80, differ=20, keyless=15, keyed_elsewhere=15)
    async with world(tmp_path) as w:
        seed_coda(w.emu, plan)
        extra = 20  # Coda rows nobody exported: they must simply be pulled
        seed_participation(w.emu, extra, rng=random.Random(3), start_year=2021)
        s = await run_import(
            w.settings, BINDING, exports.files, client=w.client, out=io.StringIO(), clock=w.clock
        )
        want = exports.expected(coda=plan)
        assert (s.inserted, s.matched, s.keys_linked) == (len(want.loaded), len(plan), 15)

        first = await w.cycle()
        assert first.stats["pushed_inserts"] == len(want.loaded) - len(plan)
        assert first.stats["pulled_inserts"] == extra
        print("first cycle after import:", first.summary())
        await settle(w)
        coda = await w.assert_converged()
        assert len(coda) == len(want.loaded) + extra
        assert max(natural_keys(coda).values()) == 1
        assert max(natural_keys(await w.local_rows()).values()) == 1

        by_nk = {(v["employee_email"], v["activity"], v["activity_date"]): v for v in coda.values()}
        for c in plan:  # the import is newer than Coda's edit: its values won
            values = by_nk[(c.row.person.email, c.row.activity, c.row.day.isoformat())]
            assert values["comment"] == c.row.comment
        for c in plan:
            if c.key is not None:
                assert c.key in coda  # linked under Coda's key, not a new one


async def test_reimporting_rows_the_daemon_already_synced_creates_nothing(tmp_path: Path) -> None:
    """An export of synced rows (CSV by name + JSON listing, some keys blanked) + 60 new rows."""
    async with world(tmp_path, seed_rows=300) as w:
        seed_participation(w.emu, 40, rng=random.Random(11), with_keys=False)
        await settle(w)
        synced = await w.assert_converged()
        rich = w.emu_rich_rows()
        counted = natural_keys(synced)
        nks = natural_keys({r["id"]: synced[_key(r)] for r in rich})
        # every third row loses its key in the export (matched by natural key or row id), if
        # its natural key is unique (a duplicated one cannot be matched without the key)
        drop = [i % 3 == 0 and nks[_nk(synced[_key(r)])] == 1 for i, r in enumerate(rich)]
        people = [
            Person(
                str(r["values"]["c-Employee1"]["name"]), str(r["values"]["c-Employee1"]["email"])
            )
            for r in rich[:50]
        ]
        names = Counter(p.name for p in people)
        people = [p for p in people if names[p.name] == 1]
        new = [
            r
            for r in make_rows(random.Random(5), people, 60, years=(2025,), key_share=0.5)
            if (r.person.email, r.activity, r.day.isoformat()) not in counted
        ]
        half = len(rich) // 2
        csv_path, json_path = tmp_path / "export.csv", tmp_path / "listing.json"
        export_csv(csv_path, rich[:half], drop_key=drop[:half], extra=new)
        export_json_pages(json_path, rich[half:], drop_key=drop[half:])

        s = await run_import(
            w.settings,
            BINDING,
            [csv_path, json_path],
            client=w.client,
            out=io.StringIO(),
            clock=w.clock,
        )
        assert s.rejected == 0, s.rejections[:3]
        assert (s.inserted, s.updated, s.unchanged) == (len(new), 0, len(rich))
        assert (s.matched, s.keys_linked, s.duplicates) == (len(rich), 0, 0)

        first = await w.cycle()
        assert first.stats["pushed_inserts"] == len(new), first.summary()
        assert first.stats["pushed_updates"] == 0 and first.stats["pulled_inserts"] == 0
        await settle(w)
        coda = await w.assert_converged()
        assert len(coda) == len(synced) + len(new)
        assert max(natural_keys(coda).values()) == max(counted.values())
        _check_new_rows(coda, new)


async def test_offline_import_of_keyed_rows_adopts_them(tmp_path: Path) -> None:
    """Offline, rows that carry their sync key are adopted by the first cycle, not duplicated."""
    async with world(tmp_path, seed_rows=200) as w:
        rich = w.emu_rich_rows()
        path = tmp_path / "listing.json"
        export_json_pages(path, rich)
        s = await run_import(
            w.settings, BINDING, [path], client=None, out=io.StringIO(), clock=w.clock
        )
        assert (s.inserted, s.matched, s.rejected) == (200, 0, 0)
        first = await w.cycle()
        assert first.stats["adopted"] == 200 and first.writes == 0, first.summary()
        await settle(w)
        assert len(await w.assert_converged()) == 200


def _key(rich_row: Mapping[str, Any]) -> str:
    key = normalize.canon_key(rich_row["values"].get(KEY_COLUMN, ""))
    assert key is not None
    return key


def _nk(values: Mapping[str, Any]) -> tuple[Any, ...]:
    return (values["employee_email"], values["activity"], values["activity_date"])


def _check_new_rows(coda: Mapping[str, Mapping[str, Any]], new: list[Row]) -> None:
    by_nk = {(v["employee_email"], v["activity"], v["activity_date"]): v for v in coda.values()}
    for row in new:
        values = by_nk[(row.person.email, row.activity, row.day.isoformat())]
        assert {k: values[k] for k in row.canonical()} == row.canonical()
        if row.key is not None:
            assert row.key in coda
