"""CodaClient and RateLimiter against fake transports, in virtual time (FakeClock).

Paging, pacing under the write limit, 429/5xx/timeout retries inside the budget, error
mapping with Coda's message, the token never leaking, mutation polling and request bodies.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Coroutine
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
import respx
from pydantic import SecretStr

from daemon.clock import FakeClock
from daemon.coda.client import OUTCOMES, Cells, ClientSettings, CodaClient
from daemon.coda.pacing import DEFAULT_LIMITS, RateLimiter, limit_class
from daemon.errors import (
    CodaAuthError,
    CodaBadRequest,
    CodaError,
    CodaForbidden,
    CodaNotFound,
    CodaPayloadError,
    CodaRateLimited,
    CodaServerError,
    CodaTimeout,
    CodaTransientError,
)

BASE = "https://coda.io/apis/v1"
TOKEN = "tok-5ecret-0f1e2d3c-4b5a"
DOC, TABLE = "AbCDeFGH", "grid-pqRst-U"
ROWS_PATH = f"/docs/{DOC}/tables/{TABLE}/rows"
SEED = 7

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def coda_error(status: int, message: str) -> httpx.Response:
    """An error answer shaped like Coda's: {statusCode, statusMessage, message}."""
    body = {"statusCode": status, "statusMessage": "Error", "message": message}
    return httpx.Response(status, json=body)


def row(i: int) -> dict[str, Any]:
    """A minimal valid Row."""
    return {
        "id": f"i-{i:06d}",
        "type": "row",
        "href": f"{BASE}{ROWS_PATH}/i-{i:06d}",
        "name": f"Row {i}",
        "index": i,
        "browserLink": f"https://coda.io/d/_d{DOC}#_r{i}",
        "createdAt": "2026-01-05T09:00:00.000Z",
        "updatedAt": "2026-01-05T09:00:00.000Z",
        "values": {"c-name": f"Row {i}", "c-n": i},
    }


def make_client(
    http: httpx.AsyncClient,
    clock: FakeClock,
    *,
    limiter: RateLimiter | None = None,
    settings: ClientSettings | None = None,
    **kwargs: Any,
) -> CodaClient:
    return CodaClient(
        http,
        token=TOKEN,
        limiter=limiter or RateLimiter(clock),
        clock=clock,
        rng=random.Random(SEED),
        settings=settings or ClientSettings(),
        **kwargs,
    )


