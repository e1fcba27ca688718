"""The client against Coda's contract: its request bodies validate against the published
OpenAPI schemas, and real recorded Coda answers parse (directly and replayed through the
client, which must ask for exactly the recorded paths).

Reference data is read in place (see tests/contract_spec.py); tests skip if it is absent.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from daemon.clock import FakeClock
from daemon.coda import schema
from daemon.coda.client import CodaClient
from daemon.coda.pacing import RateLimiter
from daemon.errors import CodaPayloadError
from tests import contract_spec
from tests.contract_spec import RecordedCall

_ID = r"[^/]+"
_TABLE = rf"/docs/{_ID}/tables/{_ID}"
#: (method, path pattern) -> (operationId, parser or None when the daemon has no use for it)
OPERATIONS: list[tuple[str, str, str, Callable[[object], object] | None]] = [
    ("GET", r"/whoami", "whoami", schema.parse_user),
    ("GET", rf"/docs/{_ID}", "getDoc", schema.parse_doc),
    ("GET", rf"/docs/{_ID}/tables", "listTables", None),
    ("GET", _TABLE, "getTable", schema.parse_table),
    ("GET", rf"{_TABLE}/columns", "listColumns", schema.parse_column_page),
    ("GET", rf"{_TABLE}/columns/{_ID}", "getColumn", schema.parse_column),
    ("GET", rf"{_TABLE}/rows", "listRows", schema.parse_row_page),
    ("GET", rf"{_TABLE}/rows/{_ID}", "getRow", schema.parse_row),
    ("POST", rf"{_TABLE}/rows", "upsertRows", schema.parse_write_result),
    ("PUT", rf"{_TABLE}/rows/{_ID}", "updateRow", schema.parse_write_result),
    ("DELETE", rf"{_TABLE}/rows", "deleteRows", schema.parse_write_result),
    ("DELETE", rf"{_TABLE}/rows/{_ID}", "deleteRow", schema.parse_write_result),
    ("GET", rf"/mutationStatus/{_ID}", "getMutationStatus", schema.parse_mutation_status),
]


def operation_of(call: RecordedCall) -> tuple[str, Callable[[object], object] | None]:
    for method, pattern, operation_id, parser in OPERATIONS:
        if call.method == method and re.fullmatch(pattern, call.path):
            return operation_id, parser
    raise AssertionError(f"no operation known for {call.method} {call.path}")


def _calls(*, parsed_only: bool = False) -> list[Any]:
    if not contract_spec.RECORDED_DIR.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason="recorded Coda traffic absent"))]
    return [
        pytest.param(call, id=call.id)
        for call in contract_spec.recorded_calls()
        if not parsed_only or operation_of(call)[1] is not None
    ]


CALLS = _calls()
PARSED_CALLS = _calls(parsed_only=True)  # not listTables: the daemon addresses tables by id


# --- recorded answers ---------------------------------------------------------------------------


def test_every_recorded_call_maps_to_an_operation() -> None:
    """The recording covers the calls the daemon makes; none is left unclassified."""
    operations = {operation_of(call)[0] for call in contract_spec.recorded_calls()}
    needed = {op for _, _, op, parser in OPERATIONS if parser is not None} - {"getColumn"}
    assert needed <= operations


@pytest.mark.parametrize("call", PARSED_CALLS)
def test_recorded_answer_parses(call: RecordedCall) -> None:
    """Every real Coda answer the daemon reads parses with the schema parsers."""
    _, parser = operation_of(call)
    assert parser is not None
    assert parser(call.response) is not None


@pytest.mark.parametrize("call", CALLS)
def test_recorded_answer_matches_the_relaxed_spec(call: RecordedCall) -> None:
    """Real answers validate against the relaxed published schema (so the relaxed validators
    are fit to judge an emulator's answers)."""
    operation_id, _ = operation_of(call)
    status = contract_spec.success_status(operation_id)
    validator = contract_spec.response_validator(operation_id, status)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(call.response)]
    assert errors == []


