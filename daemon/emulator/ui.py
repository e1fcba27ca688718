"""What a person in Coda's UI, and a test harness looking over Coda's shoulder, can do.

`ControlMixin` gives `EmulatorState` its control surface: people's edits (applied to the TRUE
state at once with `updatedAt` = now, visible to the API after the read lag), formula changes,
and read-outs of the true rows and the queues. The HTTP face of these is `control`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.emulator.cells import cell_to_json, iso_utc_ms
from daemon.emulator.formulas import compile_formula
from daemon.emulator.model import ApiError, ColumnSpec, DocSpec, RowRecord, TableSpec
from daemon.emulator.mutations import DeleteOp, Mutation, Op, UpdateOp, UpsertOp

if TYPE_CHECKING:
    from daemon.clock import Clock
    from daemon.emulator.config import EmulatorConfig
    from daemon.emulator.faults import FaultPlan
    from daemon.emulator.ratelimit import RequestStats
    from daemon.emulator.tabledata import TableData
    from daemon.emulator.values import Cell


class ControlMixin:
    """Control methods of `EmulatorState` (see the module docstring)."""

    if TYPE_CHECKING:
        clock: Clock
        doc: DocSpec
        tables: dict[str, TableSpec]
        true: dict[str, TableData]
        visible: dict[str, TableData]
        faults: FaultPlan
        stats: RequestStats
        op_version: int
        _mutations: dict[str, Mutation]
        _queue: deque[Mutation]
        _changes: deque[Any]

        @property
        def config(self) -> EmulatorConfig: ...
        def tick(self) -> None: ...
        def is_stale(self) -> bool: ...
        def find_table(self, ref: str) -> TableSpec: ...
        def truth(self, table: TableSpec) -> TableData: ...
        def new_row_id(self) -> str: ...
        def display_text(self, table: TableSpec, row: RowRecord) -> str: ...
        def calculated_values(self, table: TableSpec, row: RowRecord) -> dict[str, Cell]: ...
        def replace_column(self, col: ColumnSpec) -> None: ...
        def _apply_op(self, op: Op, at: float) -> list[str]: ...
        def parse_cells(
            self, table: TableSpec, cells: Any, *, disable_parsing: bool, ui: bool = False
        ) -> dict[str, Cell]: ...

    # ------------------------------------------------------------------ people in the UI

    def ui_insert_row(self, table: str, values: Mapping[str, Any]) -> str:
        """A person adds a row in Coda's UI (applied now; visible to the API after the lag)."""
        self.tick()
        spec = self.find_table(table)
        cells = self.parse_cells(spec, values.items(), disable_parsing=False, ui=True)
        row_id = self.new_row_id()
        self._apply_op(
            UpsertOp(spec.base_table_id, (cells,), new_row_ids=(row_id,)), self.clock.monotonic()
        )
        return row_id

    def ui_update_row(self, table: str, row_id: str, values: Mapping[str, Any]) -> None:
        """A person edits cells of a row in the UI (`updatedAt` = now)."""
        self.tick()
        spec = self.find_table(table)
        self._require_row(spec, row_id)
        cells = self.parse_cells(spec, values.items(), disable_parsing=False, ui=True)
        self._apply_op(UpdateOp(spec.base_table_id, row_id, cells), self.clock.monotonic())

    def ui_delete_row(self, table: str, row_id: str) -> None:
        """A person deletes a row in the UI."""
        self.tick()
        spec = self.find_table(table)
        self._require_row(spec, row_id)
        self._apply_op(DeleteOp(spec.base_table_id, (row_id,)), self.clock.monotonic())

    def _require_row(self, table: TableSpec, row_id: str) -> None:
        if row_id not in self.truth(table):
            raise ApiError(404, f"Row '{row_id}' not found in table '{table.id}'.")

    def set_formula(self, table: str, column: str, formula: str) -> None:
        """Change a calculated column's formula: values change, `updatedAt` does not (§9)."""
        self.tick()
        spec = self.find_table(table)
        col = spec.column(column)
        if col is None or not col.calculated:
            raise ApiError(400, f"'{column}' is not a calculated column.")
        names = {c.name: c.id for c in spec.columns} | {c.id: c.id for c in spec.columns}
        compile_formula(formula, names)  # validate first
        self.replace_column(dataclasses.replace(col, formula=formula))

    def rename_column(self, table: str, column: str, new_name: str) -> None:
        """Rename a column (schema change); formulas that name it follow, as in Coda."""
        self.tick()
        spec = self.find_table(table)
        col = spec.column(column)
        if col is None:
            raise ApiError(404, f"Column '{column}' not found.")
        ref = new_name if new_name.isidentifier() else f"[{new_name}]"
        for other in spec.columns:
            if other.formula:
                formula = other.formula.replace(f"thisRow.{col.name}", f"thisRow.{ref}")
                formula = formula.replace(f"[{col.name}]", f"[{new_name}]")
                if formula != other.formula:
                    self.replace_column(dataclasses.replace(other, formula=formula))
        self.replace_column(dataclasses.replace(col, name=new_name))

    def remove_column(self, table: str, column: str) -> None:
        """Delete a column from the doc (its values vanish from every read)."""
        self.tick()
        spec = self.find_table(table)
        col = spec.column(column)
        if col is None or col.id == spec.display_column_id:
            raise ApiError(400, f"Column '{column}' cannot be removed.")
        for tid, other in list(self.tables.items()):
            columns = tuple(c for c in other.columns if c.id != col.id)
            self.tables[tid] = dataclasses.replace(other, columns=columns)
        self.replace_column(col)  # no table has it any more: just drops render caches

    # ------------------------------------------------------------------ inspection

    def true_records(self, table: str) -> list[RowRecord]:
        """The true rows (what Coda really holds now), in creation order."""
        self.tick()
        return list(self.truth(self.find_table(table)))

    def true_rows(self, table: str) -> list[dict[str, Any]]:
        """The true rows as plain JSON: ids, timestamps, typed values (calculated included)."""
        spec = self.find_table(table)
        data = self.truth(spec)
        out = []
        for row in self.true_records(table):
            values = dict(row.cells) | self.calculated_values(spec, row)
            out.append(
                {
                    "id": row.id,
                    "index": data.index_of(row),
                    "name": self.display_text(spec, row),
                    "createdAt": iso_utc_ms(row.created_ms),
                    "updatedAt": iso_utc_ms(row.updated_ms),
                    "values": {k: cell_to_json(v) for k, v in values.items()},
                }
            )
        return out

    def pending_mutations(self) -> list[dict[str, Any]]:
        self.tick()
        return [
            {
                "requestId": m.request_id,
                "kind": type(m.op).__name__,
                "receivedAt": m.received_at,
                "applyAt": m.apply_at,
                "neverApplies": m.apply_at is None,
            }
            for m in self._mutations.values()
            if m.applied_at is None
        ]

    def summary(self) -> dict[str, Any]:
        self.tick()
        return {
            "docId": self.doc.id,
            "opVersion": self.op_version,
            "stale": self.is_stale(),
            "tables": {
                tid: {"trueRows": len(self.true[tid]), "visibleRows": len(self.visible[tid])}
                for tid in self.true
            },
            "pendingMutations": len(self._queue),
            "pendingChanges": len(self._changes),
            "requests": self.stats.total,
            "faults": dict(self.faults.counts),
            "config": dataclasses.asdict(self.config),
        }