def mock_http(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


# --- paging -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lists_10000_rows_in_20_requests_and_sends_only_page_token_later() -> None:
    """10,000 rows at 500 per page take ceil(10000/500) = 20 requests; pages 2.. carry only
    pageToken, and the page size comes from the token as on real Coda."""
    rows = [row(i) for i in range(10_000)]
    requests: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        requests.append(params)
        if "pageToken" in params:
            assert set(params) == {"pageToken"}, "later pages must send only pageToken"
            offset, limit = (int(part) for part in params["pageToken"].split(":"))
        else:
            offset, limit = 0, int(params["limit"])
        body: dict[str, Any] = {"items": rows[offset : offset + limit], "nextSyncToken": "sync-1"}
        if offset + limit < len(rows):
            body["nextPageToken"] = f"{offset + limit}:{limit}"
        return httpx.Response(200, json=body)

    clock = FakeClock()
    async with mock_http(handler) as http:
        client = make_client(http, clock)
        pages = [page async for page in client.list_rows(DOC, TABLE, sort_by="createdAt")]

    assert len(requests) == math.ceil(10_000 / 500) == 20
    assert requests[0] == {"valueFormat": "rich", "limit": "500", "sortBy": "createdAt"}
    assert all(set(params) == {"pageToken"} for params in requests[1:])
    assert [r.id for page in pages for r in page.items] == [r["id"] for r in rows]
    assert [page.next_page_token is None for page in pages] == [False] * 19 + [True]
    assert all(page.next_sync_token == "sync-1" for page in pages)
    assert client.stats.count("read", "ok") == 20
    assert clock.sleeps == []  # 20 reads fit in the read window


@pytest.mark.anyio
async def test_first_request_carries_sync_token_query_and_latest_header_on_every_page() -> None:
    """syncToken/query go on the first request; X-Coda-Doc-Version: latest on every page."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "pageToken" in request.url.params:
            return httpx.Response(200, json={"items": [row(2)]})
        return httpx.Response(200, json={"items": [row(1)], "nextPageToken": "p2"})

    async with mock_http(handler) as http:
        client = make_client(http, FakeClock())
        pages = [
            page
            async for page in client.list_rows(
                DOC,
                TABLE,
                sync_token="s-0",
                query='c-key:"a"',
                limit=2,
                latest=True,
                value_format="simpleWithArrays",
            )
        ]

    assert len(pages) == 2
    assert dict(seen[0].url.params) == {
        "valueFormat": "simpleWithArrays",
        "limit": "2",
        "query": 'c-key:"a"',
        "syncToken": "s-0",
    }
    assert dict(seen[1].url.params) == {"pageToken": "p2"}
    assert all(r.headers["X-Coda-Doc-Version"] == "latest" for r in seen)
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in seen)


@pytest.mark.anyio
async def test_a_repeated_page_token_is_a_payload_error_not_an_endless_loop() -> None:
    """A server that hands out the same nextPageToken again must not trap the client."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [row(1)], "nextPageToken": "same"})

    async with mock_http(handler) as http:
        client = make_client(http, FakeClock())
        with pytest.raises(CodaPayloadError, match="repeats"):
            async for _ in client.list_rows(DOC, TABLE):
                pass


@pytest.mark.anyio
async def test_list_columns_follows_pages_with_limit_100() -> None:
    """Columns are listed 100 per page, following nextPageToken."""
    seen: list[dict[str, str]] = []

    def column(i: int) -> dict[str, Any]:
        fmt = {"type": "select", "isArray": False, "options": [{"name": "a"}]}
        return {"id": f"c-{i}", "type": "column", "href": "x", "name": f"C{i}", "format": fmt}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        if "pageToken" in request.url.params:
            return httpx.Response(200, json={"items": [column(2)]})
        return httpx.Response(200, json={"items": [column(1)], "nextPageToken": "n"})

    async with mock_http(handler) as http:
        columns = await make_client(http, FakeClock()).list_columns(DOC, TABLE)

    assert seen == [{"limit": "100"}, {"pageToken": "n"}]
    assert [(c.id, c.type, c.options) for c in columns] == [
        ("c-1", "select", ["a"]),
        ("c-2", "select", ["a"]),
    ]


# --- pacing -----------------------------------------------------------------------------------


def max_in_any_window(times: list[float], window: float) -> int:
    """The most timestamps inside any half-open interval [t, t + window)."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u < t + window) for t in ordered)


@pytest.mark.anyio
async def test_a_burst_of_25_writes_never_puts_more_than_10_in_a_6s_window() -> None:
    """25 concurrent writes are paced to <= 10 per sliding 6.5 s; a server enforcing 10/6 s
    never has to answer 429. Two clients share one limiter, as clients of one token must."""
    clock = FakeClock()
    arrivals: list[float] = []
    rejected = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal rejected
        now = clock.monotonic()
        if sum(1 for t in arrivals if now - 6.0 < t <= now) >= 10:
            rejected += 1
            return coda_error(429, "Too Many Requests")
        arrivals.append(now)
        return httpx.Response(202, json={"requestId": f"mutate:{len(arrivals)}", "id": "i-1"})

    limiter = RateLimiter(clock)
    async with mock_http(handler) as http:
        clients = [make_client(http, clock, limiter=limiter) for _ in range(2)]
        async with anyio.create_task_group() as tg:
            for n in range(25):
                tg.start_soon(clients[n % 2].update_row, DOC, TABLE, f"i-{n}", [("c-a", n)])

    assert rejected == 0
    assert len(arrivals) == 25
    assert max_in_any_window(arrivals, 6.0) == 10
    assert sorted(arrivals) == [0.0] * 10 + [6.5] * 10 + [13.0] * 5
    assert limiter.wait_seconds("write") > 0
    assert sum(c.stats.limiter_wait_seconds for c in clients) == limiter.wait_seconds_total


@pytest.mark.anyio
async def test_sliding_window_holds_for_irregular_arrivals() -> None:
    """Whatever the arrival pattern, no [t, t+6) window ever gets more than capacity grants
    (a refill-rate bucket would let a full bucket plus its refill through one window)."""
    rng = random.Random(11)
    for _ in range(20):
        clock = FakeClock()
        limiter = RateLimiter(clock, {"write": (9, 6.0)})
        grants = []
        for _ in range(60):
            clock.advance(rng.choice([0.0, 0.0, 0.1, 0.7, 2.5, 5.9, 6.0]))
            await limiter.acquire("write")
            grants.append(clock.monotonic())
        assert max_in_any_window(grants, 6.0) <= 9


@pytest.mark.anyio
async def test_waiting_writes_do_not_hold_up_reads() -> None:
    """Classes are paced independently: a read goes out while writes queue."""
    clock = FakeClock()
    limiter = RateLimiter(clock, {"read": (2, 6.0), "write": (1, 6.0)})
    assert await limiter.acquire("write") == 0.0
    assert await limiter.acquire("read") == 0.0
    assert await limiter.acquire("write") == 6.0
    assert await limiter.acquire("read") == 0.0
    assert limiter.grants_total == {"read": 2, "write": 2}


@pytest.mark.anyio
async def test_unknown_limit_class_is_an_error() -> None:
    """A typo in a class name must not bypass pacing."""
    with pytest.raises(KeyError):
        await RateLimiter(FakeClock()).acquire("reads")


def test_defaults_run_under_the_published_limits_and_classes_follow_the_method() -> None:
    """100 reads and 10 writes per 6.5 s; DELETE writes, GET /mutationStatus reads."""
    assert DEFAULT_LIMITS == {"read": (100, 6.5), "write": (10, 6.5)}
    assert limit_class("DELETE", ROWS_PATH) == "write"
    assert limit_class("GET", "/mutationStatus/mutate%3Ax") == "read"
    assert [limit_class(m) for m in ("POST", "PUT", "get")] == ["write", "write", "read"]


# --- retries ----------------------------------------------------------------------------------

USER = {"name": "N", "loginId": "n@example.com", "type": "user", "scoped": False, "tokenName": "t"}


@pytest.mark.anyio
async def test_429_with_retry_after_waits_that_long_then_succeeds() -> None:
    """Retry-After: 3 -> the client sleeps 3 s (virtual) and the second try succeeds."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/whoami").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow"}),
                httpx.Response(200, json=USER),
            ]
        )
        async with httpx.AsyncClient() as http:
            client = make_client(http, clock)
            user = await client.whoami()

    assert user.login_id == "n@example.com"
    assert route.call_count == 2
    assert clock.sleeps == [3.0]
    assert (client.stats.rate_limited, client.stats.retries) == (1, 1)
    assert client.stats.count(outcome="rate_limited") == 1


