"""Realistic import files for the importer tests, generated into a test's tmp_path.

`build_exports(directory, rows=5000)` writes what HR people actually hand over for the
Participation binding, with the mistakes they actually make, and records for every data row
where it is (file:line as the importer reports it) and what must become of it:

    participation-export.csv      Coda CSV export: BOM, CRLF, `,`, display-name headers,
                                  M/D/YYYY dates, people as names, a "Год" column, one
                                  comment spanning two lines (physical line numbers shift)
    participation-semicolon.csv   Excel-style: `;`, LF, no BOM, ISO and DD.MM.YYYY dates,
                                  people as emails or names, an unmapped "Отдел" column
    listing-rich.json             API listing saved page by page: [{"items": [...]}, ...],
                                  valueFormat=rich, values keyed by column id, row ids
    listing-simple.json           one page {"items": [...]}, valueFormat=simple,
                                  useColumnNames (values keyed by display name)

Bad rows: unreadable dates, unknown select options, empty activity / employee without a sync
key, unknown and ambiguous names, a bad number, a bad checkbox, a row with stray cells.
Duplicates: good rows repeated later (same natural key, same key or none). `ExportSet.expected`
computes the summary an import must print (with --year, online or offline, and with some rows
already in Coda: `coda_plan` / `seed_coda`).
"""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from daemon.emulator.cells import Person as EmuPerson
from daemon.emulator.seed import KEY_COLUMN, ROLES, TABLE_ID, TAGS

COLUMN_NAMES = {
    "c-SyncKey01": "Ключ синхронизации",
    "c-Employee1": "Сотрудник",
    "c-Email0001": "Email",
    "c-Activity1": "Мероприятие",
    "c-ActDate01": "Дата",
    "c-Role00001": "Роль",
    "c-Hours0001": "Часы",
    "c-Confirm01": "Подтверждено",
    "c-Tags00001": "Теги",
    "c-Comment01": "Комментарий",
    "c-Year00001": "Год",
}
ACTIVITIES = (
    "Конференция HighLoad++",
    "Митап Python Moscow",
    "Хакатон «Цифровой HR»",
    "Субботник в парке",
    "Корпоративный забег",
    "Курс по управлению проектами",
    "Team offsite",
    "Donor day",
    "Tech talk: SQL performance",
    "Турнир по настольному теннису",
    "Лекция «Право, этика, ИИ»",
    "Школа наставников",
)
COMMENTS = (
    "Выступил с докладом",
    "Помогала с регистрацией",
    "Нужна справка для бухгалтерии",
    "Joined remotely",
    'Сказал: "приду ещё", с друзьями',
    "Часы согласованы с руководителем",
)
_FIRST = tuple("Иван Мария Алексей Ольга Дмитрий Анна Сергей Екатерина Павел Юлия".split())
_FIRST += ("John", "Emily", "Peter", "Laura")
_LAST = tuple("Петров Смирнов Кузнецов Попов Соколов Новиков Морозов Волков Smith Brown".split())
_TRANSLIT = str.maketrans(
    dict(zip("абвгдеёзийклмнопрстуфхыэ", "abvgdeeziyklmnoprstufhye", strict=True))
    | {
        "ж": "zh",
        "ц": "ts",
        "ч": "ch",
        "ш": "sh",
        "щ": "sch",
        "ю": "yu",
        "я": "ya",
        "ь": "",
        "ъ": "",
    }
)
NAMESAKE = "Иван Петров"
UNKNOWN_NAME = "Неизвестный Сотрудник"
TZ_OFFSET = "+03:00"  # the emulator's doc is in Europe/Moscow


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Row:
    """One participation as the files carry it (`key` None = the file has no sync key)."""

    key: str | None
    person: Person
    activity: str
    day: date
    role: str
    hours: float
    confirmed: bool | None
    tags: tuple[str, ...]
    comment: str | None

    def canonical(self) -> dict[str, Any]:
        """The canonical values the importer must store (writable columns)."""
        hours = str(int(self.hours)) if self.hours == int(self.hours) else repr(self.hours)
        return {
            "employee_email": self.person.email,
            "email": self.person.email,
            "activity": self.activity,
            "activity_date": self.day.isoformat(),
            "role": self.role,
            "hours": hours,
            "confirmed": bool(self.confirmed),
            "tags": tuple(sorted(self.tags)) or None,
            "comment": self.comment,
        }

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return (self.person.email, self.activity.casefold(), self.day.isoformat())