def test_strict_spec_rejects_real_answers_which_is_why_the_helper_relaxes_it() -> None:
    """Documents the deviation: a real Table has `viewId`, a real Doc `docSize.baseTableCount`."""
    by_file = {call.file: call for call in contract_spec.recorded_calls()}
    strict_table = contract_spec.response_validator("getTable", "200", strict=True)
    strict_doc = contract_spec.response_validator("getDoc", "200", strict=True)
    assert not strict_table.is_valid(by_file["get-table.test.json"].response)
    assert not strict_doc.is_valid(by_file["get-doc.test.json"].response)


def test_parsed_recorded_values_keep_real_world_quirks() -> None:
    """Non-`c-` value keys, nextSyncToken on page 1, and write results of every kind."""
    by_file = {call.file: call for call in contract_spec.recorded_calls()}
    page = schema.parse_row_page(by_file["list-rows.test.json"].response)
    assert len(page.items) == 5
    assert page.next_page_token and page.next_sync_token
    assert {"value", "synced", "connection"} <= set(page.items[0].values)
    single = schema.parse_row_page(by_file["rows.test.json"].response)
    assert (len(single.items), single.next_page_token, bool(single.next_sync_token)) == (
        21,
        None,
        True,
    )
    table = schema.parse_table(by_file["get-table.test.json"].response)
    assert (table.table_type, table.row_count, table.display_column_id) == (
        "table",
        10,
        "c-gw0dy6nsJ9",
    )
    doc = schema.parse_doc(by_file["get-doc.test.json"].response)
    assert (doc.over_api_size_limit, doc.total_row_count) == (False, 0)
    user = schema.parse_user(by_file["get-user.test.json"].response)
    assert (user.login_id, user.scoped, user.token_name) == (
        "api@nango.dev",
        False,
        "NangoFunction",
    )
    columns = schema.parse_column_page(by_file["columns.test.json"].response).items
    assert sum(c.display for c in columns) == 1
    assert any(c.calculated and c.formula for c in columns)
    deleted = schema.parse_write_result(by_file["delete-rows.test.json"].response)
    assert deleted.row_ids == ["i-kDdt82sG5U", "i-i_EKdmuQqN"]
    assert deleted.request_id.startswith("mutate:")


# --- replay through the client ------------------------------------------------------------------


def replaying(calls: list[RecordedCall], seen: list[httpx.Request]) -> httpx.AsyncClient:
    """A client whose transport answers each (method, raw path) with its recorded answer."""
    answers = {(c.method, c.path): c for c in calls}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.raw_path.split(b"?")[0].decode().removeprefix("/apis/v1")
        call = answers.get((request.method, path))
        if call is None:
            body = {"statusCode": 404, "statusMessage": "Not Found", "message": f"no {path}"}
            return httpx.Response(404, json=body)
        return httpx.Response(200, json=call.response)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def new_client(http: httpx.AsyncClient) -> CodaClient:
    clock = FakeClock()
    return CodaClient(
        http, token="t", limiter=RateLimiter(clock), clock=clock, rng=random.Random(1)
    )


def split(path: str) -> list[str]:
    from urllib.parse import unquote

    return [unquote(part) for part in path.strip("/").split("/")]