@pytest.mark.anyio
async def test_429_with_an_http_date_retry_after_waits_until_that_date() -> None:
    """Retry-After as an HTTP-date is converted with the clock's wall time."""
    clock = FakeClock()
    when = format_datetime(clock.now() + timedelta(seconds=5), usegmt=True)
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": when}),
                httpx.Response(200, json=USER),
            ]
        )
        async with httpx.AsyncClient() as http:
            await make_client(http, clock).whoami()
    assert clock.sleeps == [5.0]


@pytest.mark.anyio
async def test_429_without_retry_after_uses_seeded_full_jitter() -> None:
    """No Retry-After: waits are full-jitter draws from the injected rng (deterministic)."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(
            side_effect=[coda_error(429, "Too Many Requests")] * 3
            + [httpx.Response(200, json=USER)]
        )
        async with httpx.AsyncClient() as http:
            await make_client(http, clock).whoami()

    rng = random.Random(SEED)
    expected = [rng.uniform(0, 1.0), rng.uniform(0, 2.0), rng.uniform(0, 4.0)]
    assert clock.sleeps == expected


@pytest.mark.anyio
async def test_429_until_the_budget_is_spent_raises_rate_limited() -> None:
    """Six 429s: CodaRateLimited naming the attempts, with status and a retry hint."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/whoami").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "2"})
        )
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaRateLimited) as caught:
                await make_client(http, clock).whoami()

    assert route.call_count == 6
    assert caught.value.status == 429
    assert caught.value.retry_after_seconds == 2.0
    assert "#6/6" in str(caught.value)
    assert len(clock.sleeps) == 5


