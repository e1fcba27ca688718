"""Metadata payloads: whoami (User), Doc, tables (TableList/Table), columns (ColumnList/Column).

Shapes and key order follow the recorded live responses (S17): list items carry no `parent`
for columns; table list items do; `display: true` only on the display column; `calculated`
and `formula` only on calculated columns; a Table carries the undeclared `viewId`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.emulator import tokens
from daemon.emulator.model import ApiError, ColumnSpec, TableSpec
from daemon.emulator.state import EmulatorState
from daemon.emulator.values import iso_utc_ms

_PALETTE = (
    ("#E8F0FE", "#1A4FA0"),
    ("#FCE8E6", "#A50E0E"),
    ("#E6F4EA", "#0D652D"),
    ("#FEF7E0", "#8A5A00"),
    ("#F3E8FD", "#6A1B9A"),
    ("#E4F7FB", "#00607A"),
)


def api_base(state: EmulatorState) -> str:
    return f"{state.config.public_base_url}/apis/v1"


def doc_href(state: EmulatorState) -> str:
    return f"{api_base(state)}/docs/{state.doc.id}"


def doc_browser(state: EmulatorState) -> str:
    return f"{state.config.public_base_url}/d/_d{state.doc.id}"


def parse_int(params: Mapping[str, str], name: str, default: int, *, cap: int | None = None) -> int:
    """A positive integer query parameter (400 if malformed); silently capped at `cap`."""
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"Invalid value for '{name}': '{text}'.") from None
    if value < 1:
        raise ApiError(400, f"'{name}' must be at least 1.")
    return min(value, cap) if cap is not None else value


def parse_bool(params: Mapping[str, str], name: str) -> bool | None:
    text = params.get(name)
    if text is None:
        return None
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise ApiError(400, f"Invalid boolean value for '{name}': '{text}'.")


def whoami(state: EmulatorState) -> dict[str, Any]:
    cfg = state.config
    return {
        "name": cfg.user_name,
        "loginId": cfg.user_email,
        "type": "user",
        "href": f"{api_base(state)}/whoami",
        "tokenName": cfg.token_name,
        "scoped": False,
        "pictureLink": "https://cdn.coda.io/avatars/default_avatar.png",
        "workspace": _workspace(state),
    }


def _workspace(state: EmulatorState) -> dict[str, Any]:
    doc = state.doc
    return {
        "id": doc.workspace_id,
        "type": "workspace",
        "browserLink": f"{state.config.public_base_url}/docs?workspaceId={doc.workspace_id}",
        "name": doc.workspace_name,
    }


def get_doc(state: EmulatorState) -> dict[str, Any]:
    doc, base = state.doc, state.config.public_base_url
    rows = sum(len(data) for data in state.visible.values())
    updated = max([doc.created_ms, *(d.last_change_ms for d in state.visible.values())])
    return {
        "id": doc.id,
        "type": "doc",
        "href": doc_href(state),
        "browserLink": doc_browser(state),
        "name": doc.name,
        "owner": doc.owner_email,
        "ownerName": doc.owner_name,
        "createdAt": iso_utc_ms(doc.created_ms),
        "updatedAt": iso_utc_ms(updated),
        "icon": {
            "name": "people",
            "type": "image/png",
            "browserLink": "https://cdn.coda.io/icons/png/color/people-128.png",
        },
        "docSize": {
            "totalRowCount": rows,
            "tableAndViewCount": len(state.tables),
            "pageCount": doc.page_count,
            "overApiSizeLimit": state.config.over_api_size_limit,
            "baseTableCount": len(state.true),
        },
        "sourceDoc": {
            "id": doc.source_doc_id,
            "type": "doc",
            "href": f"{api_base(state)}/docs/{doc.source_doc_id}",
            "browserLink": f"{base}/d/_d{doc.source_doc_id}",
        },
        "workspaceId": doc.workspace_id,
        "folderId": doc.folder_id,
        "workspace": _workspace(state),
        "folder": {
            "id": doc.folder_id,
            "type": "folder",
            "browserLink": f"{base}/folders/{doc.folder_id}",
            "name": doc.folder_name,
        },
    }


def page_ref(state: EmulatorState, table: TableSpec) -> dict[str, Any]:
    page = table.page
    return {
        "id": page.id,
        "type": "page",
        "href": f"{doc_href(state)}/pages/{page.id}",
        "browserLink": f"{doc_browser(state)}/_su{page.id[-6:]}",
        "name": page.name,
    }


def table_ref(state: EmulatorState, table: TableSpec, *, parent: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": table.id,
        "type": "table",
        "tableType": table.table_type,
        "href": f"{doc_href(state)}/tables/{table.id}",
        "browserLink": f"{doc_browser(state)}#_tu{table.id}",
        "name": table.name,
    }
    if parent:
        out["parent"] = page_ref(state, table)
    return out


def get_table(state: EmulatorState, table: TableSpec) -> dict[str, Any]:
    data = state.snapshot(table)
    out: dict[str, Any] = {
        "id": table.id,
        "type": "table",
        "tableType": table.table_type,
        "href": f"{doc_href(state)}/tables/{table.id}",
        "browserLink": f"{doc_browser(state)}#_tu{table.id}",
        "parent": page_ref(state, table),
        "name": table.name,
        "displayColumn": {
            "id": table.display_column_id,
            "type": "column",
            "href": f"{doc_href(state)}/tables/{table.id}/columns/{table.display_column_id}",
        },
        "rowCount": len(data),
        "createdAt": iso_utc_ms(table.created_ms),
        "updatedAt": iso_utc_ms(max(table.created_ms, data.last_change_ms)),
        "viewId": "default",
        "sorts": [],
        "layout": table.layout,
    }
    if table.table_type == "view":
        out["parentTable"] = table_ref(state, state.tables[table.base_table_id])
    return out


def list_tables(state: EmulatorState, params: Mapping[str, str]) -> dict[str, Any]:
    token = _page_token(params)
    if token is not None:
        limit, offset = token["limit"], token["offset"]
        types = list(token.get("tableTypes") or [])
        sort_by = token.get("sortBy")
    else:
        limit, offset = parse_int(params, "limit", 25), 0
        types = [t for t in (params.get("tableTypes") or "").split(",") if t]
        sort_by = params.get("sortBy")
        if any(t not in ("table", "view") for t in types) or sort_by not in (None, "name"):
            raise ApiError(400, "Invalid tableTypes or sortBy.")
    tables = [t for t in state.tables.values() if not types or t.table_type in types]
    if sort_by == "name":
        tables.sort(key=lambda t: t.name)
    extra = {"tableTypes": types} | ({"sortBy": sort_by} if sort_by else {})
    items = [table_ref(state, t) for t in tables[offset : offset + limit]]
    return _paged(state, f"{doc_href(state)}/tables", items, limit, offset, len(tables), extra)


def format_json(col: ColumnSpec) -> dict[str, Any]:
    out: dict[str, Any] = dict(col.format_extra)
    if col.ref_table is not None:
        out["table"] = dict(col.ref_table)
    if col.type == "select":
        out["options"] = [
            {"name": name, "backgroundColor": bg, "foregroundColor": fg}
            for name, (bg, fg) in zip(
                col.options,
                (_PALETTE[i % len(_PALETTE)] for i in range(len(col.options))),
                strict=True,
            )
        ]
    out["type"] = col.type
    out["isArray"] = col.is_array
    return out


def column_json(
    state: EmulatorState, table: TableSpec, col: ColumnSpec, *, detail: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": col.id,
        "type": "column",
        "name": col.name,
        "href": f"{doc_href(state)}/tables/{table.id}/columns/{col.id}",
    }
    if col.display:
        out["display"] = True
    if col.calculated:
        out["calculated"] = True
    out["format"] = format_json(col)
    if col.formula is not None:
        out["formula"] = col.formula
    if detail:
        out["parent"] = table_ref(state, table, parent=False)
    return out


def list_columns(
    state: EmulatorState, table: TableSpec, params: Mapping[str, str]
) -> dict[str, Any]:
    cap = state.config.max_column_page_limit
    token = _page_token(params)
    if token is not None:
        limit, offset, visible_only = (
            min(token["limit"], cap),
            token["offset"],
            token.get("visibleOnly"),
        )
    else:
        limit, offset = parse_int(params, "limit", 25, cap=cap), 0
        visible_only = parse_bool(params, "visibleOnly")
    columns = [c for c in table.columns if not (visible_only and c.id in table.hidden_column_ids)]
    items = [column_json(state, table, c) for c in columns[offset : offset + limit]]
    extra = {} if visible_only is None else {"visibleOnly": visible_only}
    href = f"{doc_href(state)}/tables/{table.id}/columns"
    return _paged(state, href, items, limit, offset, len(columns), extra)


def get_column(state: EmulatorState, table: TableSpec, ref: str) -> dict[str, Any]:
    col = table.column(ref)
    if col is None:
        raise ApiError(404, f"Could not find a column with ID or name '{ref}'.")
    return column_json(state, table, col, detail=True)


def _page_token(params: Mapping[str, str]) -> dict[str, Any] | None:
    if "pageToken" not in params:
        return None
    token = tokens.decode(params["pageToken"])
    if (
        token is None
        or not isinstance(token.get("limit"), int)
        or not isinstance(token.get("offset"), int)
        or token["limit"] < 1
        or token["offset"] < 0
    ):
        raise ApiError(400, "Invalid page token.")
    return token


def _paged(
    state: EmulatorState,
    href: str,
    items: list[dict[str, Any]],
    limit: int,
    offset: int,
    total: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    def token(at: int) -> str:
        base = {"limit": limit, "offset": at, "opVersion": state.op_version}
        return tokens.encode(base | {"schemaVersion": state.config.schema_version} | extra)

    out: dict[str, Any] = {"items": items, "href": f"{href}?pageToken={token(offset)}"}
    if offset + limit < total:
        out["nextPageToken"] = token(offset + limit)
        out["nextPageLink"] = f"{href}?pageToken={out['nextPageToken']}"
    return out
