"""Plain data of the state store: what `StateRepo` takes and returns (never ORM objects).

Frozen dataclasses and enums, plus the JSON form of canonical values: JSON has no tuples, so
multi-valued canonical values are stored as lists and come back as tuples, and a stored base
compares equal to the `Values` it was built from. No SQL here; must not import httpx.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from daemon.model import Canon, Conflict, SyncKey, Values

DEFAULT_KEEP_RUNS = 1000


class MutationKind(enum.StrEnum):
    """What a recorded write to Coda does."""

    UPSERT = "upsert"
    UPDATE = "update"
    DELETE = "delete"
    KEY = "key"
    """Writing a daemon-assigned sync key into a row people created in Coda."""


class MutationState(enum.StrEnum):
    """Where a write to Coda stands: intent -> sent -> confirmed (or lost, then resent)."""

    INTENT = "intent"
    """Recorded, maybe sent (we crashed before recording that): resend, it is idempotent."""
    SENT = "sent"
    """Coda answered 202 with a request id; waiting for mutationStatus."""
    CONFIRMED = "confirmed"
    LOST = "lost"
    """Coda does not know the request id any more, or it never completed: resend."""


OPEN_MUTATION_STATES = (MutationState.INTENT, MutationState.SENT)


def canon_to_json(value: Canon) -> Any:
    return list(value) if isinstance(value, tuple) else value


def canon_from_json(value: Any) -> Canon:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if value is None or isinstance(value, bool | str):
        return value
    # Numbers are canonical strings; anything else was not written by us. Keep it comparable.
    return str(value)


def values_to_json(values: Values) -> dict[str, Any]:
    return {column: canon_to_json(value) for column, value in values.items()}


def values_from_json(data: Mapping[str, Any]) -> dict[str, Canon]:
    # NB: hot (every row state read decodes its base): strings, None and booleans are
    # already canonical, so only the other values pay for a call to canon_from_json.
    return {
        column: value
        if value is None or type(value) is str or type(value) is bool
        else canon_from_json(value)
        for column, value in data.items()
    }


@dataclass(frozen=True, slots=True)
class BindingState:
    binding: str
    updated_at: datetime
    sync_token: str | None = None
    remote_watermark: datetime | None = None
    local_watermark: datetime | None = None
    last_full_scan_at: datetime | None = None
    last_local_full_scan_at: datetime | None = None
    schema_fingerprint: str | None = None
    local_xid_mark: int | None = None
    """PostgreSQL: the transaction-id mark of the local change feed (see BoundTable)."""


@dataclass(frozen=True, slots=True)
class RowState:
    """What the daemon knows of one synced key (a row of coda_sync_row_state)."""

    binding: str
    key: SyncKey
    base: Values
    """Canonical values last seen equal on both sides, by local column."""
    base_hash: str
    synced_at: datetime
    coda_row_id: str | None = None
    remote_updated_at: datetime | None = None
    """Coda `updatedAt` of the remote version incorporated in `base`."""
    local_updated_at: datetime | None = None
    detached: bool = False
    """Tombstone: the key is no longer synced (deleted with policy `ignore`, or forgotten)."""
    pending_mutation_id: int | None = None
    pending_values: Values | None = None
    """What we wrote to Coda and are waiting to see confirmed, by local column."""
    fence_until: datetime | None = None
    """Remote reads older than this that contradict a confirmed push are stale, not edits."""
    recheck: bool = False


class RowStateHead(NamedTuple):
    """The scalar columns of a row state, without the JSON ones (`base`, `pending_values`).

    Enough to decide that a key needs no planning (tombstoned, marked for recheck, or a row
    the daemon wrote itself) without decoding its base. A NamedTuple, not a dataclass: one is
    built per row read in the hot paths, and a frozen dataclass costs several times more.
    """

    key: SyncKey
    coda_row_id: str | None
    remote_updated_at: datetime | None
    local_updated_at: datetime | None
    synced_at: datetime
    detached: bool
    pending_mutation_id: int | None
    fence_until: datetime | None
    recheck: bool


@dataclass(frozen=True, slots=True)
class Mutation:
    id: int
    binding: str
    kind: MutationKind
    state: MutationState
    created_at: datetime
    request_id: str | None = None
    sent_at: datetime | None = None
    confirmed_at: datetime | None = None
    attempts: int = 0
    row_count: int = 0
    payload: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    id: int
    binding: str
    conflict: Conflict
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class DeleteAudit:
    """A row about to be deleted (or soft-deleted), with the values it had."""

    key: SyncKey
    side_deleted: str
    """local | remote | soft: the side whose row is deleted."""
    old_values: Values | None
    coda_row_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteRecord:
    id: int
    binding: str
    audit: DeleteAudit
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class QuarantineItem:
    side: str
    """local | remote"""
    ref: str
    reason: str
    payload: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    binding: str
    item: QuarantineItem
    first_seen_at: datetime
    last_seen_at: datetime
    count: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    state: str
    requested_at: datetime
    binding: str | None = None
    full: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Mapping[str, Any] | None = field(default=None)
    error: str | None = None
