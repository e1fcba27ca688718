"""Coda API v1 payloads: TypedDicts for the raw JSON and pure parsers into frozen dataclasses.

This module owns *what a Coda answer must look like* for the daemon to trust it. Each
`parse_*` function takes decoded JSON (`object`), checks the fields the daemon relies on and
returns a frozen dataclass, or raises `CodaPayloadError` naming what is wrong ("row list page
has no 'items' array", "row 3 has no 'id'"). It does no I/O and must not import httpx or anyio;
the client adds the method and path to the error.

Lenient where real Coda deviates from the published spec (recorded/README.md): unknown extra
fields are ignored, `values` keys need not be ``c-`` column ids (Pack tables use ``value``,
``synced``, ``connection``; `useColumnNames` uses names), and optional or rarely-present
fields (`display`, `calculated`, `formula`, `parent`, `warning`, `addedRowIds`, ...) default.
Strict only where the sync would otherwise be wrong: ids, `values`, the timestamps, tokens.
Row indexes in messages are 0-based positions within the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from daemon.errors import CodaPayloadError

# --- raw payloads (the JSON as Coda sends it; only the fields we read are typed) -------------


class TableRefPayload(TypedDict):
    id: str
    type: str
    tableType: NotRequired[str]
    href: NotRequired[str]
    browserLink: NotRequired[str]
    name: NotRequired[str]


class RowPayload(TypedDict):
    id: str
    type: str
    href: str
    name: str
    index: int
    browserLink: str
    createdAt: str
    updatedAt: str
    values: dict[str, Any]
    parent: NotRequired[TableRefPayload]  # only on a single-row GET (RowDetail)


class RowListPayload(TypedDict):
    items: list[RowPayload]
    href: NotRequired[str]
    nextPageToken: NotRequired[str]
    nextPageLink: NotRequired[str]
    nextSyncToken: NotRequired[str]


class ColumnFormatPayload(TypedDict):
    type: str
    isArray: bool
    options: NotRequired[list[dict[str, Any]]]  # select: [{"name": ..., "backgroundColor": ...}]


class ColumnPayload(TypedDict):
    id: str
    type: str
    href: str
    name: str
    format: ColumnFormatPayload
    display: NotRequired[bool]
    calculated: NotRequired[bool]
    formula: NotRequired[str]
    defaultValue: NotRequired[str]


class ColumnListPayload(TypedDict):
    items: list[ColumnPayload]
    href: NotRequired[str]
    nextPageToken: NotRequired[str]
    nextPageLink: NotRequired[str]


class TablePayload(TypedDict):
    id: str
    type: str
    tableType: str
    name: str
    rowCount: int
    displayColumn: dict[str, Any]
    createdAt: NotRequired[str]
    updatedAt: NotRequired[str]


class DocSizePayload(TypedDict):
    totalRowCount: int
    tableAndViewCount: int
    pageCount: int
    overApiSizeLimit: bool


class DocPayload(TypedDict):
    id: str
    type: str
    name: str
    docSize: NotRequired[DocSizePayload]


class UserPayload(TypedDict):
    name: str
    loginId: str
    type: str
    scoped: bool
    tokenName: str


class MutationStatusPayload(TypedDict):
    completed: bool
    warning: NotRequired[str]


class WriteResultPayload(TypedDict):
    """Upsert `{requestId, addedRowIds?}`, update/delete-one `{requestId, id}`,
    delete-many `{requestId, rowIds}`."""

    requestId: str
    addedRowIds: NotRequired[list[str]]
    id: NotRequired[str]
    rowIds: NotRequired[list[str]]


class ErrorPayload(TypedDict):
    statusCode: int
    statusMessage: str
    message: str


# --- parsed values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as read: cell values are still Coda's (`normalize` canonicalises them)."""

    id: str
    name: str
    index: int | None
    created_at: str
    updated_at: str
    values: dict[str, Any]
    browser_link: str | None


@dataclass(frozen=True, slots=True)
class RowPage:
    """One page of a row listing; more pages exist iff `next_page_token` is set."""

    items: list[RawRow]
    next_page_token: str | None
    next_sync_token: str | None


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column's identity and format; `type` is `format.type` ("text", "lookup", ...)."""

    id: str
    name: str
    type: str
    is_array: bool
    calculated: bool
    display: bool
    formula: str | None
    options: list[str] = field(default_factory=list)  # fixed option names of a select
    format: dict[str, Any] = field(default_factory=dict)  # the raw format, for normalize


