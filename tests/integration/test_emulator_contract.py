"""The emulator's answers against Coda's published spec AND the recorded live responses.

Two oracles (read in place from /work/shared/coda via `tests.contract_spec`; skipped when the
files are absent):

1. every payload the client relies on validates against its OpenAPI component schema and the
   operation's documented response schema, and carries no field the spec does not declare
   beyond the known real-world extras (KNOWN_EXTRAS);
2. its key sets (top level, items, nested objects), token payloads and value shapes equal those
   of the recorded real responses (keys, not values).
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pytest

from daemon.clock import FakeClock
from daemon.emulator import (
    DEFAULT_TOKEN,
    DOC_ID,
    TABLE_ID,
    VIEW_ID,
    EmulatorConfig,
    EmulatorState,
    FaultRule,
    create_app,
    seed_participation,
    tokens,
)
from tests import contract_spec as spec
from tests.contract_spec import RecordedCall

TABLE = f"/docs/{DOC_ID}/tables/{TABLE_ID}"

# Fields real Coda sends (recorded, or documented elsewhere) that spec 1.4.17 does not declare.
KNOWN_EXTRAS = {
    "Table": {"viewId"},  # required by the spec but never declared (recorded get-table)
    "DocSize": {"baseTableCount"},  # recorded get-doc
    "PersonValue": {"userId"},  # observed live by S6 (API-FACTS §8.2)
    "SelectColumnFormat": {"options"},  # declared in spec 1.5.0 (API-FACTS §2.4)
}


@dataclass
class Captured:
    """Every emulator answer the contract checks look at, by name."""

    bodies: dict[str, Any] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)


async def _capture() -> Captured:
    clock = FakeClock()
    state = EmulatorState(EmulatorConfig(rate_limit_enabled=False), clock, random.Random(5))
    seed_participation(state, 30, rng=random.Random(5))
    state.people.add("anna.popova@example.com", "Анна Попова")
    ids = [row.id for row in state.true_records(TABLE_ID)]
    state.ui_update_row(
        TABLE_ID, ids[0], {"c-Employee1": "anna.popova@example.com", "c-Comment01": ""}
    )
    clock.advance(5)
    out = Captured()
    transport = httpx.ASGITransport(app=create_app(state))
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="https://coda.io/apis/v1", headers=headers
    ) as client:

        async def call(name: str, method: str, path: str, **kw: Any) -> Any:
            response = await client.request(method, path, **kw)
            out.statuses[name] = response.status_code
            out.bodies[name] = response.json()
            return out.bodies[name]

        await call("whoami", "GET", "/whoami")
        await call("getDoc", "GET", f"/docs/{DOC_ID}")
        await call("listTables", "GET", f"/docs/{DOC_ID}/tables", params={"limit": "100"})
        await call("listTables.paged", "GET", f"/docs/{DOC_ID}/tables", params={"limit": "1"})
        await call("getTable", "GET", TABLE)
        await call("getTable.view", "GET", f"/docs/{DOC_ID}/tables/{VIEW_ID}")
        await call("listColumns", "GET", f"{TABLE}/columns", params={"limit": "100"})
        await call("listColumns.paged", "GET", f"{TABLE}/columns", params={"limit": "3"})
        await call("getColumn", "GET", f"{TABLE}/columns/c-Activity1")
        await call("listRows.paged", "GET", f"{TABLE}/rows", params={"limit": "5"})
        await call(
            "listRows.named",
            "GET",
            f"{TABLE}/rows",
            params={
                "limit": "100",
                "sortBy": "updatedAt",
                "useColumnNames": "true",
                "valueFormat": "simple",
            },
        )
        await call(
            "listRows.rich", "GET", f"{TABLE}/rows", params={"limit": "100", "valueFormat": "rich"}
        )
        await call(
            "listRows.arrays", "GET", f"{TABLE}/rows", params={"valueFormat": "simpleWithArrays"}
        )
        await call("getRow", "GET", f"{TABLE}/rows/{ids[0]}")
        await call("getRow.rich", "GET", f"{TABLE}/rows/{ids[0]}", params={"valueFormat": "rich"})
        cells = [
            {"column": "c-Activity1", "value": "Contract"},
            {"column": "c-Hours0001", "value": 2},
        ]
        upsert = await call(
            "upsertRows", "POST", f"{TABLE}/rows", json={"rows": [{"cells": cells}]}
        )
        await call(
            "upsertRows.keyed",
            "POST",
            f"{TABLE}/rows",
            json={"rows": [{"cells": cells}], "keyColumns": ["c-Activity1"]},
        )
        await call("updateRow", "PUT", f"{TABLE}/rows/{ids[1]}", json={"row": {"cells": cells[:1]}})
        await call("deleteRow", "DELETE", f"{TABLE}/rows/{ids[2]}")
        await call("deleteRows", "DELETE", f"{TABLE}/rows", json={"rowIds": ids[3:5]})
        status_path = f"/mutationStatus/{quote(upsert['requestId'], safe='')}"
        await call("getMutationStatus.404", "GET", status_path)
        clock.advance(2)
        await call("getMutationStatus", "GET", status_path)
        await call("error.400", "GET", f"{TABLE}/rows", params={"sortBy": "nope"})
        await call("error.401", "GET", f"{TABLE}/rows", headers={"Authorization": "Bearer wrong"})
        await call("error.404", "GET", f"{TABLE}/rows/i-doesnotexist")
        state.faults.add(FaultRule("rate_limit"))
        await call("error.429", "GET", f"{TABLE}/rows")
    return out


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def captured() -> AsyncIterator[Captured]:
    spec.load_spec()  # skip early when the reference data is absent
    yield await _capture()


def recorded(file: str, method: str = "GET", index: int = 0) -> RecordedCall:
    calls = [c for c in spec.recorded_calls() if c.file == file and c.method == method]
    if not calls:
        pytest.skip(f"no recorded {method} call in {file}")
    return calls[index]


# ------------------------------------------------------------------------------- 1. the spec

SCHEMA_CASES = [
    ("whoami", "User", "whoami", "200"),
    ("getDoc", "Doc", "getDoc", "200"),
    ("listTables", "TableList", "listTables", "200"),
    ("listTables.paged", "TableList", "listTables", "200"),
    ("getTable", "Table", "getTable", "200"),
    ("getTable.view", "Table", "getTable", "200"),
    ("listColumns", "ColumnList", "listColumns", "200"),
    ("listColumns.paged", "ColumnList", "listColumns", "200"),
    ("getColumn", "ColumnDetail", "getColumn", "200"),
    ("listRows.paged", "RowList", "listRows", "200"),
    ("listRows.named", "RowList", "listRows", "200"),
    ("listRows.rich", "RowList", "listRows", "200"),
    ("listRows.arrays", "RowList", "listRows", "200"),
    ("getRow", "RowDetail", "getRow", "200"),
    ("getRow.rich", "RowDetail", "getRow", "200"),
    ("upsertRows", "RowsUpsertResult", "upsertRows", "202"),
    ("upsertRows.keyed", "RowsUpsertResult", "upsertRows", "202"),
    ("updateRow", "RowUpdateResult", "updateRow", "202"),
    ("deleteRow", "RowDeleteResult", "deleteRow", "202"),
    ("deleteRows", "RowsDeleteResult", "deleteRows", "202"),
    ("getMutationStatus", "MutationStatus", "getMutationStatus", "200"),
]
ERROR_CASES = [
    ("error.400", "listRows", "400"),
    ("error.401", "listRows", "401"),
    ("error.404", "getRow", "404"),
    ("error.429", "listRows", "429"),
    ("getMutationStatus.404", "getMutationStatus", "404"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "schema", "operation", "status"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
async def test_responses_validate_against_openapi(
    captured: Captured, name: str, schema: str, operation: str, status: str
) -> None:
    """Each answer has its documented status and validates against its schema."""
    assert str(captured.statuses[name]) == status
    body = captured.bodies[name]
    spec.validator_for(schema).validate(body)
    spec.response_validator(operation, status).validate(body)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "operation", "status"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
async def test_error_bodies_validate_against_openapi(
    captured: Captured, name: str, operation: str, status: str
) -> None:
    """Errors carry exactly Coda's statusCode/statusMessage/message body."""
    assert str(captured.statuses[name]) == status
    body = captured.bodies[name]
    spec.response_validator(operation, status, strict=True).validate(body)
    assert set(body) == {"statusCode", "statusMessage", "message"}


