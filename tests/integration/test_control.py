"""daemon.control through httpx.ASGITransport (no ports): auth, parameters, errors, probes.

The first half drives the app over a small fake `Controller`; the second half over the real
`Service` (Runtime + engine + SQLite + the in-process Coda emulator), with the loop running
but no port bound. Every test is bounded with `anyio.fail_after`.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from daemon import config as config_mod
from daemon.clock import SystemClock
from daemon.config import Secret
from daemon.control import Busy, Probe, Triggered, create_app
from daemon.emulator import (
    DEFAULT_TOKEN,
    EmulatorConfig,
    EmulatorState,
    FaultRule,
    seed_participation,
)
from daemon.emulator import create_app as emulator_app
from daemon.metrics import Metrics
from daemon.runtime import Runtime
from daemon.service import Service
from tests.harness import example_config_data

pytestmark = pytest.mark.anyio

TOKEN = "trigger-t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PACK_HEADERS = {**AUTH, "Accept": "application/json", "Content-Type": "application/json"}


class FakeController:
    """A scriptable `Controller`: records calls, can raise or refuse."""

    def __init__(
        self, *, token: str | None = TOKEN, bindings: Sequence[str] = ("participation", "hours")
    ) -> None:
        self.bindings = tuple(bindings)
        self.trigger_token = Secret(token) if token else None
        self.metrics = Metrics(CollectorRegistry(), self.bindings)
        self.triggers: list[tuple[str | None, bool]] = []
        self.lookups: list[str] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.explode: set[str] = set()
        self.busy = False
        self.healthy = Probe(True)
        self.ready = Probe(False, ("participation: no successful cycle yet",))

    def _maybe_explode(self, what: str) -> None:
        if what in self.explode:
            raise RuntimeError(f"{what} exploded")

    def trigger(self, binding: str | None, *, full: bool) -> Triggered:
        self._maybe_explode("trigger")
        if self.busy:
            raise Busy("the daemon is stopping", retry_after_seconds=7)
        self.triggers.append((binding, full))
        run_id = f"r-{len(self.triggers)}"
        run = {"run_id": run_id, "binding": binding, "full": full, "state": "queued"}
        self.runs[run_id] = run
        return Triggered(run, coalesced=len(self.triggers) > 1)

    async def run_info(self, run_id: str) -> Mapping[str, Any] | None:
        self.lookups.append(run_id)
        return self.runs.get(run_id)

    def health(self) -> Probe:
        return self.healthy

    def readiness(self) -> Probe:
        return self.ready

    def status(self) -> Mapping[str, Any]:
        self._maybe_explode("status")
        return {"state": "running", "bindings": {}}

    def refresh_metrics(self) -> None:
        self._maybe_explode("metrics")


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://control")


@asynccontextmanager
async def fake_app(**kwargs: Any) -> AsyncIterator[tuple[FakeController, httpx.AsyncClient]]:
    ctl = FakeController(**{k: v for k, v in kwargs.items() if k in ("token", "bindings")})
    options = {k: v for k, v in kwargs.items() if k not in ("token", "bindings")}
    async with asgi_client(create_app(ctl, **options)) as http:
        with anyio.fail_after(5):
            yield ctl, http


# --------------------------------------------------------------------------- auth


async def test_sync_needs_the_bearer_token() -> None:
    """No or a wrong token -> 401 JSON (nothing triggered); the right one -> 202."""
    async with fake_app() as (ctl, http):
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": TOKEN},
            {"Authorization": f"Basic {TOKEN}"},
        ):
            r = await http.post("/sync", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert ctl.triggers == []
        r = await http.post("/sync", headers=AUTH)
        assert r.status_code == 202
        assert r.json() == {"run_id": "r-1", "binding": None, "full": False, "state": "queued"}
        unauthorized = ctl.metrics.triggers.labels("unauthorized")._value.get()
        assert unauthorized == 4


async def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """hmac.compare_digest decides, also when the header is missing."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    async with fake_app() as (_, http):
        assert (await http.post("/sync")).status_code == 401
        assert (await http.post("/sync", headers=AUTH)).status_code == 202
        assert (
            await http.get("/runs/r-x", headers={"Authorization": "Bearer x"})
        ).status_code == 401
    assert calls == [
        (b"", TOKEN.encode()),
        (TOKEN.encode(), TOKEN.encode()),
        (b"x", TOKEN.encode()),
    ]


