"""The Coda emulator through HTTP (httpx + ASGITransport) on a FakeClock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from daemon.clock import FakeClock
from daemon.emulator import (
    DEFAULT_TOKEN,
    DOC_ID,
    KEY_COLUMN,
    TABLE_ID,
    VIEW_ID,
    EmulatorConfig,
    EmulatorState,
    FaultRule,
    create_app,
    seed_participation,
)
from daemon.emulator import tokens as tk
from daemon.emulator.values import iso_utc_ms

ROWS = f"/docs/{DOC_ID}/tables/{TABLE_ID}/rows"
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
QUIET = {"rate_limit_enabled": False}


class Emu:
    """A seeded emulator, its fake clock and an authenticated client."""

    def __init__(self, state: EmulatorState, clock: FakeClock, client: httpx.AsyncClient) -> None:
        self.state, self.clock, self.client = state, clock, client

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def rows(self, **params: Any) -> dict[str, Any]:
        response = await self.get(ROWS, **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def all_rows(self, **params: Any) -> list[dict[str, Any]]:
        page = await self.rows(**params)
        items = list(page["items"])
        while "nextPageToken" in page:
            page = await self.rows(pageToken=page["nextPageToken"])
            items += page["items"]
        return items

    async def post(self, rows: list[dict[str, Any]], **extra: Any) -> httpx.Response:
        body = {
            "rows": [{"cells": [{"column": k, "value": v} for k, v in r.items()]} for r in rows]
        }
        return await self.client.post(ROWS, json=body | extra)

    async def status(self, request_id: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"/mutationStatus/{quote(request_id, safe='')}", params=params)

    def settle(self) -> None:
        """Let every queued write apply and become visible."""
        self.clock.advance(self.state.config.apply_delay_seconds)
        self.state.tick()
        self.clock.advance(self.state.config.read_lag_seconds)
        self.state.tick()


async def make_emu(
    n_rows: int = 60, **config: Any
) -> tuple[EmulatorState, FakeClock, httpx.AsyncClient]:
    clock = FakeClock()
    state = EmulatorState(EmulatorConfig(**config), clock, random.Random(7))
    seed_participation(state, n_rows, rng=random.Random(7))
    transport = httpx.ASGITransport(app=create_app(state))
    client = httpx.AsyncClient(
        transport=transport, base_url="https://coda.io/apis/v1", headers=AUTH
    )
    return state, clock, client


@pytest.fixture
async def emu() -> AsyncIterator[Emu]:
    state, clock, client = await make_emu(**QUIET)
    async with client:
        yield Emu(state, clock, client)


async def emu_with(n_rows: int = 60, **config: Any) -> Emu:
    state, clock, client = await make_emu(n_rows, **config)
    return Emu(state, clock, client)


# --------------------------------------------------------------------------------- auth, basics


@pytest.mark.anyio
async def test_missing_or_wrong_token_is_401_with_coda_body(emu: Emu) -> None:
    """No token or an unknown one -> 401 with exactly Coda's three error fields."""
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        response = await emu.client.get("/whoami", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert set(body) == {"statusCode", "statusMessage", "message"}
        assert body["statusCode"] == 401 and body["statusMessage"] == "Unauthorized"


@pytest.mark.anyio
async def test_read_only_token_cannot_write() -> None:
    """A read-only token reads fine but gets 403 on writes."""
    e = await emu_with(read_only_tokens=("ro",), **QUIET)
    headers = {"Authorization": "Bearer ro"}
    assert (await e.client.get(ROWS, headers=headers)).status_code == 200
    response = await e.client.delete(f"{ROWS}/i-nothing", headers=headers)
    assert response.status_code == 403


@pytest.mark.anyio
async def test_api_is_served_with_and_without_base_path(emu: Emu) -> None:
    """Base URLs with or without /apis/v1 both work; unknown paths get Coda's 404 body."""
    root = await emu.client.get("https://coda.io/whoami")
    assert root.status_code == 200 and root.json()["type"] == "user"
    missing = await emu.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404
    assert (await emu.get(f"/docs/other/tables/{TABLE_ID}/rows")).status_code == 404
    assert (await emu.get(f"/docs/{DOC_ID}/tables/Участие")).json()["id"] == TABLE_ID


# --------------------------------------------------------------------------------- listing


@pytest.mark.anyio
async def test_listing_pages_default_25_and_covers_every_row_once(emu: Emu) -> None:
    """Default page is 25 rows; following nextPageToken yields every row exactly once."""
    first = await emu.rows()
    assert len(first["items"]) == 25 and "nextPageToken" in first
    assert first["nextPageLink"].endswith(f"?pageToken={first['nextPageToken']}")
    assert tk.decode(first["href"].split("pageToken=")[1])["offset"] == 0  # type: ignore[index]
    items = await emu.all_rows()
    assert len(items) == 60 == len({row["id"] for row in items})
    created = [row["createdAt"] for row in items]
    assert created == sorted(created)


@pytest.mark.anyio
async def test_limit_is_silently_capped_and_echoed_in_tokens() -> None:
    """limit=1000 returns at most max_page_limit rows; the token carries the capped limit."""
    e = await emu_with(n_rows=30, max_page_limit=10, **QUIET)
    page = await e.rows(limit=1000)
    assert len(page["items"]) == 10
    assert tk.decode(page["nextPageToken"])["limit"] == 10  # type: ignore[index]


@pytest.mark.anyio
async def test_page_token_overrides_every_other_parameter(emu: Emu) -> None:
    """With a pageToken, limit/valueFormat/sortBy sent alongside are ignored."""
    first = await emu.rows(limit=5, valueFormat="rich")
    second = await emu.rows(
        pageToken=first["nextPageToken"], limit=50, valueFormat="simple", sortBy="updatedAt"
    )
    assert len(second["items"]) == 5
    assert second["items"][0]["values"][KEY_COLUMN].startswith("```")
    assert tk.decode(first["nextPageToken"]) == {
        "limit": 5,
        "offset": 5,
        "opVersion": emu.state.op_version,
        "schemaVersion": 177,
        "sortBy": "createdAt",
        "valueFormat": "rich",
    }
    assert (await emu.get(ROWS, pageToken="garbage")).status_code == 400


@pytest.mark.anyio
async def test_sort_by_updated_at_is_newest_first(emu: Emu) -> None:
    """sortBy=updatedAt lists newest first (S17)."""
    items = await emu.all_rows(sortBy="updatedAt", limit=7)
    stamps = [row["updatedAt"] for row in items]
    assert stamps == sorted(stamps, reverse=True) and len(items) == 60


@pytest.mark.anyio
async def test_natural_with_visible_only_false_is_400(emu: Emu) -> None:
    """sortBy=natural implies visibleOnly; an explicit visibleOnly=false is a 400."""
    assert (await emu.get(ROWS, sortBy="natural", visibleOnly="false")).status_code == 400
    assert (await emu.get(ROWS, sortBy="natural")).status_code == 200
    assert (await emu.get(ROWS, sortBy="bogus")).status_code == 400


@pytest.mark.anyio
async def test_page_drift_when_rows_are_added_while_paging(emu: Emu) -> None:
    """Offset paging over the current snapshot: a delete before the cursor skips a row."""
    first = await emu.rows(limit=10)
    emu.state.ui_delete_row(TABLE_ID, first["items"][0]["id"])
    emu.clock.advance(5)
    rest = await emu.all_rows(pageToken=first["nextPageToken"])
    order = [r.id for r in emu.state.true_records(TABLE_ID)]
    assert [r["id"] for r in rest] == order[10:]  # offset 10 of 59 rows: order[9] is skipped
    assert order[9] not in {r["id"] for r in first["items"]}


@pytest.mark.anyio
async def test_query_filters_by_column_id_or_quoted_name(emu: Emu) -> None:
    """query=<col>:<json> is a single equality filter; names must be quoted."""
    row = emu.state.true_records(TABLE_ID)[10]
    key = row.cells[KEY_COLUMN]
    by_id = await emu.rows(query=f'{KEY_COLUMN}:"{key}"')
    by_name = await emu.rows(query=f'"Ключ синхронизации":"{key}"')
    assert [r["id"] for r in by_id["items"]] == [r["id"] for r in by_name["items"]] == [row.id]
    assert tk.decode(by_id["nextSyncToken"])["query"] == f'{KEY_COLUMN}:"{key}"'  # type: ignore[index]
    assert (await emu.get(ROWS, query="c-Nope:1")).status_code == 400
    confirmed = await emu.all_rows(query="c-Confirm01:true", limit=100)
    assert confirmed and all(r["values"]["c-Confirm01"] is True for r in confirmed)


# --------------------------------------------------------------------------------- sync tokens


@pytest.mark.anyio
async def test_sync_token_returns_only_edited_and_new_rows_never_deletions(emu: Emu) -> None:
    """An updatedAt-minted token returns rows edited/created after it, no deletions."""
    minted = await emu.rows(sortBy="updatedAt", limit=5)
    token = minted["nextSyncToken"]
    assert "nextPageToken" in minted  # the first page carries both (S17)
    ids = [r.id for r in emu.state.true_records(TABLE_ID)]
    emu.clock.advance(10)
    emu.state.ui_update_row(TABLE_ID, ids[3], {"c-Hours0001": 7})
    new_id = emu.state.ui_insert_row(TABLE_ID, {"Мероприятие": "Новое"})
    emu.state.ui_delete_row(TABLE_ID, ids[4])
    emu.clock.advance(5)
    changed = await emu.rows(syncToken=token)
    assert [r["id"] for r in changed["items"]] == [new_id, ids[3]]
    assert changed["items"][1]["values"]["c-Hours0001"] == 7
    again = await emu.rows(syncToken=changed["nextSyncToken"])
    assert again["items"] == []
    assert tk.decode(again["nextSyncToken"]) == tk.decode(changed["nextSyncToken"])


@pytest.mark.anyio
async def test_created_at_token_returns_only_new_rows(emu: Emu) -> None:
    """A token minted from the default (createdAt) listing follows creations only."""
    token = (await emu.rows())["nextSyncToken"]
    payload = tk.decode(token)
    assert payload is not None and payload["sortBy"] == "createdAt" and "opVersion" not in payload
    first_id = emu.state.true_records(TABLE_ID)[0].id
    emu.clock.advance(10)
    emu.state.ui_update_row(TABLE_ID, first_id, {"c-Comment01": "edited"})
    new_id = emu.state.ui_insert_row(TABLE_ID, {"c-Activity1": "Новая строка"})
    emu.clock.advance(5)
    assert [r["id"] for r in (await emu.rows(syncToken=token))["items"]] == [new_id]


@pytest.mark.anyio
async def test_sync_boundary_variants() -> None:
    """Exclusive (default) never re-sends the watermark row; inclusive always does."""
    for boundary, expected in (("exclusive", 0), ("inclusive", 1)):
        e = await emu_with(sync_boundary=boundary, **QUIET)
        token = (await e.rows(sortBy="updatedAt"))["nextSyncToken"]
        assert len((await e.rows(syncToken=token))["items"]) == expected


@pytest.mark.anyio
async def test_sync_token_page_variants() -> None:
    """nextSyncToken on the first page (default), on every page, or on the last only."""
    for mode, pages in (
        ("first", [True, False, False]),
        ("every", [True] * 3),
        ("last", [False, False, True]),
    ):
        e = await emu_with(n_rows=25, sync_token_pages=mode, **QUIET)
        page = await e.rows(limit=10)
        carried = ["nextSyncToken" in page]
        while "nextPageToken" in page:
            page = await e.rows(pageToken=page["nextPageToken"])
            carried.append("nextSyncToken" in page)
        assert carried == pages, mode


@pytest.mark.anyio
async def test_bad_sync_token_variants() -> None:
    """A malformed syncToken -> 400 by default, or 410, or is ignored (full listing)."""
    for mode, status in (("bad_request", 400), ("gone", 410), ("ignore", 200)):
        e = await emu_with(bad_sync_token=mode, **QUIET)
        page_token = (await e.rows(limit=5))["nextPageToken"]  # a page token is no sync token
        for bad in ("@@@", page_token):
            response = await e.get(ROWS, syncToken=bad)
            assert response.status_code == status, (mode, bad)
            if status != 200:
                assert response.json()["statusCode"] == status


# --------------------------------------------------------------------------------- writes


@pytest.mark.anyio
async def test_write_applies_after_delay_and_shows_after_lag(emu: Emu) -> None:
    """202 at once; true state changes at +apply_delay; reads see it at +read_lag."""
    response = await emu.post([{"c-Activity1": "Хакатон", KEY_COLUMN: "k-1"}])
    assert response.status_code == 202
    new_id = response.json()["addedRowIds"][0]
    assert new_id.startswith("i-") and len(new_id) == 12
    emu.clock.advance(2.9)
    assert new_id not in {r.id for r in emu.state.true_records(TABLE_ID)}
    emu.clock.advance(0.2)
    assert new_id in {r.id for r in emu.state.true_records(TABLE_ID)}
    assert new_id not in {r["id"] for r in await emu.all_rows(limit=500)}
    emu.clock.advance(1.0)
    row = (await emu.get(f"{ROWS}/{new_id}")).json()
    assert row["createdAt"] == row["updatedAt"] and row["parent"]["id"] == TABLE_ID


@pytest.mark.anyio
async def test_mutation_status_404_then_pending_then_completed_then_expired(emu: Emu) -> None:
    """mutationStatus: 404 at first, completed:false until applied, true, 404 after a day."""
    request_id = (await emu.post([{"c-Activity1": "x"}])).json()["requestId"]
    assert request_id.startswith("mutate:")
    assert (await emu.status(request_id)).status_code == 404
    emu.clock.advance(1.6)
    assert (await emu.status(request_id, _poll="1")).json() == {"completed": False}
    emu.clock.advance(1.5)
    assert (await emu.status(request_id)).json() == {"completed": True}
    emu.clock.advance(86_400)
    assert (await emu.status(request_id)).status_code == 404
    assert (await emu.status("mutate:unknown")).status_code == 404


@pytest.mark.anyio
async def test_upsert_with_key_columns_updates_every_duplicate(emu: Emu) -> None:
    """Rows matching the key are all updated (duplicates stay); others are inserted."""
    a = emu.state.ui_insert_row(TABLE_ID, {KEY_COLUMN: "dup", "c-Activity1": "A"})
    b = emu.state.ui_insert_row(TABLE_ID, {KEY_COLUMN: "dup", "c-Activity1": "B"})
    response = await emu.post(
        [{KEY_COLUMN: "dup", "c-Hours0001": "2.5"}, {KEY_COLUMN: "fresh", "c-Activity1": "C"}],
        keyColumns=[KEY_COLUMN],
    )
    assert response.status_code == 202 and set(response.json()) == {"requestId"}
    emu.settle()
    dup = await emu.rows(query=f'{KEY_COLUMN}:"dup"')
    assert sorted(r["id"] for r in dup["items"]) == sorted([a, b])
    assert all(r["values"]["c-Hours0001"] == 2.5 for r in dup["items"])
    assert len((await emu.rows(query=f'{KEY_COLUMN}:"fresh"'))["items"]) == 1


@pytest.mark.anyio
async def test_update_and_delete_endpoints(emu: Emu) -> None:
    """PUT updates listed cells only; DELETE one and DELETE many apply after the delay."""
    ids = [r.id for r in emu.state.true_records(TABLE_ID)]
    before = emu.state.true_records(TABLE_ID)[0]
    put = await emu.client.put(
        f"{ROWS}/{ids[0]}", json={"row": {"cells": [{"column": "c-Comment01", "value": "ok"}]}}
    )
    assert put.status_code == 202 and put.json()["id"] == ids[0]
    one = await emu.client.delete(f"{ROWS}/{ids[1]}")
    assert one.status_code == 202 and set(one.json()) == {"id", "requestId"}
    many = await emu.client.request("DELETE", ROWS, json={"rowIds": [ids[2], "i-missing000"]})
    assert many.status_code == 202 and many.json()["rowIds"] == [ids[2], "i-missing000"]
    emu.settle()
    after = {r.id: r for r in emu.state.true_records(TABLE_ID)}
    assert ids[1] not in after and ids[2] not in after
    assert after[ids[0]].cells["c-Comment01"] == "ok"
    assert after[ids[0]].cells["c-Activity1"] == before.cells["c-Activity1"]
    assert after[ids[0]].updated_ms > before.updated_ms
    assert (await emu.client.delete(f"{ROWS}/i-missing000")).status_code == 404


@pytest.mark.anyio
async def test_structural_errors_are_400(emu: Emu) -> None:
    """Bad JSON, bad shapes, unknown columns (named) and views as upsert targets -> 400."""
    bad_json = await emu.client.post(
        ROWS, content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert (await emu.client.post(ROWS, json={"rows": "x"})).status_code == 400
    unknown = await emu.post([{"c-Unknown99": "x"}])
    assert unknown.status_code == 400 and "c-Unknown99" in unknown.json()["message"]
    view = await emu.client.post(f"/docs/{DOC_ID}/tables/{VIEW_ID}/rows", json={"rows": []})
    assert view.status_code == 400
    assert (await emu.post([{"c-Activity1": {"obj": 1}}])).status_code == 400
    assert (await emu.post([{"c-Activity1": "x"}], rowIds=["i-abcdefghij"])).status_code == 400


@pytest.mark.anyio
async def test_row_ids_honoured_makes_retried_inserts_idempotent() -> None:
    """With row_ids_field="honor" a retried insert with the same rowIds is a no-op."""
    e = await emu_with(row_ids_field="honor", **QUIET)
    for _ in range(2):
        response = await e.post([{"c-Activity1": "once"}], rowIds=["i-OnceOnly01"])
        assert response.json()["addedRowIds"] == ["i-OnceOnly01"]
    e.settle()
    assert sum(r.cells.get("c-Activity1") == "once" for r in e.state.true_records(TABLE_ID)) == 1


@pytest.mark.anyio
async def test_doc_version_latest_is_400_while_stale(emu: Emu) -> None:
    """X-Coda-Doc-Version: latest -> 400 while the snapshot lags, then the fresh data."""
    row_id = emu.state.true_records(TABLE_ID)[0].id
    emu.state.ui_update_row(TABLE_ID, row_id, {"c-Comment01": "свежий"})
    latest = {"X-Coda-Doc-Version": "latest"}
    stale = await emu.client.get(f"{ROWS}/{row_id}", headers=latest)
    assert stale.status_code == 400 and "latest" in stale.json()["message"]
    assert (await emu.get(f"{ROWS}/{row_id}")).json()["values"]["c-Comment01"] != "свежий"
    emu.clock.advance(1.0)
    fresh = await emu.client.get(f"{ROWS}/{row_id}", headers=latest)
    assert fresh.status_code == 200 and fresh.json()["values"]["c-Comment01"] == "свежий"


@pytest.mark.anyio
async def test_calculated_column_ignores_writes_and_drifts_without_updated_at(emu: Emu) -> None:
    """Writes to a formula column are dropped; formula values change, updatedAt does not."""
    row = emu.state.true_records(TABLE_ID)[0]
    year = row.cells["c-ActDate01"].year  # type: ignore[union-attr]
    put = await emu.client.put(
        f"{ROWS}/{row.id}", json={"row": {"cells": [{"column": "c-Year00001", "value": 1999}]}}
    )
    assert put.status_code == 202
    emu.settle()
    before = (await emu.get(f"{ROWS}/{row.id}")).json()
    assert before["values"]["c-Year00001"] == year
    assert before["updatedAt"] == iso_utc_ms(row.updated_ms)  # the dropped write changed nothing
    emu.state.set_formula(TABLE_ID, "c-Year00001", "Year(Today()) - Year(thisRow.Дата)")
    first = (await emu.get(f"{ROWS}/{row.id}")).json()
    emu.clock.advance(366 * 86_400)
    later = (await emu.get(f"{ROWS}/{row.id}")).json()
    assert later["values"]["c-Year00001"] == first["values"]["c-Year00001"] + 1
    assert later["updatedAt"] == first["updatedAt"] == before["updatedAt"]
    strict = await emu_with(calculated_write="reject", **QUIET)
    rejected = await strict.post([{"c-Year00001": 2000}])
    assert rejected.status_code == 400


# --------------------------------------------------------------------------------- rate limits


@pytest.mark.anyio
async def test_rate_limit_429_without_retry_after_by_default() -> None:
    """The 101st read in 6 s is 429 with Coda's body and no Retry-After (sliding window)."""
    e = await emu_with(n_rows=5)
    for _ in range(100):
        assert (await e.get("/whoami")).status_code == 200
    limited = await e.get("/whoami")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json() == {
        "statusCode": 429,
        "statusMessage": "Too Many Requests",
        "message": "Too Many Requests",
    }
    e.clock.advance(6.01)
    assert (await e.get("/whoami")).status_code == 200


@pytest.mark.anyio
async def test_rate_limit_writes_and_retry_after_variant() -> None:
    """Ten writes per 6 s (DELETE counts); Retry-After is sent when configured."""
    e = await emu_with(n_rows=5, rate_limit_retry_after=True, rate_window="fixed")
    for _ in range(10):
        assert (await e.client.delete(f"{ROWS}/i-none000000")).status_code == 404
    limited = await e.post([{"c-Activity1": "x"}])
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert (await e.get("/whoami")).status_code == 200  # reads have their own budget


# --------------------------------------------------------------------------------- faults


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rule", "status", "label"),
    [
        (FaultRule("http_error", status=503), 503, "http_503"),
        (FaultRule("http_error", status=502), 502, "http_502"),
        (FaultRule("html_error", status=502), 502, "html_502"),
        (FaultRule("rate_limit"), 429, "rate_limit"),
        (FaultRule("rate_limit", retry_after_seconds=3), 429, "rate_limit_retry_after"),
    ],
)
async def test_error_faults(emu: Emu, rule: FaultRule, status: int, label: str) -> None:
    """Scripted error faults hit the next matching request only and are counted."""
    emu.state.faults.add(rule)
    response = await emu.get(ROWS)
    assert response.status_code == status
    if rule.kind == "html_error":
        assert response.headers["content-type"].startswith("text/html")
    else:
        assert response.json()["statusCode"] == status
    if rule.retry_after_seconds:
        assert response.headers["retry-after"] == "3"
    assert (await emu.get(ROWS)).status_code == 200
    assert emu.state.faults.counts[label] == 1


@pytest.mark.anyio
async def test_delay_and_hang_faults_sleep_on_the_injected_clock(emu: Emu) -> None:
    """slow/hang responses sleep on the emulator's clock, then answer normally."""
    emu.state.faults.add(FaultRule("delay", delay_seconds=4.0))
    emu.state.faults.add(FaultRule("hang", endpoint="whoami"))
    assert (await emu.get(ROWS)).status_code == 200
    assert emu.clock.sleeps == [4.0]
    assert (await emu.get("/whoami")).status_code == 200
    assert emu.clock.sleeps == [4.0, 600.0]


@pytest.mark.anyio
async def test_malformed_json_and_listing_faults(emu: Emu) -> None:
    """Truncated JSON, a page without items, and an empty listing that keeps its sync token."""
    emu.state.faults.add(FaultRule("malformed_json"))
    with pytest.raises(ValueError):
        (await emu.get(ROWS)).json()
    emu.state.faults.add(FaultRule("no_items", endpoint="listRows"))
    assert "items" not in (await emu.rows())
    emu.state.faults.add(FaultRule("empty_listing"))
    empty = await emu.rows()
    assert empty["items"] == [] and "nextPageToken" not in empty and "nextSyncToken" in empty
    assert dict(emu.state.faults.counts) == {"malformed_json": 1, "no_items": 1, "empty_listing": 1}


@pytest.mark.anyio
async def test_lost_response_applies_the_write(emu: Emu) -> None:
    """lost_response: the client sees 500 but the write is applied anyway."""
    emu.state.faults.add(FaultRule("lost_response", method="POST"))
    response = await emu.post([{"c-Activity1": "призрак"}])
    assert response.status_code == 500
    emu.settle()
    assert any(r.cells.get("c-Activity1") == "призрак" for r in emu.state.true_records(TABLE_ID))


@pytest.mark.anyio
async def test_never_apply_fault_keeps_mutation_pending_forever(emu: Emu) -> None:
    """never_apply: 202 and a requestId, but completed stays false and nothing changes."""
    emu.state.faults.add(FaultRule("never_apply", access="write"))
    response = await emu.post([{"c-Activity1": "никогда"}])
    assert response.status_code == 202
    emu.clock.advance(3600)
    assert (await emu.status(response.json()["requestId"])).json() == {"completed": False}
    assert emu.state.flush(force=True) == 0
    assert not any(
        r.cells.get("c-Activity1") == "никогда" for r in emu.state.true_records(TABLE_ID)
    )


@pytest.mark.anyio
async def test_random_faults_are_seeded_and_counted() -> None:
    """A random fault rate draws presets from a seeded rng: same seed, same faults."""
    outcomes = []
    for _ in range(2):
        e = await emu_with(
            n_rows=5, random_fault_rate=0.3, random_fault_kinds=("http_500", "html_502"), **QUIET
        )
        statuses = [(await e.get("/whoami")).status_code for _ in range(40)]
        assert sum(s != 200 for s in statuses) == sum(e.state.faults.counts.values()) > 0
        outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]


