"""Acceptance criterion 3: every column type of the example binding round-trips, no write loop.

Both directions: local -> Coda -> local (the app writes, the daemon pushes, Coda parses and
re-renders, the daemon reads it back) and Coda -> local -> Coda (a person types into Coda's
UI). After convergence the values are equal in canonical form on both sides, the values the
app wrote are still there, and further cycles write nothing on either side.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from daemon import normalize
from daemon.emulator import KEY_COLUMN, EmulatorConfig
from daemon.engine import CycleResult
from tests.harness import World, world

pytestmark = pytest.mark.anyio

TEXTS = [
    "Привет, мир — ёлка",
    "emoji 🎉👩‍💻🇷🇺",
    "line one\nline two\n\nline four",
    "  leading and trailing spaces  ",
    "**bold** _it_ `code` # heading\n- item [link](https://example.com) <b>x</b> \\*",
    "```fenced```",
    "    ",
    "123",
]

# Local (SQL) rows: one tricky value per column per row; `None` = empty.
LOCAL_ROWS: list[dict[str, Any]] = [
    {
        "employee_email": "Ivan.Petrov@Example.COM",  # mixed case: canonical is lower-case
        "email": "Mixed.Case@Example.org",
        "activity": TEXTS[0],
        "activity_date": date(2024, 3, 10),  # DST starts in New York that night
        "role": "Спикер",
        "hours": 0.0,
        "confirmed": True,
        "tags": [],
        "comment": TEXTS[1],
    },
    {
        "employee_email": "new.person@example.com",  # not in Coda's people directory
        "email": None,
        "activity": TEXTS[2],
        "activity_date": date(2024, 11, 3),  # DST ends in New York
        "role": "Волонтёр",
        "hours": 1.5,
        "confirmed": False,
        "tags": ["митап"],
        "comment": TEXTS[3],
    },
    {
        "employee_email": None,
        "email": "a@b.co",
        "activity": TEXTS[4],
        "activity_date": date(2024, 2, 29),
        "role": "Новая роль",  # not an option: Coda keeps it as typed
        "hours": 2.0,
        "confirmed": None,  # unset
        "tags": ["спорт", "митап", "обучение"],  # not sorted: order must not matter
        "comment": TEXTS[5],
    },
    {
        "employee_email": "ANNA@example.com",
        "email": "anna@example.com",
        "activity": TEXTS[6],
        "activity_date": date(1999, 12, 31),
        "role": None,
        "hours": 123456789012.25,  # large
        "confirmed": True,
        "tags": ["хакатон", "волонтёрство"],
        "comment": TEXTS[7],
    },
    {
        "employee_email": None,
        "email": None,
        "activity": None,
        "activity_date": None,
        "role": None,
        "hours": None,
        "confirmed": None,
        "tags": None,
        "comment": None,
    },
    {
        "employee_email": "x@example.com",
        "email": "x@example.com",
        "activity": "big and negative",
        "activity_date": date(2026, 1, 1),
        "role": "Участник",
        "hours": 1e20,
        "confirmed": False,
        "tags": ["конференция"],
        "comment": "-0.25",
    },
]

# What a person types into Coda's UI (Coda parses it as typed).
PERSON_ROWS: list[dict[str, Any]] = [
    {
        "c-Employee1": "MARIA.SMIRNOVA@example.com",
        "c-Email0001": "Maria@Example.com",
        "c-Activity1": TEXTS[0],
        "c-ActDate01": "3/10/2024",
        "c-Role00001": "организатор",  # case-insensitive option match -> "Организатор"
        "c-Hours0001": "0",
        "c-Confirm01": "true",
        "c-Tags00001": "",
        "c-Comment01": TEXTS[1],
    },
    {
        "c-Employee1": "someone.else@example.com",
        "c-Email0001": "",
        "c-Activity1": TEXTS[2],
        "c-ActDate01": "2024-11-03",
        "c-Role00001": "Спикер",
        "c-Hours0001": "1.5",
        "c-Confirm01": False,
        "c-Tags00001": "спорт",
        "c-Comment01": TEXTS[3],
    },
    {
        "c-Employee1": "",
        "c-Email0001": "b@c.io",
        "c-Activity1": TEXTS[4],
        "c-ActDate01": "29.02.2024",
        "c-Role00001": "",
        "c-Hours0001": "1,234,567.5",
        "c-Tags00001": "спорт, митап, обучение",
        "c-Comment01": TEXTS[5],
    },
    {
        "c-Employee1": "",
        "c-Email0001": "",
        "c-Activity1": TEXTS[6],
        "c-ActDate01": "2024-03-09",
        "c-Role00001": "",
        "c-Hours0001": 2,
        "c-Confirm01": True,
        "c-Tags00001": ["хакатон", "волонтёрство", "митап"],
        "c-Comment01": TEXTS[7],
    },
    {"c-Activity1": "", "c-Comment01": ""},  # everything empty (except the key)
]


def _canon_local(w: World, row: dict[str, Any]) -> dict[str, Any]:
    values, errors = normalize.canon_row_from_sql(w.binding.columns, {"year": None, **row})
    assert not errors, errors
    return {k: v for k, v in values.items() if k != "year"}


def _writable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "year"}


async def _settle(w: World, cycles: int = 4) -> list[CycleResult]:
    results = await w.converge(cycles)
    for r in results:
        print(r.summary())
    return results


async def _assert_quiet(w: World, cycles: int = 3) -> None:
    """Nothing is written on either side any more (no echo, no loop)."""
    for _ in range(cycles):
        r = await w.cycle()
        s = r.stats
        assert r.writes == 0, r.summary()
        assert s["pulled_updates"] == s["pulled_inserts"] == s["pushed_updates"] == 0, r.summary()
        assert r.reads == 1, r.summary()
    # a full scan (reads everything again) must not find a difference either
    r = await w.cycle(full=True)
    assert r.writes == 0 and r.stats["pulled_updates"] == 0, r.summary()
    assert r.stats["quarantined"] == 0, r.summary()


@pytest.mark.parametrize("tz", ["Europe/Moscow", "America/New_York"])
async def test_local_to_coda_to_local(tmp_path: Path, db_url: str, tz: str) -> None:
    async with world(tmp_path, db_url=db_url, emulator=EmulatorConfig(doc_timezone=tz)) as w:
        keys = [await w.app_insert(row) for row in LOCAL_ROWS]
        results = await _settle(w)
        assert results[0].stats["pushed_inserts"] == len(LOCAL_ROWS)
        coda = await w.assert_converged()
        local = await w.local_rows()
        for key, row in zip(keys, LOCAL_ROWS, strict=True):
            expected = _canon_local(w, row)
            assert _writable(coda[key]) == expected, (key, coda[key], expected)
            assert _writable(local[key]) == expected
            year = row["activity_date"].year if row["activity_date"] else None
            assert local[key]["year"] == (str(year) if year else None)  # computed by Coda
        # spot checks on the canonical forms
        first = coda[keys[0]]
        assert first["employee_email"] == "ivan.petrov@example.com"
        assert first["activity_date"] == "2024-03-10"
        assert coda[keys[2]]["tags"] == ("митап", "обучение", "спорт")
        assert coda[keys[2]]["confirmed"] is False
        assert coda[keys[3]]["hours"] == "123456789012.25"
        assert coda[keys[5]]["hours"] == "100000000000000000000"
        assert coda[keys[4]] == {**dict.fromkeys(coda[keys[4]]), "confirmed": False}
        await _assert_quiet(w)


@pytest.mark.parametrize("tz", ["Europe/Moscow", "America/New_York"])
async def test_coda_to_local_to_coda(tmp_path: Path, db_url: str, tz: str) -> None:
    async with world(tmp_path, db_url=db_url, emulator=EmulatorConfig(doc_timezone=tz)) as w:
        w.emu.people.add("maria.smirnova@example.com", "Мария Смирнова")
        keys = []
        for cells in PERSON_ROWS:
            key = str(uuid.UUID(int=w.rng.getrandbits(128), version=4))
            w.person_insert({KEY_COLUMN: key, **cells})
            keys.append(key)
        before = w.coda_rows()
        results = await _settle(w)
        assert results[0].stats["pulled_inserts"] == len(PERSON_ROWS)
        assert sum(r.writes for r in results) == 0  # nothing to push back
        coda = await w.assert_converged()
        assert coda == before  # Coda unchanged by the round trip
        assert coda[keys[0]]["employee_email"] == "maria.smirnova@example.com"
        assert coda[keys[0]]["role"] == "Организатор"
        assert coda[keys[0]]["activity_date"] == "2024-03-10"
        assert coda[keys[2]]["activity_date"] == "2024-02-29"
        assert coda[keys[2]]["hours"] == "1234567.5"
        assert coda[keys[2]]["tags"] == ("митап", "обучение", "спорт")
        assert coda[keys[3]]["tags"] == ("волонтёрство", "митап", "хакатон")
        assert coda[keys[4]]["confirmed"] is False
        # ... and back: the app edits every row it received; each edit reaches Coda once.
        for key in keys:
            await w.app_upsert(key, {"comment": TEXTS[2], "tags": ["спорт"], "hours": 0.5})
        results = await _settle(w, 3)
        assert sum(r.stats["pushed_updates"] for r in results) == len(keys)
        coda = await w.assert_converged()
        for key in keys:
            assert coda[key]["comment"] == TEXTS[2]
            assert coda[key]["tags"] == ("спорт",)
            assert coda[key]["hours"] == "0.5"
        await _assert_quiet(w)


async def test_dst_dates_in_new_york(tmp_path: Path, db_url: str) -> None:
    """Every day around both 2024 DST switches keeps its calendar day both ways."""
    days = [date(2024, 3, d) for d in range(8, 13)] + [date(2024, 11, d) for d in range(1, 6)]
    emu = EmulatorConfig(doc_timezone="America/New_York")
    async with world(tmp_path, db_url=db_url, emulator=emu) as w:
        local_keys = [await w.app_insert({"activity_date": d}) for d in days]
        coda_keys = []
        for d in days:
            key = str(uuid.UUID(int=w.rng.getrandbits(128), version=4))
            w.person_insert({KEY_COLUMN: key, "c-ActDate01": d.isoformat()})
            coda_keys.append(key)
        await _settle(w)
        coda = await w.assert_converged()
        for keys in (local_keys, coda_keys):
            assert [coda[k]["activity_date"] for k in keys] == [d.isoformat() for d in days]
            assert [coda[k]["year"] for k in keys] == ["2024"] * len(days)
        await _assert_quiet(w)
