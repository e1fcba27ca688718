"""The emulator's data model: doc, table and column specs, row records, API errors.

Plain frozen dataclasses, no behaviour beyond lookups; `state` owns the mutable parts.
Cell values themselves (`Cell`) are defined in `values`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.emulator.cells import Cell

ColumnType = Literal[
    "text",
    "person",
    "lookup",
    "number",
    "percent",
    "currency",
    "date",
    "dateTime",
    "time",
    "duration",
    "email",
    "link",
    "slider",
    "scale",
    "image",
    "checkbox",
    "select",
    "canvas",
]
TableType = Literal["table", "view"]

STATUS_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ApiError(Exception):
    """Raised by request handling to answer with Coda's 3-field error body."""

    def __init__(
        self, status: int, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.status_message = STATUS_MESSAGES.get(status, "Error")
        self.message = message or self.status_message
        self.headers = dict(headers or {})
        super().__init__(f"{status} {self.message}")

    def body(self) -> dict[str, Any]:
        """The body Coda sends: statusCode, statusMessage, message (all required)."""
        return {
            "statusCode": self.status,
            "statusMessage": self.status_message,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column. `formula` set <=> calculated (read-only, computed by `formulas`)."""

    id: str
    name: str
    type: ColumnType
    is_array: bool = False
    display: bool = False
    formula: str | None = None
    options: tuple[str, ...] = ()
    """Select options (names), in order."""
    format_extra: Mapping[str, Any] = field(default_factory=dict)
    """Extra `format` fields as Coda reports them (e.g. {"format": "DD.MM.YYYY"})."""
    ref_table: Mapping[str, Any] | None = None
    """`format.table` of person/lookup columns (a TableReference)."""
    ref_table_id: str | None = None
    """For lookups: the base table whose rows are referenced."""

    @property
    def calculated(self) -> bool:
        return self.formula is not None

    @property
    def currency_code(self) -> str:
        return str(self.format_extra.get("currencyCode", "USD"))

    @property
    def precision(self) -> int | None:
        value = self.format_extra.get("precision")
        return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class PageSpec:
    """The page (canvas) a table lives on."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A base table (`grid-…`) or a view (`table-…`) over a base table."""

    id: str
    name: str
    table_type: TableType
    page: PageSpec
    columns: tuple[ColumnSpec, ...]
    display_column_id: str
    created_ms: int
    base_table_id: str
    """The table holding the rows: itself for base tables, the parent for views."""
    hidden_column_ids: frozenset[str] = frozenset()
    """Columns hidden in this table/view (left out with visibleOnly=true)."""
    layout: str = "default"

    def column(self, ref: str) -> ColumnSpec | None:
        """Find a column by id, name, or API URL (as cells[].column and keyColumns accept)."""
        if "/columns/" in ref:
            ref = ref.rsplit("/columns/", 1)[1]
        for col in self.columns:
            if col.id == ref:
                return col
        for col in self.columns:
            if col.name == ref:
                return col
        return None

    def column_by_id(self, column_id: str) -> ColumnSpec:
        for col in self.columns:
            if col.id == column_id:
                return col
        raise KeyError(column_id)

    @property
    def display_column(self) -> ColumnSpec:
        return self.column_by_id(self.display_column_id)


@dataclass(frozen=True, slots=True)
class DocSpec:
    """The doc's metadata (the emulator serves exactly one doc)."""

    id: str
    name: str
    owner_email: str
    owner_name: str
    created_ms: int
    workspace_id: str = "ws-HrTeam0001"
    workspace_name: str = "HR"
    folder_id: str = "fl-HrFolder01"
    folder_name: str = "HR docs"
    source_doc_id: str = "TmplHrPrt1"
    page_count: int = 3


@dataclass(frozen=True, slots=True)
class RowRecord:
    """One row, immutable: an edit replaces the record (snapshots share unchanged records).

    `cells` maps column id -> typed value; a missing key is an empty cell. Calculated columns
    are never stored. `seq` orders rows created in the same millisecond.
    """

    id: str
    seq: int
    created_ms: int
    updated_ms: int
    cells: Mapping[str, Cell]