def _declared(schema: dict[str, Any]) -> tuple[set[str], str | None]:
    """Declared property names of a (possibly allOf-composed) component schema."""
    components = spec.load_spec()["components"]["schemas"]
    names: set[str] = set()
    title = None
    stack = [schema]
    while stack:
        node = stack.pop()
        if "$ref" in node:
            title = title or node["$ref"].rsplit("/", 1)[1]
            node = components[node["$ref"].rsplit("/", 1)[1]]
        names |= set(node.get("properties", {}))
        stack.extend(node.get("allOf", []))
    return names, title


def _undeclared(value: Any, schema_name: str, path: str = "") -> list[str]:
    """Keys of `value` that the named schema (recursively) does not declare."""
    components = spec.load_spec()["components"]["schemas"]
    if not isinstance(value, dict) or "oneOf" in components[schema_name]:
        return []  # unions (ColumnFormat, CellValue ...) are checked per branch by the caller
    names, _ = _declared({"$ref": f"#/components/schemas/{schema_name}"})
    extra = set(value) - names - KNOWN_EXTRAS.get(schema_name, set())
    problems = [f"{path}.{key} ({schema_name})" for key in sorted(extra)]
    props: dict[str, Any] = {}
    for node in [components[schema_name], *components[schema_name].get("allOf", [])]:
        node = components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        props |= node.get("properties", {})
    for key, child in value.items():
        sub = props.get(key, {})
        ref = sub.get("$ref") or next(
            (p["$ref"] for p in sub.get("allOf", []) if "$ref" in p), None
        )
        item_ref = sub.get("items", {}).get("$ref")
        if ref and isinstance(child, dict):
            problems += _undeclared(child, ref.rsplit("/", 1)[1], f"{path}.{key}")
        elif item_ref and isinstance(child, list):
            for n, item in enumerate(child):
                problems += _undeclared(item, item_ref.rsplit("/", 1)[1], f"{path}.{key}[{n}]")
    return problems