@dataclass(slots=True)
class Entry:
    """One data row written to a file, and its fate."""

    file: str
    where: str
    row: Row
    outcome: str
    """good | dup | bad | bad_option (bad only when Coda's select options are known)."""
    reason: str = ""
    date_ok: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    """Column id -> the raw cell written instead of the row's value."""

    @property
    def year(self) -> int | None:
        return self.row.day.year if self.date_ok else None


@dataclass(slots=True)
class Counts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    matched: int = 0
    keys_linked: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    rejected_where: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    """where -> a substring of the reason the importer must give."""
    loaded: list[Row] = field(default_factory=list)


@dataclass(slots=True)
class CodaRow:
    """A row seeded into the emulator: `row` with `key` (None = keyless) and maybe edits."""

    row: Row
    key: str | None
    comment: str | None


@dataclass(slots=True)
class ExportSet:
    directory: Path
    files: list[Path]
    entries: list[Entry]
    people: list[Person]

    def good_rows(self) -> list[Row]:
        return [e.row for e in self.entries if e.outcome == "good"]

    def expected(
        self,
        *,
        year: int | None = None,
        online: bool = True,
        coda: Sequence[CodaRow] = (),
        local: Sequence[Row] = (),
    ) -> Counts:
        """The summary of importing every file in order (see `importer` for the rules)."""
        c = Counts()
        in_coda = {r.row.natural_key: r for r in coda}
        in_local = {r.natural_key: r for r in local}
        for e in self.entries:
            c.read += 1
            bad = e.outcome == "bad" or (e.outcome == "bad_option" and online)
            if not e.date_ok:
                c.rejected += 1
                c.rejected_where.append(e.where)
                c.reasons[e.where] = e.reason
            elif year is not None and e.year != year:
                c.skipped += 1
            elif bad:
                c.rejected += 1
                c.rejected_where.append(e.where)
                c.reasons[e.where] = e.reason
            elif e.outcome == "dup":
                c.duplicates += 1
            else:
                c.loaded.append(e.row)
                old = in_local.get(e.row.natural_key)
                if old is None:
                    c.inserted += 1
                elif old.canonical() == e.row.canonical():
                    c.unchanged += 1
                else:
                    c.updated += 1
                hit = in_coda.get(e.row.natural_key) if online else None
                if hit is not None:
                    c.matched += 1
                    c.keys_linked += hit.key is None
        return c


# --------------------------------------------------------------------------- rendering


def _coda_date(day: date) -> str:
    return f"{day.isoformat()}T00:00:00.000{TZ_OFFSET}"


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def csv_cells(row: Row, *, date_style: str, person_style: str) -> dict[str, str]:
    """The row as Coda prints it in a CSV export, by column id."""
    d = row.day
    day = {
        "mdy": f"{d.month}/{d.day}/{d.year}",
        "iso": d.isoformat(),
        "dmy": f"{d.day:02d}.{d.month:02d}.{d.year}",
    }[date_style]
    confirmed = "" if row.confirmed is None else str(row.confirmed).lower()
    return {
        "c-SyncKey01": row.key or "",
        "c-Employee1": row.person.name if person_style == "name" else row.person.email,
        "c-Email0001": row.person.email,
        "c-Activity1": row.activity,
        "c-ActDate01": day,
        "c-Role00001": row.role,
        "c-Hours0001": _number(row.hours),
        "c-Confirm01": confirmed,
        "c-Tags00001": ", ".join(row.tags),
        "c-Comment01": row.comment or "",
        "c-Year00001": str(d.year),
    }


def rich_values(row: Row) -> dict[str, Any]:
    """The row as a rich listing returns it (text fenced, people as Person objects)."""
    person = {
        "@context": "http://schema.org/",
        "@type": "Person",
        "name": row.person.name,
        "email": row.person.email,
    }
    return {
        "c-SyncKey01": f"```{row.key}```" if row.key else "",
        "c-Employee1": person,
        "c-Email0001": row.person.email,
        "c-Activity1": f"```{row.activity}```",
        "c-ActDate01": _coda_date(row.day),
        "c-Role00001": row.role,
        "c-Hours0001": row.hours if row.hours != int(row.hours) else int(row.hours),
        "c-Confirm01": "" if row.confirmed is None else row.confirmed,
        "c-Tags00001": list(row.tags) if row.tags else "",
        "c-Comment01": f"```{row.comment}```" if row.comment else "",
        "c-Year00001": row.day.year,
    }


