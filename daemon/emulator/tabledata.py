"""The rows of one base table, with the orders listings need kept sorted incrementally.

Two orders are maintained with `bisect` on parallel key/id lists, so a page of a 100,000-row
listing costs O(page + log n) and an edit costs O(log n) plus one list shift:

    created order (createdAt ascending, also used as "natural" order and for `index`):
        key = (created_ms, seq)
    updated order (updatedAt NEWEST FIRST, as Coda's sortBy=updatedAt):
        key = (-updated_ms, -seq)

Value indexes (column -> typed value -> row ids) are built lazily on the first lookup of a
column and then maintained on every change, for keyed upserts and `query=` filters.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterator

from daemon.emulator.model import RowRecord

_BIG = 1 << 62  # beyond any seq, so (ms, ±_BIG) brackets every key with that ms


class TableData:
    """Mutable row store of one base table; `version` grows with every change."""

    def __init__(self) -> None:
        self.rows: dict[str, RowRecord] = {}
        self._c_keys: list[tuple[int, int]] = []
        self._c_ids: list[str] = []
        self._u_keys: list[tuple[int, int]] = []
        self._u_ids: list[str] = []
        self._indexes: dict[str, dict[Hashable, set[str]]] = {}
        self.version = 0
        self.last_change_ms = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self.rows

    def get(self, row_id: str) -> RowRecord | None:
        return self.rows.get(row_id)

    # ---------------------------------------------------------------- changes

    def put(self, row: RowRecord) -> None:
        """Insert a new row or replace an existing one with the same id."""
        old = self.rows.get(row.id)
        if old is not None:
            self._unlink(old)
        self.rows[row.id] = row
        c_key = (row.created_ms, row.seq)
        if not self._c_keys or c_key > self._c_keys[-1]:
            self._c_keys.append(c_key)
            self._c_ids.append(row.id)
        else:
            pos = bisect_left(self._c_keys, c_key)
            self._c_keys.insert(pos, c_key)
            self._c_ids.insert(pos, row.id)
        u_key = (-row.updated_ms, -row.seq)
        pos = bisect_left(self._u_keys, u_key)
        self._u_keys.insert(pos, u_key)
        self._u_ids.insert(pos, row.id)
        for column_id, index in self._indexes.items():
            index.setdefault(_hashable(row.cells.get(column_id)), set()).add(row.id)
        self._touch(max(row.updated_ms, row.created_ms))

    def load(self, rows: list[RowRecord]) -> None:
        """Add many new rows at once (seeding): one sort instead of n list inserts."""
        for row in rows:
            self.rows[row.id] = row
        by_created = sorted((r.created_ms, r.seq, r.id) for r in self.rows.values())
        self._c_keys = [(ms, seq) for ms, seq, _ in by_created]
        self._c_ids = [rid for _, _, rid in by_created]
        by_updated = sorted((-r.updated_ms, -r.seq, r.id) for r in self.rows.values())
        self._u_keys = [(ms, seq) for ms, seq, _ in by_updated]
        self._u_ids = [rid for _, _, rid in by_updated]
        self._indexes.clear()
        if rows:
            self._touch(max(max(r.updated_ms, r.created_ms) for r in rows))

    def delete(self, row_id: str, *, at_ms: int) -> RowRecord | None:
        old = self.rows.pop(row_id, None)
        if old is not None:
            self._unlink(old)
            self._touch(at_ms)
        return old

    def _unlink(self, row: RowRecord) -> None:
        pos = bisect_left(self._c_keys, (row.created_ms, row.seq))
        del self._c_keys[pos], self._c_ids[pos]
        pos = bisect_left(self._u_keys, (-row.updated_ms, -row.seq))
        del self._u_keys[pos], self._u_ids[pos]
        for column_id, index in self._indexes.items():
            bucket = index.get(_hashable(row.cells.get(column_id)))
            if bucket is not None:
                bucket.discard(row.id)

    def _touch(self, at_ms: int) -> None:
        self.version += 1
        self.last_change_ms = max(self.last_change_ms, at_ms)

    # ---------------------------------------------------------------- reads

    def created_order(self) -> list[str]:
        """Row ids, createdAt ascending (the caller must not mutate the list)."""
        return self._c_ids

    def updated_order(self) -> list[str]:
        """Row ids, updatedAt descending (newest first)."""
        return self._u_ids

    def index_of(self, row: RowRecord) -> int:
        """Position of the row in the table (Row.index)."""
        return bisect_left(self._c_keys, (row.created_ms, row.seq))

    def created_position(self, row_id: str) -> int:
        row = self.rows[row_id]
        return bisect_left(self._c_keys, (row.created_ms, row.seq))

    def updated_position(self, row_id: str) -> int:
        row = self.rows[row_id]
        return bisect_left(self._u_keys, (-row.updated_ms, -row.seq))

    def updated_after(self, start_ms: int, *, inclusive: bool) -> int:
        """How many rows (a prefix of `updated_order`) have updated_ms > (>=) start_ms."""
        if inclusive:
            return bisect_right(self._u_keys, (-start_ms, _BIG))
        return bisect_left(self._u_keys, (-start_ms, -_BIG))

    def created_after(self, start_ms: int, *, inclusive: bool) -> int:
        """Where the suffix of `created_order` with created_ms > (>=) start_ms begins."""
        if inclusive:
            return bisect_left(self._c_keys, (start_ms, -_BIG))
        return bisect_right(self._c_keys, (start_ms, _BIG))

    def newest_updated_ms(self) -> int | None:
        return -self._u_keys[0][0] if self._u_keys else None

    def newest_created_ms(self) -> int | None:
        return self._c_keys[-1][0] if self._c_keys else None

    def lookup(self, column_id: str, value: object) -> set[str]:
        """Ids of rows whose stored cell in `column_id` equals `value` (None = empty)."""
        index = self._indexes.get(column_id)
        if index is None:
            index = {}
            for row in self.rows.values():
                index.setdefault(_hashable(row.cells.get(column_id)), set()).add(row.id)
            self._indexes[column_id] = index
        return index.get(_hashable(value), set())

    def __iter__(self) -> Iterator[RowRecord]:
        for row_id in self._c_ids:
            yield self.rows[row_id]

    def clone(self) -> TableData:
        """A copy sharing the immutable row records (indexes are rebuilt on demand)."""
        other = TableData()
        other.rows = dict(self.rows)
        other._c_keys, other._c_ids = list(self._c_keys), list(self._c_ids)
        other._u_keys, other._u_ids = list(self._u_keys), list(self._u_ids)
        other.version, other.last_change_ms = self.version, self.last_change_ms
        return other


def _hashable(value: object) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
