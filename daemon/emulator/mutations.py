"""Queued row mutations (202 now, applied later) and how each one changes a table.

A write is validated and parsed when it arrives, queued as a `Mutation`, and applied to the
true state at `apply_at` (receive time + apply delay, in arrival order):

    t0 POST ........ 202 {requestId}
    t0 .. t0+404s    GET /mutationStatus -> 404 (not registered yet)
    .. apply_at      -> {"completed": false}
    apply_at         rows change in the TRUE state, updatedAt = apply time
    apply_at + lag   the change is visible to reads (snapshot lag)
    .. +1 day        -> {"completed": true}, then 404 again (expired)

Upsert semantics follow §4.2: without keyColumns every row is inserted (ids were announced
as `addedRowIds`); with keyColumns every existing row whose key cells all match is updated
(duplicates stay duplicated), otherwise the row is inserted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from daemon.emulator.cells import Cell
from daemon.emulator.model import RowRecord
from daemon.emulator.tabledata import TableData


@dataclass(frozen=True, slots=True)
class UpsertOp:
    table_id: str
    rows: tuple[Mapping[str, Cell], ...]
    key_columns: tuple[str, ...] = ()
    new_row_ids: tuple[str, ...] = ()
    """Ids for inserted rows, one per entry of `rows` (announced as addedRowIds or given as
    the unpublished `rowIds`)."""
    ids_given: bool = False
    """True when the caller chose the ids (`rowIds`): an id that already exists is a no-op."""


@dataclass(frozen=True, slots=True)
class UpdateOp:
    table_id: str
    row_id: str
    cells: Mapping[str, Cell]


@dataclass(frozen=True, slots=True)
class DeleteOp:
    table_id: str
    row_ids: tuple[str, ...]


Op = UpsertOp | UpdateOp | DeleteOp


@dataclass(frozen=True, slots=True)
class Fate:
    """How an accepted write ends (set by faults): applied after `delay_seconds` (None = the
    configured delay), never applied (completed stays false), or "failed": reported completed
    although nothing changed ([U] how Coda reports a failed mutation is unknown)."""

    never_apply: bool = False
    fail: bool = False
    delay_seconds: float | None = None


NORMAL = Fate()


@dataclass(slots=True)
class Mutation:
    """One accepted write request and its lifecycle on the monotonic clock."""

    request_id: str
    received_at: float
    apply_at: float | None
    """None: accepted but never applied (the `never_apply` fault)."""
    op: Op
    token_hash: str | None = None
    fail: bool = False
    """Completes without changing anything (the `fail_apply` fault)."""
    applied_at: float | None = None
    changed_row_ids: list[str] = field(default_factory=list)


class Committer(Protocol):
    """Where applied changes go (the state: true table + the visibility queue)."""

    def commit_put(self, table_id: str, row: RowRecord) -> None: ...

    def commit_delete(self, table_id: str, row_id: str) -> None: ...


def apply_op(
    op: Op,
    data: TableData,
    sink: Committer,
    *,
    at_ms: int,
    next_seq: Callable[[], int],
    bump_identical: bool,
) -> list[str]:
    """Apply one operation to `data` through `sink`; returns the ids of rows it touched."""
    if isinstance(op, DeleteOp):
        gone = [row_id for row_id in op.row_ids if row_id in data]
        for row_id in gone:
            sink.commit_delete(op.table_id, row_id)
        return gone
    if isinstance(op, UpdateOp):
        row = data.get(op.row_id)
        if row is None:  # deleted meanwhile: the mutation still completes
            return []
        _update(op.table_id, row, op.cells, sink, at_ms=at_ms, bump_identical=bump_identical)
        return [row.id]
    touched: list[str] = []
    for position, cells in enumerate(op.rows):
        matches = _matches(data, op.key_columns, cells) if op.key_columns else []
        if matches:
            for row in matches:
                _update(op.table_id, row, cells, sink, at_ms=at_ms, bump_identical=bump_identical)
                touched.append(row.id)
            continue
        row_id = op.new_row_ids[position]
        if op.ids_given and row_id in data:
            continue  # a retried insert with caller-chosen ids is a no-op
        fresh = {k: v for k, v in cells.items() if v is not None}
        sink.commit_put(op.table_id, RowRecord(row_id, next_seq(), at_ms, at_ms, fresh))
        touched.append(row_id)
    return touched


def _matches(
    data: TableData, key_columns: tuple[str, ...], cells: Mapping[str, Cell]
) -> list[RowRecord]:
    first, *rest = key_columns
    candidates = data.lookup(first, cells.get(first))
    found = [
        row
        for row_id in candidates
        if (row := data.get(row_id)) is not None
        and all(row.cells.get(col) == cells.get(col) for col in rest)
    ]
    found.sort(key=lambda row: (row.created_ms, row.seq))
    return found


def _update(
    table_id: str,
    row: RowRecord,
    cells: Mapping[str, Cell],
    sink: Committer,
    *,
    at_ms: int,
    bump_identical: bool,
) -> None:
    merged = dict(row.cells)
    for column_id, value in cells.items():
        if value is None:
            merged.pop(column_id, None)
        else:
            merged[column_id] = value
    if merged == dict(row.cells) and not bump_identical:
        return
    updated_ms = max(at_ms, row.updated_ms)
    sink.commit_put(table_id, RowRecord(row.id, row.seq, row.created_ms, updated_ms, merged))