async def test_no_token_configured_means_no_auth() -> None:
    """Without a trigger token (loopback default) POST /sync needs no header."""
    async with fake_app(token=None) as (ctl, http):
        assert (await http.post("/sync")).status_code == 202
        assert ctl.triggers == [(None, False)]


# --------------------------------------------------------------------------- parameters


async def test_query_string_and_json_body() -> None:
    """?binding=&full= and the Pack's exact JSON body both work; the body wins over the query."""
    async with fake_app() as (ctl, http):
        r = await http.post("/sync?binding=hours&full=true", headers=AUTH)
        assert r.json() == {"run_id": "r-1", "binding": "hours", "full": True, "state": "queued"}
        r = await http.post(
            "/sync", headers=PACK_HEADERS, content=b'{"binding":"participation","full":false}'
        )
        assert r.status_code == 202
        assert r.json()["binding"] == "participation"
        await http.post("/sync", headers=PACK_HEADERS, json={"full": True})
        await http.post("/sync?binding=hours", headers=PACK_HEADERS, json={"binding": None})
        await http.post("/sync?full=1", headers=AUTH, content=b"   ")
        assert ctl.triggers == [
            ("hours", True),
            ("participation", False),
            (None, True),
            (None, False),
            (None, True),
        ]


async def test_unknown_binding_is_404_with_the_list() -> None:
    """An unknown binding name -> 404 unknown_binding listing the configured ones."""
    async with fake_app() as (ctl, http):
        r = await http.post("/sync", headers=PACK_HEADERS, json={"binding": "x", "full": False})
        assert r.status_code == 404
        assert r.json() == {
            "error": "unknown_binding",
            "message": "binding 'x' is not configured",
            "bindings": ["participation", "hours"],
        }
        assert ctl.triggers == []


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/sync", b"{"),
        ("/sync", b"[]"),
        ("/sync", b'"participation"'),
        ("/sync", b'{"binding": 3}'),
        ("/sync", b'{"full": "yes"}'),
        ("/sync", b'{"full": 1}'),
        ("/sync", b'{"bindng": "participation"}'),
        ("/sync", b"\xff\xfe"),
        ("/sync", b'{"binding": ""}'),
        ("/sync?full=maybe", b""),
        ("/sync?bindings=participation", b""),
    ],
)
async def test_malformed_requests_are_400(url: str, body: bytes) -> None:
    """Malformed JSON, wrong types, unknown fields -> 400 bad_request; nothing triggered."""
    async with fake_app() as (ctl, http):
        r = await http.post(url, headers=PACK_HEADERS, content=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_request"
        assert r.json()["message"]
        assert ctl.triggers == []


async def test_oversized_body_is_413() -> None:
    """The app caps the body too (the server already does, before the app is called)."""
    async with fake_app(max_body_bytes=64) as (ctl, http):
        r = await http.post("/sync", headers=PACK_HEADERS, content=b" " * 65)
        assert (r.status_code, r.json()["error"]) == (413, "too_large")


async def test_trigger_flood_is_429_busy_with_retry_after() -> None:
    """More than max_triggers per window -> 429 busy + Retry-After; the window slides."""
    now = [100.0]
    async with fake_app(max_triggers=3, trigger_window_seconds=60, monotonic=lambda: now[0]) as (
        ctl,
        http,
    ):
        statuses = [(await http.post("/sync", headers=AUTH)).status_code for _ in range(5)]
        assert statuses == [202, 202, 202, 429, 429]
        r = await http.post("/sync", headers=AUTH)
        assert r.json()["error"] == "busy"
        assert r.headers["retry-after"] == "60"
        now[0] += 60
        assert (await http.post("/sync", headers=AUTH)).status_code == 202
        assert len(ctl.triggers) == 4


async def test_busy_controller_is_503_with_retry_after() -> None:
    """A controller that refuses (stopping) -> 503 busy with its Retry-After."""
    async with fake_app() as (ctl, http):
        ctl.busy = True
        r = await http.post("/sync", headers=AUTH)
        assert (r.status_code, r.json()["error"], r.headers["retry-after"]) == (503, "busy", "7")


# --------------------------------------------------------------------------- runs


async def test_runs_checks_the_token_before_the_lookup() -> None:
    """The Pack's connection check: wrong token -> 401 (no lookup); right -> 404 unknown_run."""
    async with fake_app() as (ctl, http):
        r = await http.get("/runs/connection-check", headers={"Authorization": "Bearer bad"})
        assert r.status_code == 401
        assert ctl.lookups == []
        r = await http.get("/runs/connection-check", headers=AUTH)
        assert r.status_code == 404
        assert r.json()["error"] == "unknown_run"
        run_id = (await http.post("/sync", headers=AUTH)).json()["run_id"]
        r = await http.get(f"/runs/{run_id}", headers=AUTH)
        assert (r.status_code, r.json()["state"]) == (200, "queued")
        r = await http.get("/runs/" + "x" * 500, headers=AUTH)
        assert r.status_code == 404


# --------------------------------------------------------------------------- errors


async def test_unknown_routes_404_and_wrong_methods_405_are_json() -> None:
    """Routing errors come back as JSON, 405 with Allow."""
    async with fake_app() as (_, http):
        r = await http.get("/nope")
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
        r = await http.get("/sync")
        assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")
        assert "POST" in r.headers["allow"]
        r = await http.delete("/runs/r-1", headers=AUTH)
        assert r.status_code == 405
        assert (await http.post("/healthz")).status_code == 405


async def test_exception_inside_the_controller_is_500_and_the_app_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug behind a route -> 500 JSON (logged); the next request is served normally."""
    async with fake_app() as (ctl, http):
        ctl.explode = {"trigger", "status", "metrics"}
        for method, url in (("POST", "/sync"), ("GET", "/status"), ("GET", "/metrics")):
            r = await http.request(method, url, headers=AUTH)
            assert r.status_code == 500
            assert r.json()["error"] == "internal"
            assert "exploded" not in r.text  # no internals leak to the client
        assert "trigger exploded" in caplog.text
        ctl.explode = set()
        assert (await http.post("/sync", headers=AUTH)).status_code == 202
        assert (await http.get("/status")).status_code == 200


async def test_probes_answer_from_the_controller() -> None:
    """/healthz and /readyz: 200 or 503 with the reasons."""
    async with fake_app() as (ctl, http):
        assert (await http.get("/healthz")).json() == {"healthy": True}
        r = await http.get("/readyz")
        assert (r.status_code, r.json()) == (
            503,
            {"ready": False, "reasons": ["participation: no successful cycle yet"]},
        )
        ctl.ready = Probe(True)
        ctl.healthy = Probe(False, ("participation: a cycle has been running for 999 s",))
        assert (await http.get("/readyz")).status_code == 200
        r = await http.get("/healthz")
        assert r.status_code == 503
        assert r.json()["reasons"] == ["participation: a cycle has been running for 999 s"]


# --------------------------------------------------------------------------- the real service


def make_settings(tmp_path: Path, *, token: str | None = TOKEN, **sync: Any) -> config_mod.Settings:
    data = example_config_data(f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", **sync)
    data["control"] = {"port": 0}
    env = {"CODA_API_TOKEN": DEFAULT_TOKEN}
    if token:
        data["control"]["trigger_token_env"] = "TRIGGER_TOKEN"
        env["TRIGGER_TOKEN"] = token
    return config_mod.parse(data, source="test.toml", env=env)


@asynccontextmanager
async def real_service(
    tmp_path: Path, emu: EmulatorState, **sync: Any
) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    """The real Service (loop running, no port bound) and a client to its app."""
    settings = make_settings(tmp_path, **sync)
    transport = httpx.ASGITransport(app=emulator_app(emu))
    async with Runtime(
        settings, clock=emu.clock, rng=random.Random(3), transport=transport
    ) as runtime:
        for engine in runtime.engines.values():
            await engine.prepare()
        service = Service(settings, runtime)
        async with anyio.create_task_group() as tg, asgi_client(service.app) as http:
            codes: list[int] = []

            async def serve() -> None:
                codes.append(await service.serve(handle_signals=False, bind=False))

            tg.start_soon(serve)
            await wait_for(lambda: service.health().ok)
            yield service, http
            service.request_stop()
        assert codes == [0]


async def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll `predicate` until true; fail after `limit` seconds."""
    with anyio.fail_after(limit):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


async def wait_run(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            run: dict[str, Any] = (await http.get(f"/runs/{run_id}", headers=AUTH)).json()
            if run["state"] in ("succeeded", "failed"):
                return run
            await anyio.sleep(0.02)


def new_emulator(rows: int = 30) -> EmulatorState:
    emu = EmulatorState(EmulatorConfig(), SystemClock(), random.Random(1))
    seed_participation(emu, rows, rng=random.Random(1))
    return emu


async def test_runs_lifecycle_probes_and_auth_failure(tmp_path: Path) -> None:
    """queued -> succeeded with counts; /readyz 503 until the first success; 401 from Coda ->
    'failed: auth', run failed, /readyz 503 naming it, auth_failed metric 1."""
    emu = new_emulator()
    emu.faults.add(FaultRule("delay", delay_seconds=0.3, endpoint="listRows"))
    async with real_service(tmp_path, emu, interval_seconds=3600) as (service, http):
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["reasons"] == ["participation: no successful cycle yet"]
        assert (await http.get("/healthz")).status_code == 200
        await wait_for(lambda: service.readiness().ok)
        assert (await http.get("/readyz")).json() == {"ready": True}

        r = await http.post(
            "/sync", headers=PACK_HEADERS, json={"binding": "participation", "full": True}
        )
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        assert run_id.startswith("r-")
        run = await wait_run(http, run_id)
        assert run["state"] == "succeeded", run
        assert set(run["result"]) == {"pulled", "pushed", "deleted", "conflicts", "quarantined"}
        assert run["started_at"] and run["finished_at"] and run["error"] is None
        assert (run["binding"], run["full"]) == ("participation", True)

        emu.faults.add(FaultRule("http_error", status=401, count=None))
        run_id = (await http.post("/sync", headers=AUTH)).json()["run_id"]
        run = await wait_run(http, run_id)
        assert run["state"] == "failed"
        assert "CodaAuthError" in run["error"] and DEFAULT_TOKEN not in run["error"]
        status = (await http.get("/status")).json()
        assert status["bindings"]["participation"]["state"] == "failed: auth"
        assert status["bindings"]["participation"]["last_error"]["class"] == "CodaAuthError"
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["reasons"][0].startswith("participation: failed: auth")
        value = service.metrics.registry.get_sample_value(
            "coda_sync_auth_failed", {"binding": "participation"}
        )
        assert value == 1
        emu.faults.clear()
    # After a restart of the loop the run is still known (persisted with put_run).
    async with real_service(tmp_path, new_emulator(), interval_seconds=3600) as (_, http):
        r = await http.get(f"/runs/{run_id}", headers=AUTH)
        assert (r.status_code, r.json()["state"]) == (200, "failed")


async def test_metrics_and_status_from_the_real_service(tmp_path: Path) -> None:
    """/metrics parses and carries every metric of daemon/metrics.py; /status has every field."""
    emu = new_emulator()
    async with real_service(tmp_path, emu, interval_seconds=3600) as (service, http):
        await wait_for(lambda: service.readiness().ok)
        r = await http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        expected = {
            family.name
            for attr in vars(service.metrics).values()
            if isinstance(attr, MetricWrapperBase)
            for family in attr.describe()
        }
        names = set(families) | {s.name for f in families.values() for s in f.samples}
        missing = {e for e in expected if not any(n.startswith(e) for n in names)}
        assert expected and not missing, missing
        cycles = families["coda_sync_cycles"]
        ok = [
            s
            for s in cycles.samples
            if s.name == "coda_sync_cycles_total" and s.labels["outcome"] == "success"
        ]
        assert ok and ok[0].value >= 1
        pulled = service.metrics.registry.get_sample_value(
            "coda_sync_rows_synced_total",
            {"binding": "participation", "direction": "pull", "kind": "insert"},
        )
        assert pulled == 30
        requests = service.metrics.registry.get_sample_value(
            "coda_sync_api_requests_total", {"class": "read", "outcome": "ok"}
        )
        assert requests is not None and requests >= 1

        status = (await http.get("/status")).json()
        assert status["state"] == "running" and status["ready"] and status["healthy"]
        b = status["bindings"]["participation"]
        for key in (
            "state",
            "last_cycle_started_at",
            "last_cycle_finished_at",
            "last_result",
            "last_duration_seconds",
            "last_success_at",
            "last_error",
            "rows_pulled",
            "rows_pushed",
            "rows_merged",
            "conflicts",
            "quarantined",
            "pending_mutations",
            "next_cycle_at",
            "consecutive_failures",
        ):
            assert key in b, key
        assert (b["last_result"], b["rows_pulled"], b["last_error"]) == ("success", 30, None)


async def test_retries_reach_the_metrics_by_class(tmp_path: Path) -> None:
    """Two 503s on listing rows, then success: coda_sync_api_retries_total{class="read"} is 2
    at the next scrape, and writes retried nothing."""
    emu = new_emulator()
    emu.faults.add(FaultRule("http_error", status=503, count=2, endpoint="listRows"))
    async with real_service(tmp_path, emu, interval_seconds=3600) as (service, http):
        await wait_for(lambda: service.readiness().ok)
        families = {
            f.name: f for f in text_string_to_metric_families((await http.get("/metrics")).text)
        }
        retried = {
            s.labels["class"]: s.value
            for s in families["coda_sync_api_retries"].samples
            if s.name == "coda_sync_api_retries_total"
        }
        assert retried == {"read": 2.0, "write": 0.0}


async def test_healthz_turns_503_when_a_cycle_is_stuck(tmp_path: Path) -> None:
    """A cycle running past cycle_timeout (+ margin) makes /healthz 503 with the reason."""
    emu = new_emulator()
    async with real_service(tmp_path, emu, interval_seconds=3600) as (service, http):
        await wait_for(lambda: service.readiness().ok)
        status = service.schedulers["participation"].status
        status.running_since = service.clock.monotonic() - 10_000  # as if stuck for hours
        r = await http.get("/healthz")
        assert r.status_code == 503
        assert "a cycle has been running" in r.json()["reasons"][0]
        status.running_since = None
        assert (await http.get("/healthz")).status_code == 200


async def test_concurrent_requests_never_break_the_app(tmp_path: Path) -> None:
    """Hundreds of concurrent mixed requests: only 2xx/4xx answers, the loop stays healthy."""
    emu = new_emulator(5)
    async with real_service(tmp_path, emu, interval_seconds=3600) as (service, http):
        results: list[int] = []

        async def one(i: int) -> None:
            if i % 3 == 0:
                r = await http.post("/sync", headers=AUTH)
            elif i % 3 == 1:
                r = await http.get("/status")
            else:
                r = await http.get(f"/runs/r-{i}", headers=AUTH)
            results.append(r.status_code)

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(one, i)
        assert all(code < 500 for code in results), sorted(set(results))
        assert service.health().ok