@pytest.mark.anyio
async def test_client_replays_every_recorded_call_on_the_recorded_path() -> None:
    """Each client method asks for exactly the path Coda was asked (ids encoded the same,
    `mutate:` as `mutate%3A`), and parses the real answer."""
    calls = contract_spec.recorded_calls()
    seen: list[httpx.Request] = []
    results: dict[str, object] = {}
    async with replaying(calls, seen) as http:
        client = new_client(http)
        for call in calls:
            operation_id, _ = operation_of(call)
            parts = split(call.path)
            if operation_id == "whoami":
                results[call.file] = await client.whoami()
            elif operation_id == "getDoc":
                results[call.file] = await client.get_doc(parts[1])
            elif operation_id == "getTable":
                results[call.file] = await client.get_table(parts[1], parts[3])
            elif operation_id == "listColumns":
                results[call.file] = await client.list_columns(parts[1], parts[3])
            elif operation_id == "listRows":
                pages = client.list_rows(parts[1], parts[3])
                results[call.file] = await anext(pages)
                await pages.aclose()  # page 2 was not recorded
            elif operation_id == "getRow":
                results[call.file] = await client.get_row(parts[1], parts[3], parts[5])
            elif operation_id == "upsertRows":
                rows = [[(c["column"], c["value"]) for c in r["cells"]] for r in call.body["rows"]]
                results[call.file] = await client.upsert_rows(
                    parts[1], parts[3], rows, key_columns=[]
                )
            elif operation_id == "updateRow":
                cells = [(c["column"], c["value"]) for c in call.body["row"]["cells"]]
                results[call.file] = await client.update_row(parts[1], parts[3], parts[5], cells)
            elif operation_id == "deleteRows":
                results[call.file] = await client.delete_rows(
                    parts[1], parts[3], call.body["rowIds"]
                )
            elif operation_id == "deleteRow":
                results[call.file] = await client.delete_row(parts[1], parts[3], parts[5])
            elif operation_id == "getMutationStatus":
                results.setdefault(call.file + ":status", await client.mutation_status(parts[1]))

    sent = {
        (r.method, r.url.raw_path.split(b"?")[0].decode().removeprefix("/apis/v1")) for r in seen
    }
    expected = {
        (c.method, c.path) for c in calls if operation_of(c)[0] not in {"listTables", "getColumn"}
    }
    assert sent == expected
    assert client.stats.count(outcome="ok") == len(seen)
    assert isinstance(results["get-user.test.json"], schema.UserInfo)
    upserted = results["upsert-rows.test.json"]
    assert isinstance(upserted, schema.WriteResult)
    assert upserted.added_row_ids == ["i-AyUZM1nqQk"]
    status = results["get-mutation-status.test.json:status"]
    assert status == schema.MutationStatus(completed=True)


@pytest.mark.anyio
async def test_client_sends_the_recorded_write_bodies_byte_for_byte_in_json() -> None:
    """For the recorded upsert, update and bulk delete, the client's JSON equals what was sent
    to the real Coda (the bodies Coda accepted)."""
    calls = {c.file: c for c in contract_spec.recorded_calls() if c.method != "GET"}
    seen: list[httpx.Request] = []
    async with replaying(list(calls.values()), seen) as http:
        client = new_client(http)
        upsert = calls["upsert-rows.test.json"]
        doc, table = split(upsert.path)[1], split(upsert.path)[3]
        cells = [[(c["column"], c["value"]) for c in r["cells"]] for r in upsert.body["rows"]]
        await client.upsert_rows(doc, table, cells, key_columns=[])
        update = calls["update-row.test.json"]
        parts = split(update.path)
        await client.update_row(parts[1], parts[3], parts[5], [("c-i_UwVI012F", "Nango Test Save")])
        delete = calls["delete-rows.test.json"]
        parts = split(delete.path)
        await client.delete_rows(parts[1], parts[3], ["i-kDdt82sG5U", "i-i_EKdmuQqN"])

    assert [json.loads(r.content) for r in seen] == [upsert.body, update.body, delete.body]


# --- request bodies against the published request schemas ----------------------------------------

VALUES: list[Any] = [
    "text",
    "",
    0,
    -3,
    12.34,
    True,
    False,
    ["a", "b"],
    [1, 2.5, True],
    [["x"], "y"],
]


@pytest.mark.anyio
async def test_every_request_body_validates_against_the_published_schemas() -> None:
    """Upsert, update and delete bodies validate *strictly* (no extra fields) against
    RowsUpsert, RowUpdate and RowsDelete, for every kind of value the client can send."""
    bodies: dict[str, list[Any]] = {"POST": [], "PUT": [], "DELETE": []}

    def handler(request: httpx.Request) -> httpx.Response:
        bodies[request.method].append(json.loads(request.content))
        return httpx.Response(202, json={"requestId": "mutate:1", "id": "i-1", "rowIds": ["i-1"]})

    cells = [(f"c-{i}", value) for i, value in enumerate(VALUES)]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = new_client(http)
        await client.upsert_rows("d", "grid-t", [cells, cells[:1]], key_columns=["c-0"])
        await client.upsert_rows("d", "grid-t", [cells], key_columns=[], disable_parsing=True)
        batches = client.upsert_rows_batched(
            "d", "grid-t", [cells] * 3, key_columns=["c-0", "c-1"], batch_size=2
        )
        assert len([result async for result in batches]) == 2
        await client.update_row("d", "grid-t", "i-1", cells)
        await client.delete_rows("d", "grid-t", ["i-1", "i-2"])

    checks = [
        ("POST", "RowsUpsert", "upsertRows"),
        ("PUT", "RowUpdate", "updateRow"),
        ("DELETE", "RowsDelete", "deleteRows"),
    ]
    for method, schema_name, operation_id in checks:
        assert bodies[method], method
        assert contract_spec.request_schema(operation_id) == {
            "$ref": f"#/components/schemas/{schema_name}"
        }
        validator = contract_spec.validator_for(schema_name, strict=True)
        for body in bodies[method]:
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
            assert errors == [], (method, body)


