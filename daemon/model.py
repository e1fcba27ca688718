"""Plain data shared by the pure core and the I/O shell: column types, canonical values, plans.

Nothing here does I/O. Every type is a frozen dataclass or an enum, so plans can be compared,
hashed and logged safely.

Canonical values (`Canon`) are the one form per column type that both sides are reduced to
before comparing (see `normalize`):

    None                      empty cell / SQL NULL
    bool                      checkbox
    str                       text, number (normalised decimal string: "1.5", "2", "-0.25"),
                              percent (fraction as decimal string), currency (decimal string),
                              date ("YYYY-MM-DD"), dateTime ("YYYY-MM-DDTHH:MM:SS.mmmZ", UTC),
                              time ("HH:MM:SS"), select, person (lower-cased email), email,
                              link (URL), lookup (row id)
    tuple[str, ...]           multi-valued columns (multiselect, people, lookups): sorted, unique
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType

SyncKey = NewType("SyncKey", str)
"""The stable identity of a synced row: the local primary key, stored in Coda's key column."""

CodaRowId = NewType("CodaRowId", str)
"""Coda's own row id (`i-…`)."""

Canon = None | bool | str | tuple[str, ...]
Values = Mapping[str, Canon]
"""Canonical values of one row, keyed by LOCAL column name."""


class ColumnType(enum.StrEnum):
    """The column types a binding can map. Names follow Coda's `format.type` where one exists."""

    TEXT = "text"
    NUMBER = "number"
    PERCENT = "percent"
    CURRENCY = "currency"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    CHECKBOX = "checkbox"
    SELECT = "select"
    MULTISELECT = "multiselect"
    PERSON = "person"
    PEOPLE = "people"
    EMAIL = "email"
    LINK = "link"
    LOOKUP = "lookup"
    LOOKUPS = "lookups"

    @property
    def is_array(self) -> bool:
        return self in (ColumnType.MULTISELECT, ColumnType.PEOPLE, ColumnType.LOOKUPS)


# Coda `format.type` values each of our types is compatible with (used by `check`).
CODA_FORMATS: Mapping[ColumnType, frozenset[str]] = {
    ColumnType.TEXT: frozenset({"text", "canvas"}),
    ColumnType.NUMBER: frozenset({"number", "slider", "scale"}),
    ColumnType.PERCENT: frozenset({"percent", "number"}),
    ColumnType.CURRENCY: frozenset({"currency", "number"}),
    ColumnType.DATE: frozenset({"date"}),
    ColumnType.DATETIME: frozenset({"dateTime"}),
    ColumnType.TIME: frozenset({"time"}),
    ColumnType.CHECKBOX: frozenset({"checkbox"}),
    ColumnType.SELECT: frozenset({"select", "text"}),
    ColumnType.MULTISELECT: frozenset({"select"}),
    ColumnType.PERSON: frozenset({"person"}),
    ColumnType.PEOPLE: frozenset({"person"}),
    ColumnType.EMAIL: frozenset({"email", "text"}),
    ColumnType.LINK: frozenset({"link", "text"}),
    ColumnType.LOOKUP: frozenset({"lookup"}),
    ColumnType.LOOKUPS: frozenset({"lookup"}),
}


class DeletePolicy(enum.StrEnum):
    """What a delete on one side does to the other side.

    PROPAGATE: delete the row on the other side.
    IGNORE: do not propagate; the key is detached (tombstoned) so the survivor is not synced back.
    SOFT: a Coda delete sets the local soft-delete column instead of deleting the local row;
          a local hard delete (or a set soft-delete column) deletes the Coda row.
    """

    PROPAGATE = "propagate"
    IGNORE = "ignore"
    SOFT = "soft"