@dataclass(frozen=True, slots=True)
class ColumnPage:
    """One page of a column listing."""

    items: list[ColumnInfo]
    next_page_token: str | None


@dataclass(frozen=True, slots=True)
class TableInfo:
    id: str
    name: str
    table_type: str  # "table" (base table, writable) or "view"
    row_count: int | None
    display_column_id: str | None


@dataclass(frozen=True, slots=True)
class DocInfo:
    id: str
    name: str
    over_api_size_limit: bool | None
    total_row_count: int | None


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    login_id: str
    token_name: str | None
    scoped: bool | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A queued mutation (HTTP 202): poll `request_id` via mutationStatus.

    `added_row_ids` only comes back for inserts without key columns; `row_ids` holds the
    row ids Coda echoed (`id` of an update or single delete, `rowIds` of a bulk delete).
    """

    request_id: str
    added_row_ids: list[str] = field(default_factory=list)
    row_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MutationStatus:
    completed: bool
    warning: str | None = None


# --- helpers ---------------------------------------------------------------------------------


def _fail(message: str) -> CodaPayloadError:
    return CodaPayloadError(message)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"{what} is not a JSON object (got {type(value).__name__})")
    return value


def _required_str(data: Mapping[str, Any], key: str, what: str, *, empty_ok: bool = False) -> str:
    if key not in data:
        raise _fail(f"{what} has no {key!r}")
    value = data[key]
    if not isinstance(value, str) or (not value and not empty_ok):
        raise _fail(
            f"{what} has an invalid {key!r}: expected a non-empty string, got {value!r:.80}"
        )
    return value


def _optional_str(data: Mapping[str, Any], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"{what} has an invalid {key!r}: expected a string, got {value!r:.80}")
    return value


def _optional_bool(data: Mapping[str, Any], key: str, what: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _fail(f"{what} has an invalid {key!r}: expected a boolean, got {value!r:.80}")
    return value


def _optional_int(data: Mapping[str, Any], key: str, what: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    # NB: bool is an int subclass; JSON numbers may arrive as 3.0 ("type: number" in the spec).
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise _fail(f"{what} has an invalid {key!r}: expected an integer, got {value!r:.80}")
    return int(value)


def _timestamp(data: Mapping[str, Any], key: str, what: str) -> str:
    value = _required_str(data, key, what)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{what} has an invalid {key!r}: not an ISO 8601 timestamp: {value!r:.80}"
        ) from None
    return value


def _string_list(data: Mapping[str, Any], key: str, what: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(f"{what} has an invalid {key!r}: expected an array of strings")
    return list(value)


def _items(data: Mapping[str, Any], what: str) -> list[Any]:
    items = data.get("items")
    if not isinstance(items, list):
        raise _fail(f"{what} has no 'items' array")
    return items


# --- parsers ---------------------------------------------------------------------------------


def parse_row(payload: object, *, what: str = "row") -> RawRow:
    """Parse a `Row` (list item) or `RowDetail` (single GET)."""
    data = _object(payload, what)
    row_id = _required_str(data, "id", what)
    what = f"{what} ({row_id!r})"
    values = data.get("values")
    if not isinstance(values, Mapping):
        raise _fail(f"{what} has no 'values' object")
    name = data.get("name")  # the display column's value; lenient if it is not a string
    return RawRow(
        id=row_id,
        name="" if name is None else str(name),
        index=_optional_int(data, "index", what),
        created_at=_timestamp(data, "createdAt", what),
        updated_at=_timestamp(data, "updatedAt", what),
        values={str(key): value for key, value in values.items()},
        browser_link=_optional_str(data, "browserLink", what),
    )


def parse_row_page(payload: object) -> RowPage:
    """Parse a `RowList` page; `nextSyncToken` may come on any page, first included."""
    data = _object(payload, "row list page")
    items = _items(data, "row list page")
    return RowPage(
        items=[parse_row(item, what=f"row {i}") for i, item in enumerate(items)],
        next_page_token=_optional_str(data, "nextPageToken", "row list page") or None,
        next_sync_token=_optional_str(data, "nextSyncToken", "row list page") or None,
    )


def parse_column(payload: object, *, what: str = "column") -> ColumnInfo:
    """Parse a `Column` or `ColumnDetail`."""
    data = _object(payload, what)
    column_id = _required_str(data, "id", what)
    what = f"{what} ({column_id!r})"
    fmt = _object(data.get("format"), f"{what} 'format'")
    options: list[str] = []
    raw_options = fmt.get("options")
    if isinstance(raw_options, list):  # only fixed option lists are returned (first 5000)
        options = [
            o["name"]
            for o in raw_options
            if isinstance(o, Mapping) and isinstance(o.get("name"), str)
        ]
    return ColumnInfo(
        id=column_id,
        name=_required_str(data, "name", what, empty_ok=True),
        type=_required_str(fmt, "type", f"{what} 'format'"),
        is_array=bool(_optional_bool(fmt, "isArray", f"{what} 'format'")),
        calculated=bool(_optional_bool(data, "calculated", what)),
        display=bool(_optional_bool(data, "display", what)),
        formula=_optional_str(data, "formula", what),
        options=options,
        format=dict(fmt),
    )


def parse_column_page(payload: object) -> ColumnPage:
    """Parse a `ColumnList` page."""
    data = _object(payload, "column list page")
    items = _items(data, "column list page")
    return ColumnPage(
        items=[parse_column(item, what=f"column {i}") for i, item in enumerate(items)],
        next_page_token=_optional_str(data, "nextPageToken", "column list page") or None,
    )


def parse_table(payload: object) -> TableInfo:
    """Parse a `Table` (GET /docs/{docId}/tables/{tableId})."""
    data = _object(payload, "table")
    display = data.get("displayColumn")
    display_id = display.get("id") if isinstance(display, Mapping) else None
    return TableInfo(
        id=_required_str(data, "id", "table"),
        name=_required_str(data, "name", "table", empty_ok=True),
        table_type=_required_str(data, "tableType", "table"),  # "table" or "view": must know
        row_count=_optional_int(data, "rowCount", "table"),
        display_column_id=display_id if isinstance(display_id, str) else None,
    )


def parse_doc(payload: object) -> DocInfo:
    """Parse a `Doc`; `docSize` may be absent, so its fields are optional."""
    data = _object(payload, "doc")
    size = data.get("docSize")
    size_data = _object(size, "doc 'docSize'") if size is not None else {}
    return DocInfo(
        id=_required_str(data, "id", "doc"),
        name=_required_str(data, "name", "doc", empty_ok=True),
        over_api_size_limit=_optional_bool(size_data, "overApiSizeLimit", "doc 'docSize'"),
        total_row_count=_optional_int(size_data, "totalRowCount", "doc 'docSize'"),
    )


def parse_user(payload: object) -> UserInfo:
    """Parse a `User` (GET /whoami)."""
    data = _object(payload, "user")
    return UserInfo(
        name=_required_str(data, "name", "user", empty_ok=True),
        login_id=_required_str(data, "loginId", "user"),
        token_name=_optional_str(data, "tokenName", "user"),
        scoped=_optional_bool(data, "scoped", "user"),
    )


def parse_write_result(payload: object) -> WriteResult:
    """Parse any row mutation answer (upsert, update, delete one, delete many)."""
    data = _object(payload, "write result")
    row_ids = _string_list(data, "rowIds", "write result")
    single = _optional_str(data, "id", "write result")
    if single:
        row_ids = [single, *row_ids]
    return WriteResult(
        request_id=_required_str(data, "requestId", "write result"),
        added_row_ids=_string_list(data, "addedRowIds", "write result"),
        row_ids=row_ids,
    )


def parse_mutation_status(payload: object) -> MutationStatus:
    """Parse a `MutationStatus`; `completed` is required and must be a boolean."""
    data = _object(payload, "mutation status")
    completed = _optional_bool(data, "completed", "mutation status")
    if completed is None:
        raise _fail("mutation status has no 'completed' boolean")
    return MutationStatus(
        completed=completed, warning=_optional_str(data, "warning", "mutation status")
    )


def error_message(payload: object) -> str | None:
    """Coda's human message from an error body ``{statusCode, statusMessage, message}``, if any."""
    if not isinstance(payload, Mapping):
        return None
    for key in ("message", "statusMessage"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return None