def simple_values(row: Row) -> dict[str, Any]:
    """The row as a simple listing with useColumnNames returns it."""
    values = rich_values(row)
    values["c-SyncKey01"] = row.key or ""
    values["c-Employee1"] = row.person.name
    values["c-Activity1"] = row.activity
    values["c-Tags00001"] = ",".join(row.tags)
    values["c-Comment01"] = row.comment or ""
    return {COLUMN_NAMES[k]: v for k, v in values.items()}


def _row_json(n: int, values: dict[str, Any], row_id: str, name: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "type": "row",
        "index": n,
        "name": name,
        "href": f"https://coda.io/apis/v1/docs/Hr7-PaRtc1/tables/{TABLE_ID}/rows/{row_id}",
        "createdAt": "2024-02-01T10:00:00.000Z",
        "updatedAt": "2024-03-01T10:00:00.000Z",
        "browserLink": f"https://coda.io/d/_dHr7-PaRtc1#_r{n}",
        "values": values,
    }


def write_csv(
    path: Path,
    entries: Sequence[Entry],
    *,
    columns: Sequence[str],
    extra: dict[str, str],
    delimiter: str,
    bom: bool,
    crlf: bool,
    date_style: str,
    person_style: str,
) -> None:
    """Write a CSV export and fill in each entry's `where` (its physical start line)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n")
    writer.writerow([COLUMN_NAMES[c] for c in columns] + list(extra))
    line = buf.getvalue().count("\n") + 1
    for e in entries:
        style = e.overrides.pop("_date_style", date_style)
        pstyle = e.overrides.pop("_person_style", person_style)
        cells = csv_cells(e.row, date_style=style, person_style=pstyle) | e.overrides
        record = [cells.get(c, "") for c in columns] + list(extra.values())
        if "_stray" in e.overrides:
            record += ["", "лишнее"]
        start = len(buf.getvalue())
        writer.writerow(record)
        e.where = f"{path}:{line}"
        line += buf.getvalue()[start:].count("\n")
    data = ("\ufeff" if bom else "") + buf.getvalue()
    path.write_bytes(data.encode("utf-8"))


def write_rich_pages(path: Path, entries: Sequence[Entry], *, page_size: int = 500) -> None:
    """A rich listing saved page by page, values by column id."""
    rows = []
    for n, e in enumerate(entries, start=1):
        rid = f"i-imp{n:05d}"
        rows.append(_row_json(n, rich_values(e.row) | e.overrides, rid, e.row.activity))
        e.where = f"{path} row {n} (id {rid})"
    pages = [
        {"items": rows[i : i + page_size], "href": "…"} for i in range(0, len(rows), page_size)
    ]
    path.write_text(json.dumps(pages, ensure_ascii=False, indent=1), encoding="utf-8")


def write_simple_page(path: Path, entries: Sequence[Entry]) -> None:
    """A simple listing (useColumnNames) saved as one page object."""
    rows = []
    for n, e in enumerate(entries, start=1):
        rid = f"i-smp{n:05d}"
        over = {COLUMN_NAMES[k]: v for k, v in e.overrides.items()}
        rows.append(_row_json(n, simple_values(e.row) | over, rid, e.row.activity))
        e.where = f"{path} row {n} (id {rid})"
    path.write_text(json.dumps({"items": rows}, ensure_ascii=False), encoding="utf-8")


# --------------------------------------------------------------------------- generation


def make_people(rng: random.Random, count: int) -> list[Person]:
    """`count` people with unique emails, plus a namesake pair (two "Иван Петров")."""
    people = [
        Person(NAMESAKE, "ivan.petrov@example.com"),
        Person(NAMESAKE, "ivan.petrov2@example.com"),
    ]
    names = {NAMESAKE}
    while len(people) < count:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        if name in names:
            continue
        names.add(name)
        first, last = name.lower().translate(_TRANSLIT).split()
        people.append(Person(name, f"{first}.{last}@example.com"))
    return people


def make_rows(
    rng: random.Random,
    people: Sequence[Person],
    count: int,
    years: Sequence[int] = (2023, 2024),
    key_share: float = 0.6,
) -> list[Row]:
    """`count` rows with unique natural keys; every person appears (the first rows)."""
    rows: list[Row] = []
    seen: set[tuple[str, str, str]] = set()
    while len(rows) < count:
        person = people[len(rows)] if len(rows) < len(people) else rng.choice(people)
        year = years[len(rows) % len(years)]
        day = date(year, 1, 1) + timedelta(days=rng.randrange(365))
        confirm = rng.random()
        row = Row(
            key=str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if rng.random() < key_share
            else None,
            person=person,
            activity=rng.choice(ACTIVITIES),
            day=day,
            role=rng.choice(ROLES[:1] * 6 + ROLES[1:]),
            hours=rng.choice((1, 1.5, 2, 3, 4, 8)),
            confirmed=True if confirm < 0.7 else False if confirm < 0.9 else None,
            tags=tuple(sorted(rng.sample(TAGS, rng.choice((0, 1, 1, 2))))),
            comment=rng.choice((None, None, *COMMENTS)),
        )
        if row.natural_key in seen:
            continue
        seen.add(row.natural_key)
        rows.append(row)
    return rows


def _bad_entries(rows: Sequence[Row], people: Sequence[Person]) -> list[tuple[str, Entry]]:
    """(file slot, entry) for every kind of bad row; slots: csv1 csv2 rich simple."""
    namesake = next(p for p in people if p.name == NAMESAKE)
    opt, date_bad = "bad_option", False
    # slot, row changes, the cells written instead, reason (a substring), outcome, date ok
    table: list[tuple[str, dict[str, Any], dict[str, Any], str, str, bool]] = [
        ("csv1", {}, {"c-ActDate01": "31/31/2023"}, "as a date", "bad", date_bad),
        ("csv1", {}, {"c-ActDate01": "завтра"}, "as a date", "bad", date_bad),
        ("csv2", {}, {"c-ActDate01": "2024-13-01"}, "as a date", "bad", date_bad),
        ("simple", {}, {"c-ActDate01": "not a date"}, "as a date", "bad", date_bad),
        ("csv1", {}, {"c-Role00001": "Зритель"}, "not an option", opt, True),
        ("csv2", {}, {"c-Role00001": "гость"}, "'гость' is not an option", opt, True),
        ("rich", {}, {"c-Tags00001": ["спорт", "кулинария"]}, "'кулинария' is not an", opt, True),
        ("simple", {}, {"c-Role00001": "Гость"}, "not an option", opt, True),
        ("csv1", {"key": None}, {"c-Activity1": ""}, "column(s) activity empty", "bad", True),
        ("rich", {"key": None}, {"c-Activity1": ""}, "column(s) activity empty", "bad", True),
        (
            "csv2",
            {"key": None},
            {"c-Employee1": "", "c-Email0001": ""},
            "employee_email empty",
            "bad",
            True,
        ),
        ("simple", {"key": None}, {"c-Employee1": ""}, "employee_email empty", "bad", True),
        ("csv1", {}, {"c-Employee1": UNKNOWN_NAME}, "not a known name", "bad", True),
        ("simple", {}, {"c-Employee1": UNKNOWN_NAME}, "not a known name", "bad", True),
        ("csv1", {"person": namesake}, {"c-Email0001": ""}, "is ambiguous", "bad", True),
        ("csv1", {}, {"c-Hours0001": "полтора"}, "as a number", "bad", True),
        ("csv2", {}, {"c-Confirm01": "да"}, "as a checkbox", "bad", True),
        ("csv2", {}, {"_stray": True}, "cells but", "bad", date_bad),  # its columns are unsure
    ]
    return [
        (slot, Entry("", "", replace(rows[i], **changes), outcome, reason, date_ok, dict(cells)))
        for i, (slot, changes, cells, reason, outcome, date_ok) in enumerate(table)
    ]


def build_exports(directory: Path, *, rows: int = 5000, seed: int = 2024) -> ExportSet:
    """Write the four export files (about `rows` data rows in all) and say what is in them."""
    rng = random.Random(seed)
    people = make_people(rng, max(10, min(120, rows // 10)))  # all appear in the rich file
    n_dup = rows // 125
    bad_specs = _bad_entries(make_rows(random.Random(seed + 1), people, 20, key_share=1.0), people)
    n_good = rows - n_dup - len(bad_specs)
    universe = make_rows(rng, people, n_good)
    slots: dict[str, list[Entry]] = {"rich": [], "csv1": [], "csv2": [], "simple": []}
    shares = (("rich", 0.2), ("csv1", 0.36), ("csv2", 0.24), ("simple", 0.2))
    start = 0
    for slot, share in shares:
        count = round(n_good * share) if slot != "simple" else n_good - start
        slots[slot] = [Entry("", "", r, "good") for r in universe[start : start + count]]
        start += count
    # namesakes resolved through the Email column
    for e in slots["csv1"][5:8]:
        e.row = replace(e.row, person=people[1])
    # duplicates: earlier good rows repeated in later files (same date, same key or none)
    later = ("csv2", "simple")
    picks = rng.sample(range(len(slots["rich"]) + len(slots["csv1"])), n_dup)
    for i, pick in enumerate(picks):
        src = (slots["rich"] + slots["csv1"])[pick]
        row = src.row if i % 3 else replace(src.row, comment="исправлено")  # key dup, edited
        if i % 5 == 0:
            row = replace(row, key=None)  # natural-key dup without key
        slots[later[i % 2]].append(Entry("", "", row, "dup"))
    for slot, entry in bad_specs:
        position = rng.randrange(len(slots[slot]) // 2, len(slots[slot]))
        slots[slot].insert(position, entry)
    for i, e in enumerate(slots["csv2"]):  # a few DD.MM.YYYY dates and names in this file
        if e.outcome == "good" and i % 50 == 1:  # an option in another case: Coda's spelling
            e.overrides.setdefault("c-Role00001", e.row.role.lower())
        if e.outcome == "good" and i % 10 == 0:
            e.overrides.setdefault("_date_style", "dmy")
        if e.outcome == "good" and i % 7 == 0:
            e.overrides.setdefault("_person_style", "name")
    multiline = next(e for e in slots["csv1"][10:] if e.outcome == "good")
    multiline.row = replace(multiline.row, comment="Выступил с докладом,\nпровёл воркшоп")
    return _write(directory, people, slots)


def _write(directory: Path, people: list[Person], slots: dict[str, list[Entry]]) -> ExportSet:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "rich": directory / "listing-rich.json",
        "csv1": directory / "participation-export.csv",
        "csv2": directory / "participation-semicolon.csv",
        "simple": directory / "listing-simple.json",
    }
    all_ids = list(COLUMN_NAMES)
    write_rich_pages(files["rich"], slots["rich"])
    write_csv(
        files["csv1"],
        slots["csv1"],
        columns=all_ids,
        extra={},
        delimiter=",",
        bom=True,
        crlf=True,
        date_style="mdy",
        person_style="name",
    )
    write_csv(
        files["csv2"],
        slots["csv2"],
        columns=all_ids[:-1],
        extra={"Отдел": "HR"},
        delimiter=";",
        bom=False,
        crlf=False,
        date_style="iso",
        person_style="email",
    )
    write_simple_page(files["simple"], slots["simple"])
    entries = [e for slot in ("rich", "csv1", "csv2", "simple") for e in slots[slot]]
    for slot, path in files.items():
        for e in slots[slot]:
            e.file = str(path)
    return ExportSet(directory, list(files.values()), entries, people)


# --------------------------------------------------------------------------- Coda side


def coda_plan(
    export: ExportSet,
    *,
    seed: int = 7,
    same: int = 400,
    differ: int = 100,
    keyless: int = 100,
    keyed_elsewhere: int = 50,
) -> list[CodaRow]:
    """Which good rows Coda already holds, and how.

    same: with the file's key and equal values; differ: same key, another comment; keyless:
    rows without a key in the file that people typed into Coda (no key there either; every
    other one with another comment); keyed_elsewhere: rows without a key in the file that
    Coda holds under a key.
    """
    rng = random.Random(seed)
    good = [e.row for e in export.entries if e.outcome == "good"]
    keyed = [r for r in good if r.key]
    unkeyed = [r for r in good if not r.key]
    rng.shuffle(keyed)
    rng.shuffle(unkeyed)
    plan = [CodaRow(r, r.key, r.comment) for r in keyed[:same]]
    plan += [CodaRow(r, r.key, "изменено в Coda") for r in keyed[same : same + differ]]
    plan += [  # keyless, half of them edited in Coda since the export
        CodaRow(r, None, r.comment if i % 2 else "изменено в Coda")
        for i, r in enumerate(unkeyed[:keyless])
    ]
    plan += [
        CodaRow(r, str(uuid.UUID(int=rng.getrandbits(128), version=4)), r.comment)
        for r in unkeyed[keyless : keyless + keyed_elsewhere]
    ]
    return plan


def seed_coda(emu: Any, plan: Sequence[CodaRow]) -> list[str]:
    """Load planned rows into the emulator's Participation table; returns their row ids."""
    cells = []
    for i, c in enumerate(plan):
        r = c.row
        person: EmuPerson = emu.people.add(r.person.email, r.person.name)
        row: dict[str, Any] = {
            "c-Employee1": person,
            "c-Email0001": r.person.email,
            "c-Activity1": r.activity,
            "c-ActDate01": r.day,
            "c-Role00001": r.role,
            "c-Hours0001": r.hours,
            "c-Tags00001": r.tags or None,
            "c-Comment01": c.comment,
            KEY_COLUMN: c.key,
            "c-Confirm01": r.confirmed,
        }
        created = 1_700_000_000_000 + i * 1000
        cells.append((created, created + 500, row))
    return list(emu.load_rows(TABLE_ID, cells))