class Side(enum.StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One mapped column of a binding: local column name <-> Coda column id, with its type."""

    local: str
    coda: str
    type: ColumnType
    readonly: bool = False
    """Pulled from Coda only (calculated columns); never pushed, never part of the change hash."""
    checkbox_unset_is_false: bool = True
    """Coda reads an untouched checkbox as "": canonical False (default) or None."""
    doc_timezone: str | None = None
    """IANA zone of the Coda doc (e.g. "Europe/Moscow"), for time columns only. Coda prints a
    time as a 1899-12-30 datetime whose local-mean-time offset loses its seconds, so the wall
    clock reads a few seconds off (06:52 -> 06:51:43 in Moscow); with the zone known,
    `normalize` recovers the exact time from the instant. None: take the wall time as read."""


@dataclass(frozen=True, slots=True)
class Version:
    """One side's current content of a row, with that side's modification time."""

    values: Values
    updated_at: datetime


class Absent(enum.Enum):
    """A side on which the row is known not to exist (confirmed deleted, or never created)."""

    ABSENT = "absent"


ABSENT = Absent.ABSENT

SideState = Version | Absent | None
"""Version = read this cycle; ABSENT = known gone; None = not read (assume unchanged = base)."""


@dataclass(frozen=True, slots=True)
class KeyInput:
    """Everything `reconcile.plan` knows about one sync key."""

    key: SyncKey
    base: Values | None
    """Canonical values last seen equal on both sides; None = never synced."""
    local: SideState
    remote: SideState


@dataclass(frozen=True, slots=True)
class Policy:
    """The binding's sync rules, as data."""

    readonly_columns: frozenset[str] = frozenset()
    deletes: DeletePolicy = DeletePolicy.PROPAGATE
    clock_skew_seconds: float = 5.0
    """Timestamps closer than this are too close to order: the tie-break decides."""
    tie_break: Side = Side.REMOTE
    max_delete_share: float = 0.2
    """Refuse all deletes of a cycle that would delete more than this share of known rows."""
    max_delete_count: int = 100
    """...or more than this many rows (whichever is stricter); 0 = no absolute cap."""
    known_rows: int = 0
    """How many keys the state knows (the share's denominator)."""


class ConflictRule(enum.StrEnum):
    LWW = "last-writer-wins"
    TIE_BREAK = "tie-break"
    EDIT_BEATS_DELETE = "edit-beats-delete"
    FIRST_SYNC = "first-sync-last-writer-wins"


@dataclass(frozen=True, slots=True)
class Conflict:
    """A value that was overwritten because both sides changed it: goes to the journal."""

    key: SyncKey
    column: str | None
    """None for whole-row conflicts (edit against delete)."""
    local_value: Canon
    remote_value: Canon
    base_value: Canon
    winner: Side
    rule: ConflictRule
    local_at: datetime | None
    remote_at: datetime | None


class Action(enum.StrEnum):
    SKIP = "skip"
    ADOPT = "adopt"
    PULL = "pull"
    PUSH = "push"
    MERGE = "merge"
    DELETE_LOCAL = "delete-local"
    SOFT_DELETE_LOCAL = "soft-delete-local"
    DELETE_REMOTE = "delete-remote"
    DETACH = "detach"
    FORGET = "forget"


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What to do for one key. Effects are applied, then the state's base becomes `new_base`."""

    key: SyncKey
    action: Action
    new_base: Values | None
    """Base after every effect below has landed; None = remove the key from the state."""
    local_write: Values | None = None
    """Full row to write locally (insert or update)."""
    local_insert: bool = False
    remote_write: Values | None = None
    """Columns to write to Coda (only changed ones on update; all writable ones on insert)."""
    remote_insert: bool = False
    local_delete: bool = False
    soft_delete: bool = False
    remote_delete: bool = False
    conflicts: tuple[Conflict, ...] = ()


@dataclass(frozen=True, slots=True)
class GuardReport:
    """Deletes the guard refused in this cycle."""

    refused_local_deletes: int
    refused_remote_deletes: int
    known_rows: int
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    keys: tuple[KeyPlan, ...] = ()
    guard: GuardReport | None = None
    counts: Mapping[Action, int] = field(default_factory=dict)

    @property
    def conflicts(self) -> tuple[Conflict, ...]:
        return tuple(c for k in self.keys for c in k.conflicts)