# --------------------------------------------------------------------------------- values


@pytest.mark.anyio
async def test_every_column_type_renders_per_value_format(emu: Emu) -> None:
    """A row written through the API reads back in simple, simpleWithArrays and rich."""
    emu.state.people.add("maria.ivanova@example.com", "Мария Иванова")
    cells = {
        KEY_COLUMN: "k-values",
        "c-Employee1": "maria.ivanova@example.com",
        "c-Email0001": "maria.ivanova@example.com",
        "c-Activity1": "Митап",
        "c-ActDate01": "2024-03-31",
        "c-Role00001": "спикер",
        "c-Hours0001": "1.5",
        "c-Confirm01": False,
        "c-Tags00001": ["митап", "обучение"],
    }
    row_id = (await emu.post([cells])).json()["addedRowIds"][0]
    emu.settle()
    simple = (await emu.get(f"{ROWS}/{row_id}")).json()["values"]
    arrays = (await emu.get(f"{ROWS}/{row_id}", valueFormat="simpleWithArrays")).json()["values"]
    rich = (await emu.get(f"{ROWS}/{row_id}", valueFormat="rich", useColumnNames="true")).json()[
        "values"
    ]
    assert simple == {
        KEY_COLUMN: "k-values",
        "c-Employee1": "Мария Иванова",
        "c-Email0001": "maria.ivanova@example.com",
        "c-Activity1": "Митап",
        "c-ActDate01": "2024-03-31T00:00:00.000+03:00",
        "c-Role00001": "Спикер",
        "c-Hours0001": 1.5,
        "c-Confirm01": False,
        "c-Tags00001": "митап,обучение",
        "c-Comment01": "",
        "c-Year00001": 2024,
    }
    assert (
        arrays["c-Tags00001"] == ["митап", "обучение"] and arrays["c-Employee1"] == "Мария Иванова"
    )
    assert rich["Мероприятие"] == "```Митап```" and rich["Комментарий"] == ""
    assert rich["Сотрудник"] == {
        "@context": "http://schema.org",
        "@type": "Person",
        "name": "Мария Иванова",
        "email": "maria.ivanova@example.com",
        "userId": emu.state.people.by_email["maria.ivanova@example.com"].user_id,
    }
    assert rich["Теги"] == ["митап", "обучение"] and rich["Год"] == 2024


