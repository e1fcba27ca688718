"""Row writes: validate synchronously, parse the cells, queue the mutation, answer 202.

Coda answers 202 "so long as the doc and table exist and are accessible (and the update is
structurally valid)" (§4.2); everything else happens when the mutation applies. Structural
problems (bad JSON, wrong shape, unknown column, a view as upsert target) are 400 now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from daemon.emulator.listing import find_row
from daemon.emulator.model import ApiError, TableSpec
from daemon.emulator.mutations import NORMAL, DeleteOp, Fate, UpdateOp, UpsertOp
from daemon.emulator.resources import parse_bool
from daemon.emulator.state import EmulatorState
from daemon.emulator.values import Cell

_ROW_ID = re.compile(r"^i-[A-Za-z0-9_-]{1,64}$")


def _object(value: Any, what: str, allowed: set[str], state: EmulatorState) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object.")
    unknown = sorted(set(value) - allowed)
    if unknown and state.config.unknown_body_fields == "reject":
        raise ApiError(400, f"{what} has unknown field(s): {', '.join(unknown)}.")
    return value


def _cells(
    state: EmulatorState, table: TableSpec, row: Any, where: str, *, disable: bool
) -> dict[str, Cell]:
    row = _object(row, where, {"cells"}, state)
    cells = row.get("cells")
    if not isinstance(cells, list):
        raise ApiError(400, f"{where}.cells must be an array.")
    pairs: list[tuple[str, Any]] = []
    for n, cell in enumerate(cells):
        cell = _object(cell, f"{where}.cells[{n}]", {"column", "value"}, state)
        if not isinstance(cell.get("column"), str) or "value" not in cell:
            raise ApiError(400, f"{where}.cells[{n}] needs a string 'column' and a 'value'.")
        pairs.append((cell["column"], cell["value"]))
    return state.parse_cells(table, pairs, disable_parsing=disable)


def upsert_rows(
    state: EmulatorState,
    table: TableSpec,
    body: Any,
    q: Mapping[str, str],
    *,
    token_hash: str | None,
    fate: Fate = NORMAL,
) -> dict[str, Any]:
    """POST …/rows -> {requestId, addedRowIds (only without keyColumns)}."""
    cfg = state.config
    if table.table_type != "table":
        raise ApiError(400, "Rows can only be inserted or upserted into base tables, not views.")
    allowed = {"rows", "keyColumns"} | ({"rowIds"} if cfg.row_ids_field != "reject" else set())
    if isinstance(body, dict) and "rowIds" in body and cfg.row_ids_field == "reject":
        raise ApiError(400, "Unknown field 'rowIds' in request body.")
    body = _object(body, "Request body", allowed, state)
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise ApiError(400, "Request body must contain a 'rows' array.")
    if cfg.max_upsert_rows is not None and len(rows) > cfg.max_upsert_rows:
        raise ApiError(400, f"Too many rows in one request (max {cfg.max_upsert_rows}).")
    key_refs = body.get("keyColumns") or []
    if not isinstance(key_refs, list) or not all(isinstance(k, str) for k in key_refs):
        raise ApiError(400, "'keyColumns' must be an array of column IDs or names.")
    keys = []
    for ref in key_refs:
        col = table.column(ref)
        if col is None:
            raise ApiError(400, f"Unknown key column '{ref}' in table '{table.id}'.")
        keys.append(col.id)
    disable = bool(parse_bool(q, "disableParsing"))
    parsed = []
    for n, row in enumerate(rows):
        cells = _cells(state, table, row, f"rows[{n}]", disable=disable)
        missing = [k for k in keys if k not in cells]
        if missing:
            raise ApiError(400, f"rows[{n}] has no value for key column(s) {', '.join(missing)}.")
        parsed.append(cells)
    given = body.get("rowIds") if cfg.row_ids_field == "honor" else None
    if given is not None:
        if (
            not isinstance(given, list)
            or len(given) != len(rows)
            or not all(isinstance(i, str) and _ROW_ID.match(i) for i in given)
        ):
            raise ApiError(400, "'rowIds' must hold one row ID (i-…) per row.")
        new_ids = tuple(given)
    else:
        new_ids = tuple(state.new_row_id() for _ in rows)
    op = UpsertOp(
        table.base_table_id, tuple(parsed), tuple(keys), new_ids, ids_given=given is not None
    )
    mutation = state.submit(op, token_hash=token_hash, fate=fate)
    out: dict[str, Any] = {"requestId": mutation.request_id}
    if not keys:
        out["addedRowIds"] = list(new_ids)
    return out


def update_row(
    state: EmulatorState,
    table: TableSpec,
    ref: str,
    body: Any,
    q: Mapping[str, str],
    *,
    token_hash: str | None,
    fate: Fate = NORMAL,
) -> dict[str, Any]:
    """PUT …/rows/{row} -> {id, requestId}; only the listed cells change."""
    row = find_row(state.truth(table), table, ref)
    if row is None:
        raise ApiError(404, f"Could not find a row with ID or name '{ref}'.")
    body = _object(body, "Request body", {"row"}, state)
    if "row" not in body:
        raise ApiError(400, "Request body must contain 'row'.")
    cells = _cells(state, table, body["row"], "row", disable=bool(parse_bool(q, "disableParsing")))
    op = UpdateOp(table.base_table_id, row.id, cells)
    mutation = state.submit(op, token_hash=token_hash, fate=fate)
    return {"id": row.id, "requestId": mutation.request_id}


def delete_row(
    state: EmulatorState,
    table: TableSpec,
    ref: str,
    *,
    token_hash: str | None,
    fate: Fate = NORMAL,
) -> dict[str, Any]:
    """DELETE …/rows/{row} -> {id, requestId}."""
    row = find_row(state.truth(table), table, ref)
    if row is None:
        raise ApiError(404, f"Could not find a row with ID or name '{ref}'.")
    op = DeleteOp(table.base_table_id, (row.id,))
    mutation = state.submit(op, token_hash=token_hash, fate=fate)
    return {"id": row.id, "requestId": mutation.request_id}


def delete_rows(
    state: EmulatorState,
    table: TableSpec,
    body: Any,
    *,
    token_hash: str | None,
    fate: Fate = NORMAL,
) -> dict[str, Any]:
    """DELETE …/rows {rowIds} -> {rowIds, requestId}; unknown ids are ignored (always 202)."""
    body = _object(body, "Request body", {"rowIds"}, state)
    ids = body.get("rowIds")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "Request body must contain a non-empty 'rowIds' array.")
    op = DeleteOp(table.base_table_id, tuple(ids))
    mutation = state.submit(op, token_hash=token_hash, fate=fate)
    return {"rowIds": list(ids), "requestId": mutation.request_id}