# --------------------------------------------------------------------------- exporting Coda


def _unfence(text: str) -> str:
    fenced = len(text) >= 6 and text.startswith("```") and text.endswith("```")
    return text[3:-3] if fenced else text


def printed(column: str, value: Any) -> str:
    """A rich cell of the Participation table as Coda prints it in a CSV export."""
    if value == "" or value is None:
        return ""
    if column == "c-Employee1":
        return str(value["name"])
    if column == "c-ActDate01":
        d = date.fromisoformat(str(value)[:10])
        return f"{d.month}/{d.day}/{d.year}"
    if column == "c-Confirm01":
        return str(value).lower()
    if column == "c-Tags00001":
        return ", ".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return _number(value)
    return _unfence(str(value))


def export_csv(
    path: Path,
    rich_rows: Sequence[dict[str, Any]],
    *,
    drop_key: Sequence[bool] = (),
    extra: Sequence[Row] = (),
) -> None:
    """Rows read from Coda (rich) as a Coda CSV export (`drop_key[i]`: key cell left blank),
    followed by `extra` new rows (people by name)."""
    columns = list(COLUMN_NAMES)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([COLUMN_NAMES[c] for c in columns])
    for i, row in enumerate(rich_rows):
        cells = {c: printed(c, row["values"].get(c, "")) for c in columns}
        if i < len(drop_key) and drop_key[i]:
            cells[KEY_COLUMN] = ""
        writer.writerow([cells[c] for c in columns])
    for r in extra:
        cells = csv_cells(r, date_style="mdy", person_style="name")
        writer.writerow([cells[c] for c in columns])
    path.write_bytes(("\ufeff" + buf.getvalue()).encode("utf-8"))


def export_json_pages(
    path: Path,
    rich_rows: Sequence[dict[str, Any]],
    *,
    drop_key: Sequence[bool] = (),
    page_size: int = 100,
) -> None:
    """Rows read from Coda (rich) saved as listing pages (`drop_key[i]`: key cell blank)."""
    items = []
    for i, row in enumerate(rich_rows):
        values = dict(row["values"])
        if i < len(drop_key) and drop_key[i]:
            values[KEY_COLUMN] = ""
        items.append({"id": row["id"], "type": "row", "values": values})
    pages = [{"items": items[i : i + page_size]} for i in range(0, len(items), page_size)]
    path.write_text(json.dumps(pages, ensure_ascii=False), encoding="utf-8")