@pytest.mark.anyio
async def test_dates_follow_doc_time_zone_dst() -> None:
    """In a New York doc, date cells carry -05:00 in winter and -04:00 in summer."""
    e = await emu_with(n_rows=0, doc_timezone="America/New_York", **QUIET)
    for day, offset in (("2024-01-05", "-05:00"), ("7/4/2024", "-04:00")):
        row_id = (await e.post([{"c-ActDate01": day}])).json()["addedRowIds"][0]
        e.settle()
        value = (await e.get(f"{ROWS}/{row_id}")).json()["values"]["c-ActDate01"]
        assert value.endswith("T00:00:00.000" + offset)


# ------------------------------------------------------------------------ control interface


@pytest.mark.anyio
async def test_person_edits_a_row_through_the_http_control_interface(emu: Emu) -> None:
    """A UI edit via /_emulator applies now, shows after the lag, and moves updatedAt."""
    row = emu.state.true_records(TABLE_ID)[5]
    emu.clock.advance(100)
    patch = await emu.client.patch(
        f"https://coda.io/_emulator/tables/{TABLE_ID}/rows/{row.id}",
        json={"values": {"Сотрудник": "ivan.sidorov@example.com", "Подтверждено": True}},
        headers={"Authorization": ""},
    )
    assert patch.status_code == 200
    assert (await emu.get(f"{ROWS}/{row.id}")).json()["updatedAt"] != emu.state.true_rows(TABLE_ID)[
        5
    ]["updatedAt"]
    emu.clock.advance(1.0)
    after = (await emu.get(f"{ROWS}/{row.id}", valueFormat="rich")).json()
    assert after["values"]["c-Employee1"]["name"] == "ivan.sidorov"
    assert after["updatedAt"] == emu.state.true_rows(TABLE_ID)[5]["updatedAt"]
    assert after["updatedAt"] > after["createdAt"]