def test_the_strict_validator_would_catch_a_bad_body() -> None:
    """The oracle has teeth: an extra field, an object value or a missing key fail."""
    upsert = contract_spec.validator_for("RowsUpsert", strict=True)
    assert not upsert.is_valid({"rows": [], "rowIds": ["i-1"]})
    assert not upsert.is_valid({"rows": [{"cells": [{"column": "c", "value": {"a": 1}}]}]})
    assert not contract_spec.validator_for("RowsDelete", strict=True).is_valid({})


# --- parser leniency and strictness ------------------------------------------------------------

T0 = "2026-01-05T09:00:00Z"
MINIMAL_ROW = {"id": "i-1", "createdAt": T0, "updatedAt": T0, "values": {"Name with spaces": "x"}}


def test_parsers_are_lenient_where_coda_deviates() -> None:
    """Missing optional fields default; extra fields and non-`c-` value keys are accepted."""
    raw = schema.parse_row({**MINIMAL_ROW, "surprise": {"new": "field"}})
    assert (raw.name, raw.index, raw.browser_link) == ("", None, None)
    assert raw.values == {"Name with spaces": "x"}
    column = schema.parse_column({"id": "value", "name": "R", "format": {"type": "packObject"}})
    flags = (column.is_array, column.calculated, column.display, column.formula)
    assert flags == (False, False, False, None)
    doc = schema.parse_doc({"id": "d", "name": "D"})
    assert (doc.over_api_size_limit, doc.total_row_count) == (None, None)
    table = schema.parse_table({"id": "t", "name": "T", "tableType": "view", "rowCount": 3.0})
    assert (table.table_type, table.row_count, table.display_column_id) == ("view", 3, None)
    assert schema.parse_write_result({"requestId": "mutate:1"}) == schema.WriteResult("mutate:1")
    assert schema.parse_mutation_status({"completed": False, "extra": 1}).completed is False


@pytest.mark.parametrize(
    ("parser", "payload", "message"),
    [
        (schema.parse_write_result, {"addedRowIds": []}, "write result has no 'requestId'"),
        (schema.parse_mutation_status, {}, "mutation status has no 'completed' boolean"),
        (schema.parse_mutation_status, {"completed": "yes"}, "invalid 'completed'"),
        (schema.parse_column, {"id": "c-1", "name": "C"}, "column ('c-1') 'format' is not"),
        (schema.parse_column_page, {"items": [{"name": "C"}]}, "column 0 has no 'id'"),
        (schema.parse_table, {"id": "t", "name": "T"}, "table has no 'tableType'"),
        (
            schema.parse_table,
            {"id": "t", "name": "T", "tableType": "table", "rowCount": 1.5},
            "invalid 'rowCount'",
        ),
        (schema.parse_user, {"name": "N"}, "user has no 'loginId'"),
        (schema.parse_row, {**MINIMAL_ROW, "id": ""}, "row has an invalid 'id'"),
        (schema.parse_row, {**MINIMAL_ROW, "createdAt": None}, "row ('i-1') has an invalid"),
        (schema.parse_row_page, {"items": [MINIMAL_ROW], "nextPageToken": 5}, "'nextPageToken'"),
        (schema.parse_doc, "<html>", "doc is not a JSON object"),
    ],
)
def test_parsers_name_what_is_wrong(
    parser: Callable[[object], object], payload: object, message: str
) -> None:
    """Fields the sync relies on are checked, and the error says which one."""
    with pytest.raises(CodaPayloadError) as caught:
        parser(payload)
    assert message in str(caught.value)
