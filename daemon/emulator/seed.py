"""The HR doc the emulator serves, and realistic sample rows for its Participation table.

Doc "Hr7-PaRtc1" ("HR: Участие") has one base table `grid-PaRtc1pnt` ("Участие") and one
view `table-PaRtc1vw1` on it (the view hides the comment column). `participation_doc` builds
the schema; `seed_participation` fills rows (names, emails, dates, hours, tags) from a seeded
rng so that every run with the same seed produces the same doc.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from daemon.emulator.model import ColumnSpec, DocSpec, PageSpec, TableSpec
from daemon.emulator.values import Cell, Person

if TYPE_CHECKING:
    from daemon.emulator.state import EmulatorState

DOC_ID = "Hr7-PaRtc1"
TABLE_ID = "grid-PaRtc1pnt"
VIEW_ID = "table-PaRtc1vw1"
KEY_COLUMN = "c-SyncKey01"
ROLES = ("Участник", "Спикер", "Организатор", "Волонтёр")
TAGS = ("обучение", "конференция", "митап", "спорт", "волонтёрство", "хакатон")

_ROLE_POOL = (ROLES[0],) * 7 + ROLES[1:]  # 70 % participants
_RU_FIRST = (
    ("Иван", "ivan"), ("Мария", "maria"), ("Алексей", "aleksey"), ("Ольга", "olga"),
    ("Дмитрий", "dmitry"), ("Анна", "anna"), ("Сергей", "sergey"), ("Екатерина", "ekaterina"),
    ("Николай", "nikolay"), ("Татьяна", "tatiana"), ("Павел", "pavel"), ("Юлия", "yulia"),
)  # fmt: skip
_RU_LAST = (
    ("Петров", "petrov"), ("Смирнов", "smirnov"), ("Кузнецов", "kuznetsov"), ("Попов", "popov"),
    ("Васильев", "vasiliev"), ("Соколов", "sokolov"), ("Михайлов", "mikhailov"),
    ("Новиков", "novikov"), ("Фёдоров", "fedorov"), ("Морозов", "morozov"),
)  # fmt: skip
_EN_FIRST = ("John", "Emily", "Michael", "Sarah", "David", "Laura", "James", "Anna", "Peter")
_EN_LAST = ("Smith", "Johnson", "Brown", "Taylor", "Wilson", "Clark", "Walker", "Young")
_ACTIVITIES = (
    ("Конференция HighLoad++", ("конференция", "обучение")),
    ("Митап Python Moscow", ("митап", "обучение")),
    ("Хакатон «Цифровой HR»", ("хакатон",)),
    ("Субботник в парке", ("волонтёрство", "спорт")),
    ("Корпоративный забег", ("спорт",)),
    ("Курс по управлению проектами", ("обучение",)),
    ("Team offsite 2024", ("конференция",)),
    ("Donor day", ("волонтёрство",)),
    ("Tech talk: SQL performance", ("митап", "обучение")),
    ("Новогодний турнир по настольному теннису", ("спорт",)),
)
_COMMENTS = (
    "Выступил с докладом",
    "Помогала с регистрацией",
    "Нужна справка для бухгалтерии",
    "Перенесено с прошлого квартала",
    "Joined remotely",
    "Certificate received",
    "Часы согласованы с руководителем",
)


def _col(cid: str, name: str, kind: Any, **extra: Any) -> ColumnSpec:
    return ColumnSpec(id=cid, name=name, type=kind, **extra)


def participation_columns(
    doc_id: str = DOC_ID, base_url: str = "https://coda.io"
) -> tuple[ColumnSpec, ...]:
    """The Participation table's columns (display column: "Мероприятие")."""
    people_table = {
        "id": "Global-Document-People",
        "type": "table",
        "tableType": "table",
        "href": f"{base_url}/apis/v1/docs/{doc_id}/tables/Global-Document-People",
        "browserLink": f"{base_url}/d/_d{doc_id}#_tuGlobal-Document-People",
        "name": "_Global Document People",
    }
    number1 = {"precision": 1, "useThousandsSeparator": False}
    email_format = {"display": "iconAndEmail", "autocomplete": True}
    return (
        _col("c-SyncKey01", "Ключ синхронизации", "text"),
        _col("c-Employee1", "Сотрудник", "person", ref_table=people_table),
        _col("c-Email0001", "Email", "email", format_extra=email_format),
        _col("c-Activity1", "Мероприятие", "text", display=True),
        _col("c-ActDate01", "Дата", "date", format_extra={"format": "DD.MM.YYYY"}),
        _col("c-Role00001", "Роль", "select", options=ROLES),
        _col("c-Hours0001", "Часы", "number", format_extra=number1),
        _col("c-Confirm01", "Подтверждено", "checkbox", format_extra={"displayType": "check"}),
        _col("c-Tags00001", "Теги", "select", is_array=True, options=TAGS),
        _col("c-Comment01", "Комментарий", "text"),
        _col(
            "c-Year00001", "Год", "number", formula="Year(thisRow.Дата)",
            format_extra={"precision": 0, "useThousandsSeparator": False},
        ),
    )  # fmt: skip


