"""HTTP control interface under /_emulator/… (no Coda auth; loopback tests and the demo).

Everything here is also a method on `EmulatorState` for in-process tests. Routes:

    GET    /_emulator/summary                          row counts, queues, faults, config
    GET    /_emulator/tables/{table}/rows              the TRUE rows (typed values, ids)
    POST   /_emulator/tables/{table}/rows              {"values": {...}}: a person adds a row
    PATCH  /_emulator/tables/{table}/rows/{row}        {"values": {...}}: a person edits cells
    DELETE /_emulator/tables/{table}/rows/{row}        a person deletes a row
    PUT    /_emulator/tables/{table}/columns/{column}/formula   {"formula": "..."}
    PATCH  /_emulator/tables/{table}/columns/{column}   {"name": "..."}: rename a column
    DELETE /_emulator/tables/{table}/columns/{column}   remove a column
    POST   /_emulator/people                           {"email", "name"}: add to the directory
    GET    /_emulator/requests?since=SEQ&limit=N       the request log
    GET    /_emulator/counters                         counts by method/endpoint/status
    GET    /_emulator/mutations                        mutations not applied yet
    GET|POST|DELETE /_emulator/faults                  injected counts | add a rule | disarm all
    POST   /_emulator/config                           {"field": value, ...}
    POST   /_emulator/flush                            {"force": bool, "visible": bool}
    POST   /_emulator/advance                          {"seconds": s} (FakeClock only)
    POST   /_emulator/reset                            {"seedRows": n, "seed": s, "withKeys": b}
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from daemon.emulator.faults import FaultRule
from daemon.emulator.model import ApiError
from daemon.emulator.seed import seed_participation
from daemon.emulator.state import EmulatorState

ControlHandler = Callable[[EmulatorState, Request, Any], Any]


def _wrap(handler: ControlHandler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        state.tick()
        raw = await request.body()
        status = 200
        try:
            body = json.loads(raw) if raw else {}
            payload = handler(state, request, body)
        except ApiError as error:
            status, payload = error.status, error.body()
        except (ValueError, TypeError, KeyError) as error:
            status, payload = 400, ApiError(400, str(error)).body()
        content = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
        return Response(content.encode(), status_code=status, media_type="application/json")

    return endpoint


def _rows(state: EmulatorState, request: Request, body: Any) -> Any:
    table = request.path_params["table"]
    if request.method == "GET":
        return {"items": state.true_rows(table)}
    return {"id": state.ui_insert_row(table, body.get("values", {}))}


def _row(state: EmulatorState, request: Request, body: Any) -> Any:
    table, row_id = request.path_params["table"], request.path_params["row"]
    if request.method == "DELETE":
        state.ui_delete_row(table, row_id)
    else:
        state.ui_update_row(table, row_id, body.get("values", {}))
    return {"id": row_id}


def _formula(state: EmulatorState, request: Request, body: Any) -> Any:
    state.set_formula(
        request.path_params["table"], request.path_params["column"], str(body["formula"])
    )
    return {"ok": True}


def _column(state: EmulatorState, request: Request, body: Any) -> Any:
    table, column = request.path_params["table"], request.path_params["column"]
    if request.method == "DELETE":
        state.remove_column(table, column)
    else:
        state.rename_column(table, column, str(body["name"]))
    return {"ok": True}


def _people(state: EmulatorState, request: Request, body: Any) -> Any:
    person = state.people.add(str(body["email"]), str(body["name"]))
    return {"name": person.name, "email": person.email, "userId": person.user_id}


def _requests(state: EmulatorState, request: Request, body: Any) -> Any:
    since = int(request.query_params.get("since", 0))
    limit = int(request.query_params.get("limit", 1000))
    entries = [e.as_json() for e in state.stats.log if e.seq > since]
    return {"items": entries[:limit], "total": state.stats.total}


def _counters(state: EmulatorState, request: Request, body: Any) -> Any:
    items = [
        {"method": m, "endpoint": e, "status": s, "count": n}
        for (m, e, s), n in sorted(state.stats.counters.items())
    ]
    return {
        "items": items,
        "byStatusClass": state.stats.by_status_class(),
        "total": state.stats.total,
    }


def _faults(state: EmulatorState, request: Request, body: Any) -> Any:
    if request.method == "POST":
        state.faults.add(FaultRule(**body))
    elif request.method == "DELETE":
        state.faults.clear()
    return {
        "injected": dict(state.faults.counts),
        "armed": [dataclasses.asdict(rule) for rule in state.faults.armed],
    }


def _config(state: EmulatorState, request: Request, body: Any) -> Any:
    current = state.config
    changes = {}
    for name, value in body.items():
        if not hasattr(current, name):
            raise ApiError(400, f"Unknown config field '{name}'.")
        changes[name] = tuple(value) if isinstance(getattr(current, name), tuple) else value
    return dataclasses.asdict(state.set_config(**changes))


def _flush(state: EmulatorState, request: Request, body: Any) -> Any:
    applied = state.flush(force=bool(body.get("force")), visible=bool(body.get("visible")))
    return {"applied": applied}


def _advance(state: EmulatorState, request: Request, body: Any) -> Any:
    advance = getattr(state.clock, "advance", None)
    if advance is None:
        raise ApiError(400, "The emulator runs on a real clock; it cannot be advanced.")
    advance(float(body.get("seconds", 0)))
    state.tick()
    return {"monotonic": state.clock.monotonic()}


def _reset(state: EmulatorState, request: Request, body: Any) -> Any:
    state.reset()
    rows = int(body.get("seedRows", 0))
    if rows:
        rng = random.Random(int(body.get("seed", 0)))
        seed_participation(state, rows, rng=rng, with_keys=bool(body.get("withKeys", True)))
    return state.summary()


def routes() -> list[BaseRoute]:
    """The control routes (mounted at /_emulator)."""
    return [
        Route("/summary", _wrap(lambda s, r, b: s.summary()), methods=["GET"]),
        Route("/tables/{table}/rows", _wrap(_rows), methods=["GET", "POST"]),
        Route("/tables/{table}/rows/{row}", _wrap(_row), methods=["PATCH", "DELETE"]),
        Route("/tables/{table}/columns/{column}/formula", _wrap(_formula), methods=["PUT"]),
        Route("/tables/{table}/columns/{column}", _wrap(_column), methods=["PATCH", "DELETE"]),
        Route("/people", _wrap(_people), methods=["POST"]),
        Route("/requests", _wrap(_requests), methods=["GET"]),
        Route("/counters", _wrap(_counters), methods=["GET"]),
        Route(
            "/mutations", _wrap(lambda s, r, b: {"items": s.pending_mutations()}), methods=["GET"]
        ),
        Route("/faults", _wrap(_faults), methods=["GET", "POST", "DELETE"]),
        Route("/config", _wrap(_config), methods=["POST"]),
        Route("/flush", _wrap(_flush), methods=["POST"]),
        Route("/advance", _wrap(_advance), methods=["POST"]),
        Route("/reset", _wrap(_reset), methods=["POST"]),
    ]
