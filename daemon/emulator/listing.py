"""Row reads: GET …/rows (paging, sort orders, query filter, sync tokens) and GET …/rows/{row}.

Paging is offset-based over the CURRENT snapshot, as the recorded page tokens suggest, so rows
added, edited (with sortBy=updatedAt) or deleted between two pages shift later pages. A
`pageToken` carries the whole original request; when present every other parameter is
ignored. A `syncToken` is a watermark on the sort key (`startAt`, epoch seconds): it returns
rows whose key is after it, re-using the token's original parameters, and can therefore never
report deletions or formula-only changes (§3.3). The [U] details are options in
`EmulatorConfig` (`sync_token_pages`, `sync_boundary`, `sync_start_at`, `bad_sync_token`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from daemon.emulator import tokens
from daemon.emulator.model import ApiError, ColumnSpec, RowRecord, TableSpec
from daemon.emulator.resources import doc_href, parse_bool, parse_int, table_ref
from daemon.emulator.state import EmulatorState
from daemon.emulator.tabledata import TableData
from daemon.emulator.values import VALUE_FORMATS, ValueFormat, iso_utc_ms, make_renderer, parse_cell

SORTS = ("createdAt", "natural", "updatedAt")


@dataclass(frozen=True)
class ListParams:
    """A row listing request, as sent or as recovered from a token."""

    limit: int
    sort_by: str = "createdAt"
    value_format: ValueFormat = "simple"
    use_column_names: bool = False
    visible_only: bool = False
    query: str | None = None
    start_at: int | float | None = None
    """The sync watermark (token form), for syncToken listings and their later pages."""
    echoed: Mapping[str, Any] = field(default_factory=dict)
    """Parameters the caller sent explicitly; tokens echo them."""


def params_from_query(state: EmulatorState, table: TableSpec, q: Mapping[str, str]) -> ListParams:
    cfg = state.config
    limit = parse_int(q, "limit", cfg.default_page_limit, cap=cfg.max_page_limit)
    sort_by = q.get("sortBy", "createdAt")
    value_format = q.get("valueFormat", "simple")
    if sort_by not in SORTS:
        raise ApiError(400, f"Invalid sortBy '{sort_by}'.")
    if value_format not in VALUE_FORMATS:
        raise ApiError(400, f"Invalid valueFormat '{value_format}'.")
    use_names, visible_only = parse_bool(q, "useColumnNames"), parse_bool(q, "visibleOnly")
    if sort_by == "natural" and visible_only is False:
        raise ApiError(
            400, "sortBy=natural implies visibleOnly=true; visibleOnly=false is not allowed."
        )
    echoed: dict[str, Any] = {}
    if "valueFormat" in q:
        echoed["valueFormat"] = value_format
    if use_names is not None:
        echoed["useColumnNames"] = use_names
    if visible_only is not None:
        echoed["visibleOnly"] = visible_only
    if "query" in q:
        echoed["query"] = q["query"]
        parse_query(table, q["query"])  # 400 now rather than on a later page
    return ListParams(
        limit=limit,
        sort_by=sort_by,
        value_format=value_format,
        use_column_names=bool(use_names),
        visible_only=bool(visible_only) or sort_by == "natural",
        query=q.get("query"),
        echoed=echoed,
    )


def _from_token(payload: dict[str, Any], state: EmulatorState) -> ListParams | None:
    limit, sort_by = payload.get("limit"), payload.get("sortBy", "createdAt")
    fmt = payload.get("valueFormat", "simple")
    if not isinstance(limit, int) or limit < 1 or sort_by not in SORTS or fmt not in VALUE_FORMATS:
        return None
    echoed: dict[str, Any] = {
        k: payload[k]
        for k in ("valueFormat", "useColumnNames", "visibleOnly", "query")
        if k in payload
    }
    return ListParams(
        limit=min(limit, state.config.max_page_limit),
        sort_by=sort_by,
        value_format=fmt,
        use_column_names=bool(payload.get("useColumnNames")),
        visible_only=bool(payload.get("visibleOnly")) or sort_by == "natural",
        query=payload.get("query") if isinstance(payload.get("query"), str) else None,
        start_at=payload.get("startAt")
        if tokens.start_at_ms(payload.get("startAt")) is not None
        else None,
        echoed=echoed,
    )


def parse_query(table: TableSpec, query: str) -> tuple[ColumnSpec, Any]:
    """`<columnId>:<json>` or `"<Column Name>":<json>` -> (column, JSON literal)."""
    decoder = json.JSONDecoder()
    try:
        if query.startswith('"'):
            ref, end = decoder.raw_decode(query)
            rest = query[end:]
        else:
            ref, _, rest = query.partition(":")
            rest = ":" + rest if _ else ""
        if not rest.startswith(":"):
            raise ValueError("missing ':'")
        literal, end = decoder.raw_decode(rest[1:].strip())
        if rest[1:].strip()[end:].strip():
            raise ValueError("trailing characters")
    except ValueError:
        raise ApiError(400, f"Invalid query '{query}'.") from None
    col = table.column(str(ref))
    if col is None:
        raise ApiError(400, f"Invalid query: unknown column '{ref}'.")
    return col, literal


def list_rows(state: EmulatorState, table: TableSpec, q: Mapping[str, str]) -> dict[str, Any]:
    offset = 0
    if "pageToken" in q:
        payload = tokens.decode(q["pageToken"]) or {}
        params = _from_token(payload, state)
        offset = payload.get("offset", -1)
        if params is None or not isinstance(offset, int) or offset < 0:
            raise ApiError(400, "Invalid page token.")
    elif "syncToken" in q:
        params = _from_token(tokens.decode(q["syncToken"]) or {}, state)
        if params is None or params.start_at is None:
            mode = state.config.bad_sync_token
            if mode == "gone":
                raise ApiError(410, "The sync token is invalid or has expired.")
            if mode == "bad_request":
                raise ApiError(400, "Invalid sync token.")
            params = params_from_query(
                state, table, {k: v for k, v in q.items() if k != "syncToken"}
            )
    else:
        params = params_from_query(state, table, q)
    return _page(state, table, params, offset)


def _selection(state: EmulatorState, table: TableSpec, data: TableData, p: ListParams) -> list[str]:
    newest_first = p.sort_by == "updatedAt"
    order = data.updated_order() if newest_first else data.created_order()
    lo, hi = 0, len(order)
    start_ms = tokens.start_at_ms(p.start_at)
    if start_ms is not None:
        inclusive = state.config.sync_boundary == "inclusive"
        if newest_first:
            hi = data.updated_after(start_ms, inclusive=inclusive)
        else:
            lo = data.created_after(start_ms, inclusive=inclusive)
    if p.query is None:
        return order if (lo, hi) == (0, len(order)) else order[lo:hi]
    col, literal = parse_query(table, p.query)
    if col.calculated:
        wanted = literal
        return [
            rid
            for rid in order[lo:hi]
            if state.calculated_values(table, data.rows[rid]).get(col.id) == wanted
        ]
    value = parse_cell(col, literal, state.value_context(), disable_parsing=False)
    matches = data.lookup(col.id, value)
    if len(matches) > (hi - lo) // 8:
        return [rid for rid in order[lo:hi] if rid in matches]
    position = data.updated_position if newest_first else data.created_position
    return sorted((rid for rid in matches if lo <= position(rid) < hi), key=position)


def _page(state: EmulatorState, table: TableSpec, p: ListParams, offset: int) -> dict[str, Any]:
    data = state.snapshot(table)
    selected = _selection(state, table, data, p)
    page_ids = selected[offset : offset + p.limit]
    renderer = RowRenderer(state, table, p)
    rows = [data.rows[rid] for rid in page_ids]
    href = f"{doc_href(state)}/tables/{table.id}/rows"
    out: dict[str, Any] = {
        "items": [renderer.render(row, data) for row in rows],
        "href": f"{href}?pageToken={_page_token(state, p, offset)}",
    }
    more = offset + p.limit < len(selected)
    if more:
        out["nextPageToken"] = _page_token(state, p, offset + p.limit)
        out["nextPageLink"] = f"{href}?pageToken={out['nextPageToken']}"
    mode = state.config.sync_token_pages
    if mode == "every" or (mode == "first" and offset == 0) or (mode == "last" and not more):
        pool = (
            rows
            if state.config.sync_start_at == "page_max"
            else [data.rows[r] for r in _ends(selected)]
        )
        out["nextSyncToken"] = _sync_token(p, pool)
    return out


def _ends(selected: list[str]) -> list[str]:
    return [selected[0], selected[-1]] if selected else []


def _sync_token(p: ListParams, pool: list[RowRecord]) -> str:
    if p.sort_by == "updatedAt":
        newest = max((r.updated_ms for r in pool), default=None)
    else:
        newest = max((r.created_ms for r in pool), default=None)
    start: int | float = 0 if p.start_at is None else p.start_at
    if newest is not None and newest > (tokens.start_at_ms(start) or 0):
        start = tokens.start_at(newest)
    payload = {"limit": p.limit, "offset": 0, "sortBy": p.sort_by, "startAt": start} | dict(
        p.echoed
    )
    return tokens.encode(payload)


def _page_token(state: EmulatorState, p: ListParams, offset: int) -> str:
    payload: dict[str, Any] = {
        "limit": p.limit,
        "offset": offset,
        "opVersion": state.op_version,
        "schemaVersion": state.config.schema_version,
        "sortBy": p.sort_by,
    } | dict(p.echoed)
    if p.start_at is not None:
        payload["startAt"] = p.start_at
    return tokens.encode(payload)


class RowRenderer:
    """Renders rows of one table for one value format (renderers built once per request).

    Stored cells are rendered once per row version and cached (rows are immutable records, so
    `cached_row is row` proves the cache entry current); calculated cells are evaluated on
    every read, because they drift without the row changing (§9).
    """

    def __init__(self, state: EmulatorState, table: TableSpec, p: ListParams) -> None:
        ctx = state.value_context()
        self._state, self._table = state, table
        hidden = table.hidden_column_ids if p.visible_only else frozenset()
        columns = [col for col in table.columns if col.id not in hidden]

        def key(col: ColumnSpec) -> str:
            return col.name if p.use_column_names else col.id

        self._order = [key(col) for col in columns]
        self._stored_columns = [
            (key(col), col.id, make_renderer(col, p.value_format, ctx))
            for col in columns
            if not col.calculated
        ]
        self._calculated = [
            (key(col), state.evaluator(table, col), make_renderer(col, p.value_format, ctx))
            for col in columns
            if col.calculated
        ]
        cacheable = not any(col.type == "lookup" for col in columns)
        cache_key = (table.id, p.value_format, p.use_column_names, p.visible_only)
        self._cache = state.render_cache(cache_key) if cacheable else {}
        self._today = state.today()
        self._rows_href = f"{doc_href(state)}/tables/{table.id}/rows/"
        self._browser = f"{state.config.public_base_url}/d/_d{state.doc.id}#_tu{table.id}/_ru"

    def _stored(self, row: RowRecord) -> tuple[RowRecord, dict[str, Any], str, str, str]:
        """(row, rendered stored cells, createdAt, updatedAt, name), cached per row version."""
        hit = self._cache.get(row.id)
        if hit is not None and hit[0] is row:
            return hit  # type: ignore[no-any-return]
        cells = row.cells
        entry = (
            row,
            {key: render(cells.get(cid)) for key, cid, render in self._stored_columns},
            iso_utc_ms(row.created_ms),
            iso_utc_ms(row.updated_ms),
            self._state.display_text(self._table, row),
        )
        self._cache[row.id] = entry
        return entry

    def values(self, row: RowRecord) -> dict[str, Any]:
        stored = self._stored(row)[1]
        if not self._calculated:
            return stored
        get, today = row.cells.get, self._today
        calc = {key: render(evaluate(get, today)) for key, evaluate, render in self._calculated}
        return {key: calc[key] if key in calc else stored[key] for key in self._order}

    def render(self, row: RowRecord, data: TableData, *, detail: bool = False) -> dict[str, Any]:
        _, _, created, updated, name = self._stored(row)
        out: dict[str, Any] = {
            "id": row.id,
            "type": "row",
            "href": self._rows_href + row.id,
            "name": name,
            "index": data.index_of(row),
            "createdAt": created,
            "updatedAt": updated,
            "browserLink": self._browser + row.id,
            "values": self.values(row),
        }
        if detail:
            out["parent"] = table_ref(self._state, self._table, parent=False)
        return out


def get_row(
    state: EmulatorState, table: TableSpec, ref: str, q: Mapping[str, str]
) -> dict[str, Any]:
    value_format = q.get("valueFormat", "simple")
    if value_format not in VALUE_FORMATS:
        raise ApiError(400, f"Invalid valueFormat '{value_format}'.")
    data = state.snapshot(table)
    row = find_row(data, table, ref)
    if row is None:
        raise ApiError(404, f"Could not find a row with ID or name '{ref}'.")
    p = replace(
        ListParams(limit=1),
        value_format=value_format,
        use_column_names=bool(parse_bool(q, "useColumnNames")),
    )
    return RowRenderer(state, table, p).render(row, data, detail=True)


def find_row(data: TableData, table: TableSpec, ref: str) -> RowRecord | None:
    """By id, else by display value (an arbitrary match: the oldest, when duplicated)."""
    row = data.get(ref)
    if row is None:
        ids = data.lookup(table.display_column_id, ref)
        row = min((data.rows[i] for i in ids), key=lambda r: r.seq, default=None)
    return row