@pytest.mark.anyio
async def test_429_without_retry_after_still_tells_the_caller_when_to_come_back() -> None:
    """Budget spent on header-less 429s: retry_after_seconds is the wait we would have made."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(return_value=coda_error(429, "Too Many Requests"))
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaRateLimited) as caught:
                await make_client(http, FakeClock()).whoami()
    assert caught.value.retry_after_seconds is not None
    assert 0.0 <= caught.value.retry_after_seconds <= 32.0
    assert caught.value.coda_message == "Too Many Requests"


@pytest.mark.anyio
async def test_an_attempt_past_its_deadline_is_a_timeout() -> None:
    """A server that never finishes is cut off by the per-attempt deadline (about 10 ms of
    real time here; httpx's own timeouts cover the phases)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(10)
        return httpx.Response(200, json=USER)

    settings = ClientSettings(deadline_seconds=0.01, max_attempts=1)
    async with mock_http(handler) as http:
        client = make_client(http, FakeClock(), settings=settings)
        with anyio.fail_after(5):
            with pytest.raises(CodaTimeout, match="deadline"):
                await client.whoami()
    assert client.stats.count("read", "timeout") == 1


@pytest.mark.anyio
async def test_a_retry_after_beyond_the_elapsed_budget_is_not_waited_out() -> None:
    """Retry-After: 600 exceeds the 120 s budget: raise at once, telling the caller when."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(return_value=httpx.Response(429, headers={"Retry-After": "600"}))
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaRateLimited) as caught:
                await make_client(http, clock).whoami()
    assert caught.value.retry_after_seconds == 600.0
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_a_retry_after_binds_the_next_call_too() -> None:
    """A call gives up on 429s with Retry-After: 2; the NEXT call (another endpoint) waits
    those 2 s before it is sent, and one past the elapsed budget is not sent at all."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(return_value=httpx.Response(429, headers={"Retry-After": "2"}))
        other = router.get("/mutationStatus/r-1").mock(
            return_value=httpx.Response(200, json={"completed": True})
        )
        async with httpx.AsyncClient() as http:
            client = make_client(http, clock)
            with pytest.raises(CodaRateLimited):
                await client.whoami()
            before = len(clock.sleeps)
            await client.mutation_status("r-1")
            assert clock.sleeps[before:] == [2.0]
            assert other.call_count == 1

            router.get("/whoami").mock(
                return_value=httpx.Response(429, headers={"Retry-After": "600"})
            )
            with pytest.raises(CodaRateLimited):
                await client.whoami()
            with pytest.raises(CodaRateLimited, match="pause of 600 s more"):
                await client.mutation_status("r-1")
            assert other.call_count == 1  # refused before sending


@pytest.mark.anyio
async def test_503_twice_then_200_succeeds_with_three_requests() -> None:
    """5xx is retried with backoff; all three requests are counted."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get(f"/docs/{DOC}").mock(
            side_effect=[
                coda_error(503, "busy"),
                coda_error(503, "busy"),
                httpx.Response(200, json={"id": DOC, "type": "doc", "name": "D"}),
            ]
        )
        async with httpx.AsyncClient() as http:
            client = make_client(http, clock)
            doc = await client.get_doc(DOC)

    assert doc.id == DOC
    assert route.call_count == 3
    assert client.stats.count() == 3
    assert client.stats.count("read", "server_error") == 2
    assert client.stats.count("read", "ok") == 1
    assert client.stats.retries == 2
    assert len(clock.sleeps) == 2


@pytest.mark.anyio
async def test_timeouts_surface_as_coda_timeout_after_the_budget() -> None:
    """A request that always times out raises CodaTimeout after max_attempts tries."""
    clock = FakeClock()
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/whoami").mock(side_effect=httpx.ReadTimeout("read timed out"))
        async with httpx.AsyncClient() as http:
            client = make_client(http, clock)
            with pytest.raises(CodaTimeout) as caught:
                await client.whoami()

    assert route.call_count == 6
    assert "attempt #6/6" in str(caught.value)
    assert "GET /whoami" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert client.stats.count("read", "timeout") == 6
    assert len(clock.sleeps) == 5


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), CodaTransientError),
        (httpx.RemoteProtocolError("server hung up"), CodaTransientError),
        (httpx.ReadError("reset"), CodaTransientError),
        (httpx.PoolTimeout("pool"), CodaTimeout),
        (httpx.ConnectTimeout("slow"), CodaTimeout),
        (httpx.DecodingError("gzip"), CodaPayloadError),
        (httpx.UnsupportedProtocol("ftp"), CodaBadRequest),
    ],
)
@pytest.mark.anyio
async def test_no_httpx_exception_escapes(exc: Exception, expected: type[CodaError]) -> None:
    """Every httpx failure becomes the matching CodaError (retried when transient)."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(side_effect=exc)
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaError) as caught:
                await make_client(http, FakeClock()).whoami()
    assert type(caught.value) is expected


