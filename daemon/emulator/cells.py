"""Typed cell values and what parsing/rendering need from the doc.

A cell is stored typed (`Cell`): str, int/float, bool, `date` (date columns), aware UTC
`datetime` (dateTime), `time`, `Person`, `Link`, `RowRef`, `Raw` (stored as given), a tuple of
those for `isArray` columns, or None for an empty cell. Records are immutable and hashable, so
cells can key the emulator's value indexes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Person:
    """A person cell. `email`/`user_id` are None for people typed by an unknown name."""

    name: str
    email: str | None = None
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RowRef:
    """A lookup cell: a reference to a row; `name` is its display value when written."""

    table_id: str
    row_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Raw:
    """A value stored exactly as written (disableParsing, or unparseable for the column type).

    Arrays are kept as tuples so that cells stay hashable.
    """

    value: Any


Scalar = str | int | float | bool | date | time | Person | Link | RowRef | Raw
Cell = Scalar | tuple[Scalar, ...] | None


@dataclass
class PeopleDirectory:
    """The doc's people (email -> name, userId), used to resolve person cells."""

    by_email: dict[str, Person] = field(default_factory=dict)
    next_user_id: int = 10_000_001

    def add(self, email: str, name: str) -> Person:
        key = email.strip().lower()
        known = self.by_email.get(key)
        if known is not None:
            return known
        person = Person(name=name, email=key, user_id=self.next_user_id)
        self.next_user_id += 1
        self.by_email[key] = person
        return person

    def resolve(self, text: str) -> Person:
        """An email resolves to the directory entry (unknown -> name = local part); a name
        resolves to the first person with that name, else a name-only person."""
        text = text.strip()
        if "@" in text:
            key = text.lower()
            return self.by_email.get(key) or Person(name=key.split("@", 1)[0], email=key)
        for person in self.by_email.values():
            if person.name == text:
                return person
        return Person(name=text)


def _no_row(table_id: str, text: str) -> RowRef | None:
    return None


def _ref_name(ref: RowRef) -> str:
    return ref.name


@dataclass(frozen=True)
class ValueContext:
    """What parsing and rendering need from the doc."""

    tz: ZoneInfo
    people: PeopleDirectory
    doc_browser_link: str
    unknown_select: str = "store"
    time_lmt_skew: bool = True
    resolve_row: Callable[[str, str], RowRef | None] = _no_row
    """(table id, display value or row id) -> reference, for lookup writes."""
    row_name: Callable[[RowRef], str] = _ref_name
    """Current display value of a referenced row (lookups follow renames)."""


# --------------------------------------------------------------------------------- helpers


def iso_utc_ms(ms: int) -> str:
    """Epoch milliseconds -> "2026-06-23T10:52:13.619Z" (Coda's createdAt/updatedAt form)."""
    return _iso_utc(ms)


_EPOCH = datetime(1970, 1, 1)


@functools.lru_cache(maxsize=65_536)
def _iso_utc(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"


def js_number(value: float | int) -> int | float:
    """Numbers as a JavaScript server prints them: integral floats without ".0"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def number_text(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(js_number(value))


def freeze(value: Any) -> Any:
    return tuple(freeze(v) for v in value) if isinstance(value, list | tuple) else value


def thaw(value: Any) -> Any:
    return [thaw(v) for v in value] if isinstance(value, tuple) else value


def is_value(value: Any, *, depth: int = 0) -> bool:
    """Whether `value` fits the write schema `Value` (scalar, or arrays nested one level)."""
    if isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list) and depth < 2:
        return all(is_value(v, depth=depth + 1) for v in value)
    return False


# --------------------------------------------------------------------------------- control view


def cell_to_json(value: Cell) -> Any:
    """A typed cell as plain JSON for the control interface (not a Coda format)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return [cell_to_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Person):
        return {"name": value.name, "email": value.email, "userId": value.user_id}
    if isinstance(value, Link):
        return {"url": value.url, "name": value.name}
    if isinstance(value, RowRef):
        return {"tableId": value.table_id, "rowId": value.row_id, "name": value.name}
    if isinstance(value, Raw):
        return {"raw": thaw(value.value)}
    return value