def _format_schema(column_type: str) -> str:
    """The ColumnFormat branch for a type (the discriminator mapping lacks email and link)."""
    schemas = spec.load_spec()["components"]["schemas"]
    mapping = schemas["ColumnFormat"]["discriminator"]["mapping"]
    if column_type in mapping:
        return str(mapping[column_type].rsplit("/", 1)[1])
    named = f"{column_type[0].upper()}{column_type[1:]}ColumnFormat"
    return named if named in schemas else "SimpleColumnFormat"


RICH_TYPES = {"Person": "PersonValue", "MonetaryAmount": "CurrencyValue", "WebPage": "UrlValue"}
RICH_TYPES |= {"StructuredValue": "RowValue"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "schema", "operation", "status"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
async def test_no_undeclared_fields(
    captured: Captured, name: str, schema: str, operation: str, status: str
) -> None:
    """Nothing beyond the spec's properties and the known real-world extras."""
    body = captured.bodies[name]
    problems = _undeclared(body, schema)
    for item in body.get("items", []) if isinstance(body, dict) else []:
        if schema == "ColumnList":
            problems += _undeclared(
                item["format"], _format_schema(item["format"]["type"]), item["id"]
            )
        for cell in item.get("values", {}).values():
            for rich in cell if isinstance(cell, list) else [cell]:
                if isinstance(rich, dict):
                    problems += _undeclared(rich, RICH_TYPES[rich["@type"]], "values")
    assert problems == []


# ------------------------------------------------------------------------------- 2. recorded


def _keys(value: Any) -> set[str]:
    assert isinstance(value, dict), value
    return set(value)


@pytest.mark.anyio
async def test_metadata_key_sets_match_recorded(captured: Captured) -> None:
    """whoami, doc, tables and table have the recorded key sets (nested objects included)."""
    user = recorded("get-user.test.json").response
    ours = captured.bodies["whoami"]
    assert _keys(ours) == _keys(user) and _keys(ours["workspace"]) == _keys(user["workspace"])
    doc = recorded("get-doc.test.json").response
    ours = captured.bodies["getDoc"]
    assert _keys(ours) == _keys(doc)
    for key in ("docSize", "icon", "sourceDoc", "workspace", "folder"):
        assert _keys(ours[key]) == _keys(doc[key]), key
    tables = recorded("tables.test.json").response
    ours = captured.bodies["listTables"]
    assert _keys(ours) == _keys(tables)
    assert {frozenset(t) for t in ours["items"]} == {frozenset(t) for t in tables["items"]}
    assert _keys(ours["items"][0]["parent"]) == _keys(tables["items"][0]["parent"])
    assert {t["tableType"] for t in ours["items"]} == {"table", "view"}
    table = recorded("get-table.test.json").response
    ours = captured.bodies["getTable"]
    assert _keys(ours) == _keys(table)
    assert _keys(ours["displayColumn"]) == _keys(table["displayColumn"])
    assert _keys(captured.bodies["getTable.view"]) == _keys(table) | {"parentTable"}


@pytest.mark.anyio
async def test_column_key_sets_match_recorded(captured: Captured) -> None:
    """Columns: display/calculated/formula only where they apply; formats shaped per type."""
    real = (
        recorded("columns.test.json").response["items"]
        + recorded("list-columns.test.json").response["items"]
    )

    def kind(column: dict[str, Any]) -> str:
        return (
            "display"
            if column.get("display")
            else "calculated"
            if column.get("calculated")
            else "plain"
        )

    column_shapes: dict[str, set[frozenset[str]]] = {}
    for column in real:
        column_shapes.setdefault(kind(column), set()).add(frozenset(column))
    format_shapes: dict[str, set[frozenset[str]]] = {}
    for column in real:
        format_shapes.setdefault(column["format"]["type"], set()).add(frozenset(column["format"]))
    ours = captured.bodies["listColumns"]
    assert _keys(ours) == _keys(recorded("columns.test.json").response)
    for column in ours["items"]:
        assert frozenset(column) in column_shapes[kind(column)], column["id"]
        if column["format"]["type"] in format_shapes:
            assert frozenset(column["format"]) in format_shapes[column["format"]["type"]], column[
                "id"
            ]
    assert sum(bool(c.get("display")) for c in ours["items"]) == 1
    detail = recorded("get-column.test.json").response
    assert _keys(captured.bodies["getColumn"]) == _keys(detail)
    assert _keys(captured.bodies["getColumn"]["parent"]) == _keys(detail["parent"])


@pytest.mark.anyio
async def test_row_key_sets_match_recorded(captured: Captured) -> None:
    """Row lists, rows and single rows have the recorded keys; values keyed per request."""
    paged, single = recorded("list-rows.test.json").response, recorded("rows.test.json").response
    assert _keys(captured.bodies["listRows.paged"]) == _keys(paged)
    assert _keys(captured.bodies["listRows.named"]) == _keys(single)
    row_keys = _keys(single["items"][0])
    for name in ("listRows.paged", "listRows.named", "listRows.rich"):
        assert all(_keys(item) == row_keys for item in captured.bodies[name]["items"]), name
    detail = recorded("get-row.test.json").response
    assert _keys(captured.bodies["getRow"]) == _keys(detail)
    assert _keys(captured.bodies["getRow"]["parent"]) == _keys(detail["parent"])
    named = captured.bodies["listRows.named"]["items"][0]["values"]
    assert "Мероприятие" in named and "c-Activity1" not in named


@pytest.mark.anyio
async def test_write_and_status_key_sets_match_recorded(captured: Captured) -> None:
    """Upsert/update/delete results and mutation status carry the recorded keys."""
    pairs = {
        "upsertRows": ("upsert-rows.test.json", "POST"),
        "updateRow": ("update-row.test.json", "PUT"),
        "deleteRow": ("delete-row.test.json", "DELETE"),
        "deleteRows": ("delete-rows.test.json", "DELETE"),
        "getMutationStatus": ("get-mutation-status.test.json", "GET"),
    }
    for name, (file, method) in pairs.items():
        assert _keys(captured.bodies[name]) == _keys(recorded(file, method).response), name
    assert _keys(captured.bodies["upsertRows.keyed"]) == {"requestId"}
    assert re.fullmatch(r"mutate:[0-9a-f-]{36}", captured.bodies["upsertRows"]["requestId"])
    assert all(
        re.fullmatch(r"i-[A-Za-z0-9_-]{10}", i)
        for i in captured.bodies["upsertRows"]["addedRowIds"]
    )


def _token(link_or_token: str) -> dict[str, Any]:
    text = parse_qs(urlparse(link_or_token).query).get("pageToken", [link_or_token])[0]
    payload = tokens.decode(text)
    assert payload is not None, text
    assert tokens.encode(payload) == text  # same encoding: sorted compact JSON, unpadded
    return payload


@pytest.mark.anyio
async def test_token_payloads_match_recorded(captured: Captured) -> None:
    """Page and sync tokens decode to the recorded key sets and encode byte-identically."""
    paged, single = recorded("list-rows.test.json").response, recorded("rows.test.json").response
    for ours, real in (
        (captured.bodies["listRows.paged"], paged),
        (captured.bodies["listRows.named"], single),
    ):
        for key in ("href", "nextPageToken", "nextSyncToken"):
            if key in real:
                assert _keys(_token(ours[key])) == _keys(_token(real[key])), key
    columns, tables = recorded("columns.test.json").response, recorded("tables.test.json").response
    assert _keys(_token(captured.bodies["listColumns"]["href"])) == _keys(_token(columns["href"]))
    assert _keys(_token(captured.bodies["listTables"]["href"])) == _keys(_token(tables["href"]))
    newest = captured.bodies["listRows.named"]["items"][0]["updatedAt"]
    start = _token(captured.bodies["listRows.named"]["nextSyncToken"])["startAt"]
    assert tokens.start_at_ms(start) == spec_ms(newest)


def spec_ms(stamp: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.anyio
async def test_value_shapes_match_recorded(captured: Captured) -> None:
    """Per column type, simple values have the recorded shapes (dates, numbers, empties)."""
    real_columns = {
        c["name"]: c["format"]["type"] for c in recorded("columns.test.json").response["items"]
    }
    shapes: dict[str, set[str]] = {}
    for row in recorded("rows.test.json").response["items"]:
        for name, value in row["values"].items():
            shapes.setdefault(real_columns[name], set()).add(_shape(value))
    ours_columns = {c["name"]: c["format"]["type"] for c in captured.bodies["listColumns"]["items"]}
    for row in captured.bodies["listRows.named"]["items"]:
        for name, value in row["values"].items():
            known = shapes.get(ours_columns[name], set()) - {"empty"}
            if known and value != "":  # types recorded only empty (person) say nothing more
                assert _shape(value) in known, (name, value)


def _shape(value: Any) -> str:
    if value == "":
        return "empty"
    if isinstance(value, str) and re.fullmatch(
        r"\d{4}-\d\d-\d\dT00:00:00\.000[+-]\d\d:\d\d", value
    ):
        return "local-midnight"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return type(value).__name__