@pytest.mark.anyio
async def test_control_routes_for_faults_config_log_and_reset(emu: Emu) -> None:
    """Faults, config, counters and the request log over HTTP; reset reseeds."""
    base = "https://coda.io/_emulator"
    add = await emu.client.post(
        f"{base}/faults", json={"kind": "http_error", "status": 503, "endpoint": "whoami"}
    )
    assert add.status_code == 200 and add.json()["armed"][0]["status"] == 503
    assert (await emu.get("/whoami")).status_code == 503
    config = await emu.client.post(
        f"{base}/config", json={"read_lag_seconds": 0, "tokens": ["a", DEFAULT_TOKEN]}
    )
    assert config.json()["read_lag_seconds"] == 0 and emu.state.config.tokens == (
        "a",
        DEFAULT_TOKEN,
    )
    log = (await emu.client.get(f"{base}/requests")).json()["items"]
    assert (
        log[-1]["endpoint"] == "whoami"
        and log[-1]["status"] == 503
        and log[-1]["fault"] == "http_503"
    )
    assert log[-1]["tokenHash"] and DEFAULT_TOKEN not in str(log)
    counters = (await emu.client.get(f"{base}/counters")).json()
    assert counters["byStatusClass"]["5xx"] == 1
    assert (await emu.client.post(f"{base}/config", json={"nope": 1})).status_code == 400
    reset = await emu.client.post(f"{base}/reset", json={"seedRows": 7, "seed": 3})
    assert reset.json()["tables"][TABLE_ID] == {"trueRows": 7, "visibleRows": 7}
    rows = (await emu.client.get(f"{base}/tables/{TABLE_ID}/rows")).json()["items"]
    assert len(rows) == 7 and rows[0]["values"]["c-Year00001"] is not None