# --- bad input and error mapping --------------------------------------------------------------


@pytest.mark.anyio
async def test_malformed_json_body_is_a_payload_error_without_retry() -> None:
    """A 200 whose body is truncated JSON: CodaPayloadError, one request only."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/whoami").mock(
            return_value=httpx.Response(200, text='{"name": "N", "lo')
        )
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaPayloadError, match="not JSON") as caught:
                await make_client(http, FakeClock()).whoami()
    assert route.call_count == 1
    assert caught.value.coda_message == '{"name": "N", "lo'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"href": "x"}, "row list page has no 'items' array"),
        ({"items": [row(0), {"type": "row", "values": {}}]}, "row 1 has no 'id'"),
        ({"items": [{**row(0), "values": None}]}, "row 0 ('i-000000') has no 'values' object"),
        ({"items": [{**row(0), "updatedAt": "yesterday"}]}, "invalid 'updatedAt'"),
        ([], "row list page is not a JSON object"),
    ],
)
@pytest.mark.anyio
async def test_a_malformed_row_page_names_what_is_wrong(body: Any, message: str) -> None:
    """Shape errors name the missing piece and the request."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get(ROWS_PATH).mock(return_value=httpx.Response(200, json=body))
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaPayloadError) as caught:
                async for _ in make_client(http, FakeClock()).list_rows(DOC, TABLE):
                    pass
    assert message in str(caught.value)
    assert f"GET {ROWS_PATH}" in str(caught.value)


@pytest.mark.anyio
async def test_unknown_table_is_not_found_with_codas_message() -> None:
    """404 -> CodaNotFound carrying Coda's message, status, method and path; no retry."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get(f"/docs/{DOC}/tables/grid-nope").mock(
            return_value=coda_error(404, "Could not find a table with the specified ID or name.")
        )
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaNotFound) as caught:
                await make_client(http, FakeClock()).get_table(DOC, "grid-nope")
    error = caught.value
    assert route.call_count == 1
    assert (error.status, error.method, error.path) == (404, "GET", f"/docs/{DOC}/tables/grid-nope")
    assert error.coda_message == "Could not find a table with the specified ID or name."
    assert "Could not find a table" in str(error)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (coda_error(403, "Forbidden"), CodaForbidden),
        (coda_error(400, "Bad Request"), CodaBadRequest),
        (coda_error(409, "Doc not ready"), CodaBadRequest),
        (httpx.Response(302, headers={"Location": "/x"}), CodaPayloadError),
    ],
)
@pytest.mark.anyio
async def test_other_statuses_map_to_permanent_errors(
    response: httpx.Response, expected: type[CodaError]
) -> None:
    """4xx other than 429 are not retried and map by status."""
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/whoami").mock(return_value=response)
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaError) as caught:
                await make_client(http, FakeClock()).whoami()
    assert type(caught.value) is expected
    assert route.call_count == 1


@pytest.mark.anyio
async def test_an_html_error_page_keeps_its_first_200_characters() -> None:
    """A 502 HTML page from a proxy: retried, then CodaServerError with a body snippet."""
    html = "<html><body>" + "Bad gateway " * 50 + "</body></html>"
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(return_value=httpx.Response(502, text=html))
        async with httpx.AsyncClient() as http:
            with pytest.raises(CodaServerError) as caught:
                await make_client(http, FakeClock()).whoami()
    assert caught.value.coda_message == html[:200].strip()


@pytest.mark.anyio
async def test_invalid_token_is_auth_error_and_the_token_never_leaks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401 -> CodaAuthError; the token is in no message, repr or log line (retries included)."""
    caplog.set_level(logging.DEBUG)
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.get("/whoami").mock(return_value=coda_error(401, "Unauthorized"))
        router.get(f"/docs/{DOC}").mock(
            side_effect=[coda_error(503, "x"), coda_error(500, "y")] * 3
        )
        async with httpx.AsyncClient() as http:
            client = make_client(http, FakeClock())
            with pytest.raises(CodaAuthError) as auth:
                await client.whoami()
            with pytest.raises(CodaServerError) as server:
                await client.get_doc(DOC)

    assert auth.value.status == 401
    assert "attempt #1/6" in caplog.text  # the retries were logged
    for text in (
        str(auth.value),
        repr(auth.value),
        str(server.value),
        repr(client),
        str(client),
        caplog.text,
    ):
        assert TOKEN not in text
    assert "***" in repr(client)