def participation_doc(
    *, owner_email: str, owner_name: str, base_url: str = "https://coda.io"
) -> tuple[DocSpec, list[TableSpec]]:
    """The doc and its tables (base table first, then the view)."""
    created = int(datetime(2022, 12, 1, 9, 30, tzinfo=UTC).timestamp() * 1000)
    doc = DocSpec(DOC_ID, "HR: Участие", owner_email, owner_name, created_ms=created)
    page = PageSpec("canvas-PaRtc1pg1", "Участие в мероприятиях")
    columns = participation_columns(DOC_ID, base_url)
    base = TableSpec(TABLE_ID, "Участие", "table", page, columns, "c-Activity1", created, TABLE_ID)
    view = TableSpec(
        VIEW_ID,
        "Участие — отчёт",
        "view",
        page,
        columns,
        "c-Activity1",
        created + 3_600_000,
        TABLE_ID,
        hidden_column_ids=frozenset({"c-Comment01"}),
    )
    return doc, [base, view]


def _people(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(display name, email) pairs, Russian and English, unique emails."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < count:
        if rng.random() < 0.7:
            (first, first_en), (last, last_en) = rng.choice(_RU_FIRST), rng.choice(_RU_LAST)
            if first_en.endswith("a") or first_en in ("olga", "yulia"):
                last, last_en = last + "а", last_en + "a"
            name, email = f"{first} {last}", f"{first_en}.{last_en}@example.com"
        else:
            first_s, last_s = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
            name, email = f"{first_s} {last_s}", f"{first_s}.{last_s}@example.com".lower()
        if email in seen:  # namesakes get a numbered address, as mail admins do
            local, domain = email.split("@")
            number = 2
            while f"{local}{number}@{domain}" in seen:
                number += 1
            email = f"{local}{number}@{domain}"
        seen.add(email)
        out.append((name, email))
    return out


def seed_participation(
    state: EmulatorState,
    n_rows: int,
    *,
    rng: random.Random,
    with_keys: bool = True,
    start_year: int = 2023,
) -> list[str]:
    """Fill the Participation table with `n_rows` rows; returns their ids (creation order).

    Rows are created and edited in the past (createdAt ascending from January of `start_year`,
    updatedAt between createdAt and a day ago, half of them never edited); event dates spread
    from `start_year` to 2026; every row has a sync key (uuid4 from `rng`) when `with_keys`.
    The people directory is filled with everyone who appears in the "Сотрудник" column.
    """
    people = [
        state.people.add(email, name) for name, email in _people(rng, max(8, min(400, n_rows // 5)))
    ]
    now_ms = int(state.clock.now().timestamp() * 1000)
    first_ms = int(datetime(start_year, 1, 1, tzinfo=UTC).timestamp() * 1000)
    last_ms = max(first_ms + 1, now_ms - 86_400_000)
    created = sorted(rng.randrange(first_ms, last_ms) for _ in range(n_rows))
    span_days = (date(2026, 12, 31) - date(start_year, 1, 1)).days
    rows: list[tuple[int, int, dict[str, Cell]]] = []
    for created_ms in created:
        updated_ms = created_ms
        if rng.random() < 0.5:
            updated_ms = rng.randrange(created_ms, last_ms + 1)
        rows.append(
            (created_ms, updated_ms, _row_cells(rng, people, start_year, span_days, with_keys))
        )
    return state.load_rows(TABLE_ID, rows)


def _row_cells(
    rng: random.Random, people: list[Person], start_year: int, span_days: int, with_keys: bool
) -> dict[str, Cell]:
    person = rng.choice(people)
    activity, activity_tags = rng.choice(_ACTIVITIES)
    tags = set(rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3))))
    if tags and activity_tags[0] not in tags and rng.random() < 0.7:
        tags.discard(min(tags))
        tags.add(activity_tags[0])
    cells: dict[str, Cell] = {
        "c-Employee1": person,
        "c-Email0001": person.email or "",
        "c-Activity1": activity,
        "c-ActDate01": date(start_year, 1, 1) + timedelta(days=rng.randrange(span_days + 1)),
        "c-Role00001": rng.choice(_ROLE_POOL),
        "c-Hours0001": rng.choice((1, 1.5, 2, 2, 3, 4, 6, 8)),
    }
    confirm = rng.random()
    if confirm < 0.7:
        cells["c-Confirm01"] = True
    elif confirm < 0.85:
        cells["c-Confirm01"] = False
    if tags:
        cells["c-Tags00001"] = tuple(t for t in TAGS if t in tags)
    if rng.random() < 0.6:
        cells["c-Comment01"] = rng.choice(_COMMENTS)
    if with_keys:
        cells[KEY_COLUMN] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return cells