@pytest.mark.anyio
async def test_flush_forces_queued_writes_and_visibility(emu: Emu) -> None:
    """flush(force, visible) applies every queued write now and publishes it to reads."""
    new_id = (await emu.post([{"c-Activity1": "сразу"}])).json()["addedRowIds"][0]
    flushed = await emu.client.post(
        "https://coda.io/_emulator/flush", json={"force": True, "visible": True}
    )
    assert flushed.json() == {"applied": 1}
    assert (await emu.get(f"{ROWS}/{new_id}")).status_code == 200


@pytest.mark.anyio
async def test_view_hides_columns_with_visible_only(emu: Emu) -> None:
    """The view lists the base rows; visibleOnly drops its hidden column."""
    view_rows = f"/docs/{DOC_ID}/tables/{VIEW_ID}/rows"
    full = (await emu.get(view_rows)).json()["items"][0]["values"]
    visible = (await emu.get(view_rows, visibleOnly="true")).json()["items"][0]["values"]
    assert "c-Comment01" in full and "c-Comment01" not in visible
    table = (await emu.get(f"/docs/{DOC_ID}/tables/{VIEW_ID}")).json()
    assert table["tableType"] == "view" and table["parentTable"]["id"] == TABLE_ID


@pytest.mark.anyio
async def test_run_emulator_serves_over_a_real_socket() -> None:
    """run_emulator binds a loopback port, reports its base URL and serves the API."""
    import anyio

    from daemon.emulator import run_emulator

    urls: list[str] = []
    bound = anyio.Event()

    def ready(url: str) -> None:
        urls.append(url)
        bound.set()

    async with anyio.create_task_group() as tg:
        config = EmulatorConfig()
        tg.start_soon(lambda: run_emulator(seed_rows=12, token="t-1", config=config, ready=ready))
        with anyio.fail_after(5):
            await bound.wait()
        assert urls[0].startswith("http://127.0.0.1:") and urls[0].endswith("/apis/v1")
        async with httpx.AsyncClient(
            base_url=urls[0], headers={"Authorization": "Bearer t-1"}
        ) as client:
            page = (await client.get(ROWS, params={"limit": 5})).json()
            assert len(page["items"]) == 5 and "nextPageToken" in page
            control = await client.get(urls[0].removesuffix("/apis/v1") + "/_emulator/summary")
            assert control.json()["tables"][TABLE_ID]["trueRows"] == 12
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_slow_and_failed_mutation_faults(emu: Emu) -> None:
    """slow_apply delays one write for minutes; fail_apply completes without changing rows."""
    emu.state.faults.add(FaultRule("slow_apply", delay_seconds=300.0))
    slow = (await emu.post([{"c-Activity1": "медленно"}])).json()
    emu.clock.advance(60)
    assert (await emu.status(slow["requestId"])).json() == {"completed": False}
    emu.clock.advance(241)
    assert (await emu.status(slow["requestId"])).json() == {"completed": True}
    emu.state.faults.add(FaultRule("fail_apply"))
    failed = (await emu.post([{"c-Activity1": "сбой"}])).json()
    emu.settle()
    assert (await emu.status(failed["requestId"])).json() == {"completed": True}
    activities = {r.cells.get("c-Activity1") for r in emu.state.true_records(TABLE_ID)}
    assert "медленно" in activities and "сбой" not in activities