@pytest.mark.anyio
async def test_an_empty_token_is_refused_and_a_secret_wrapper_is_accepted() -> None:
    """A blank token fails before any request; pydantic's SecretStr is unwrapped only to send."""
    clock = FakeClock()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=USER)

    async with mock_http(handler) as http:
        with pytest.raises(ValueError, match="token is empty"):
            CodaClient(
                http, token=" ", limiter=RateLimiter(clock), clock=clock, rng=random.Random()
            )
        client = CodaClient(
            http,
            token=SecretStr(TOKEN),
            limiter=RateLimiter(clock),
            clock=clock,
            rng=random.Random(),
        )
        await client.whoami()
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(client)


@pytest.mark.anyio
async def test_on_request_hook_sees_bounded_labels() -> None:
    """The metrics hook gets (class, outcome, seconds) per attempt; labels are from OUTCOMES."""
    seen: list[tuple[str, str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and len(seen) == 0:
            return coda_error(500, "oops")
        return httpx.Response(
            200 if request.method == "GET" else 202, json=USER | {"requestId": "r"}
        )

    async with mock_http(handler) as http:
        client = make_client(http, FakeClock(), on_request=lambda *args: seen.append(args))
        await client.whoami()
        await client.delete_row(DOC, TABLE, "i-1")

    assert [(c, o) for c, o, _ in seen] == [
        ("read", "server_error"),
        ("read", "ok"),
        ("write", "ok"),
    ]
    assert {o for _, o, _ in seen} <= set(OUTCOMES)


# --- writes -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_delete_rows_sends_the_json_body() -> None:
    """DELETE /rows carries {"rowIds": [...]} as JSON (httpx's .delete() would drop it)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"requestId": "mutate:1", "rowIds": ["i-1", "i-2"]})

    async with mock_http(handler) as http:
        result = await make_client(http, FakeClock()).delete_rows(DOC, TABLE, ["i-1", "i-2"])

    (request,) = seen
    assert (request.method, request.url.path) == ("DELETE", f"/apis/v1{ROWS_PATH}")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"rowIds": ["i-1", "i-2"]}
    assert (result.request_id, result.row_ids) == ("mutate:1", ["i-1", "i-2"])


@pytest.mark.anyio
async def test_upsert_sends_cells_key_columns_and_disable_parsing() -> None:
    """Upsert body shape; batches of 3 for 7 rows make 3 requests and 3 results."""
    bodies: list[Any] = []
    params: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        params.append(dict(request.url.params))
        return httpx.Response(202, json={"requestId": f"mutate:{len(bodies)}"})

    rows: list[Cells] = [
        [("c-key", f"k{i}"), ("c-tags", ["a", "b"]), ("c-n", 1.5), ("c-ok", True)] for i in range(7)
    ]
    async with mock_http(handler) as http:
        client = make_client(http, FakeClock())
        single = await client.upsert_rows(
            DOC, TABLE, rows[:1], key_columns=["c-key"], disable_parsing=True
        )
        batched = [
            r.request_id
            async for r in client.upsert_rows_batched(
                DOC, TABLE, rows, key_columns=["c-key"], batch_size=3
            )
        ]

    assert single.request_id == "mutate:1"
    cells = [("c-key", "k0"), ("c-tags", ["a", "b"]), ("c-n", 1.5), ("c-ok", True)]
    assert bodies[0] == {
        "rows": [{"cells": [{"column": c, "value": v} for c, v in cells]}],
        "keyColumns": ["c-key"],
    }
    assert params[0] == {"disableParsing": "true"}
    assert batched == ["mutate:2", "mutate:3", "mutate:4"]
    assert [len(b["rows"]) for b in bodies[1:]] == [3, 3, 1]
    assert params[1:] == [{}, {}, {}]


@pytest.mark.parametrize(
    ("value", "error"),
    [(math.nan, ValueError), ({"a": 1}, TypeError), (b"raw", TypeError), ([[["deep"]]], TypeError)],
)
@pytest.mark.anyio
async def test_unsendable_cell_values_are_refused_before_sending(
    value: Any, error: type[Exception]
) -> None:
    """Values outside the OpenAPI `Value` type never reach Coda."""
    async with mock_http(lambda request: httpx.Response(500)) as http:
        client = make_client(http, FakeClock())
        with pytest.raises(error):
            await client.update_row(DOC, TABLE, "i-1", [("c-a", value)])
        assert client.stats.count() == 0


@pytest.mark.anyio
async def test_get_row_quotes_ids_and_sends_latest() -> None:
    """Ids are URL-encoded as path segments; latest=True sends the doc-version header."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=row(1))

    async with mock_http(handler) as http:
        raw = await make_client(http, FakeClock()).get_row(DOC, "My Table/2", "i-1", latest=True)

    assert raw.values == {"c-name": "Row 1", "c-n": 1}
    assert (
        seen[0].url.raw_path
        == f"/apis/v1/docs/{DOC}/tables/My%20Table%2F2/rows/i-1?valueFormat=rich".encode()
    )
    assert seen[0].headers["X-Coda-Doc-Version"] == "latest"


# --- mutation status --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_mutation_status_404_then_pending_then_completed() -> None:
    """404 reads as None (not registered yet), then the status as parsed; ids are %-encoded."""
    request_id = "mutate:84b6aa0d-cf45-440a-87a1-61cae41e3f45"
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/mutationStatus/mutate%3A84b6aa0d-cf45-440a-87a1-61cae41e3f45").mock(
            side_effect=[
                coda_error(404, "Not Found"),
                httpx.Response(200, json={"completed": False}),
                httpx.Response(200, json={"completed": True, "warning": "late"}),
            ]
        )
        async with httpx.AsyncClient() as http:
            client = make_client(http, FakeClock())
            statuses = [await client.mutation_status(request_id) for _ in range(3)]

    assert statuses[0] is None
    assert statuses[1] is not None and not statuses[1].completed
    assert statuses[2] is not None and statuses[2].completed and statuses[2].warning == "late"
    assert b"mutate%3A84b6aa0d" in route.calls[0].request.url.raw_path


@pytest.mark.anyio
async def test_wait_for_mutations_tolerates_early_404s_within_the_grace() -> None:
    """An id 404s for 3 s then completes; one completes at once; one 404s past the 30 s grace
    (reported False); polls happen every mutation_poll_seconds of virtual time."""
    clock = FakeClock()
    script = {
        "mutate:a": ["404"] * 3 + ["pending", "done"],
        "mutate:b": ["done"],
        "mutate:gone": ["404"] * 1000,
    }
    polls: dict[str, list[float]] = {key: [] for key in script}

    def handler(request: httpx.Request) -> httpx.Response:
        request_id = request.url.path.rsplit("/", 1)[1]
        polls[request_id].append(clock.monotonic())
        step = script[request_id][min(len(polls[request_id]), len(script[request_id])) - 1]
        if step == "404":
            return coda_error(404, "Not Found")
        return httpx.Response(200, json={"completed": step == "done"})

    async with mock_http(handler) as http:
        client = make_client(http, clock)
        result = await client.wait_for_mutations(list(script), timeout_seconds=60.0)

    assert result == {"mutate:a": True, "mutate:b": True, "mutate:gone": False}
    assert polls["mutate:a"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert polls["mutate:b"] == [0.0]
    assert polls["mutate:gone"][-1] == 30.0  # given up once the grace has passed
    assert set(clock.sleeps) == {1.0}


@pytest.mark.anyio
async def test_wait_for_mutations_reports_false_at_the_deadline() -> None:
    """A mutation still pending at the deadline is reported not completed."""
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"completed": False})

    async with mock_http(handler) as http:
        client = make_client(http, clock, settings=ClientSettings(mutation_poll_seconds=2.0))
        result = await client.wait_for_mutations(["mutate:x"], timeout_seconds=5.0)

    assert result == {"mutate:x": False}
    assert clock.sleeps == [2.0, 2.0, 1.0]
    assert clock.monotonic() == 5.0