@pytest.mark.anyio
async def test_hang_after_handler_is_a_lost_response(emu: Emu) -> None:
    """A hang after processing: a client that gives up still finds its write applied."""
    emu.state.faults.add(FaultRule("hang", after_handler=True, method="POST"))
    response = await emu.post([{"c-Activity1": "поздно"}])
    assert response.status_code == 202 and emu.clock.sleeps == [600.0]
    assert any(r.cells.get("c-Activity1") == "поздно" for r in emu.state.true_records(TABLE_ID))
    assert emu.state.faults.counts["hang_after"] == 1


@pytest.mark.anyio
async def test_read_lag_jitter_keeps_commit_order() -> None:
    """Random extra lag per change: stale for longer, but never out of commit order."""
    e = await emu_with(read_lag_seconds=1.0, read_lag_jitter_seconds=30.0, **QUIET)
    ids = [r.id for r in e.state.true_records(TABLE_ID)][:5]
    for n, row_id in enumerate(ids):
        e.state.ui_update_row(TABLE_ID, row_id, {"c-Comment01": f"v{n}"})
    seen: list[int] = []
    for _ in range(40):
        e.clock.advance(1)
        e.state.tick()
        data = e.state.visible[TABLE_ID]
        seen.append(
            sum(data.rows[i].cells.get("c-Comment01") == f"v{n}" for n, i in enumerate(ids))
        )
    assert seen == sorted(seen) and seen[-1] == 5 and seen[0] < 5


@pytest.mark.anyio
async def test_column_rename_and_removal(emu: Emu) -> None:
    """Renames change useColumnNames keys (formulas follow); removed columns vanish."""
    emu.state.rename_column(TABLE_ID, "c-ActDate01", "Дата события")
    row = (await emu.rows(useColumnNames="true", limit=1))["items"][0]["values"]
    assert "Дата события" in row and "Дата" not in row and isinstance(row["Год"], int)
    column = (await emu.get(f"/docs/{DOC_ID}/tables/{TABLE_ID}/columns/c-Year00001")).json()
    assert column["formula"] == "Year(thisRow.[Дата события])"
    removed = await emu.client.delete(
        f"https://coda.io/_emulator/tables/{TABLE_ID}/columns/c-Comment01"
    )
    assert removed.status_code == 200
    assert "c-Comment01" not in (await emu.rows(limit=1))["items"][0]["values"]
    assert (await emu.post([{"c-Comment01": "x"}])).status_code == 400
