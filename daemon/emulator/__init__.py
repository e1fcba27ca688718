"""An emulator of Coda API v1 (the rows subset), quirks included, for tests, benchmarks, demo.

It follows /work/shared/coda/API-FACTS.md: asynchronous writes (202, applied seconds later,
mutationStatus 404 at first), a read snapshot that lags, watermark sync tokens that never report
deletions, offset page tokens that drift under concurrent edits, `updatedAt` newest first,
per-token rate limits, and Coda's value formats. Behaviour marked [U]ncertain there is an option
of `EmulatorConfig`. Time comes from an injected `Clock`; nothing runs in the background.

In process::

    state = EmulatorState(EmulatorConfig(), FakeClock(), random.Random(1))
    seed_participation(state, 100, rng=random.Random(1))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(state)),
                               base_url="https://coda.io/apis/v1")

As a process: `run_emulator(...)` serves it over HTTP via `daemon.asgi_server.serve`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from daemon.emulator.app import create_app
from daemon.emulator.config import DEFAULT_TOKEN, EmulatorConfig
from daemon.emulator.faults import PRESETS, FaultRule
from daemon.emulator.seed import DOC_ID, KEY_COLUMN, TABLE_ID, VIEW_ID, seed_participation
from daemon.emulator.state import EmulatorState

__all__ = [
    "DEFAULT_TOKEN",
    "DOC_ID",
    "KEY_COLUMN",
    "PRESETS",
    "TABLE_ID",
    "VIEW_ID",
    "EmulatorConfig",
    "EmulatorState",
    "FaultRule",
    "build_emulator",
    "create_app",
    "run_emulator",
    "seed_participation",
]


def build_emulator(
    *,
    seed_rows: int,
    token: str,
    config: EmulatorConfig | None = None,
    seed: int = 0,
    clock: Any = None,
) -> EmulatorState:
    """A seeded state whose config accepts `token` (SystemClock unless `clock` is given)."""
    from daemon.clock import SystemClock

    config = config or EmulatorConfig()
    if token not in config.tokens:
        config = dataclasses.replace(config, tokens=(*config.tokens, token))
    state = EmulatorState(config, clock or SystemClock(), random.Random(seed))
    if seed_rows:
        seed_participation(state, seed_rows, rng=random.Random(seed))
    return state


def _url(started: Any, host: str, port: int) -> str:
    """Base URL from whatever `serve` reported through task_status (port, (host, port), URL)."""
    if isinstance(started, str):
        base = started.rstrip("/")
    else:
        if isinstance(started, tuple | list) and len(started) >= 2:
            host, port = str(started[0]), int(started[1])
        elif isinstance(started, int):
            port = started
        base = f"http://{host}:{port}"
    return base if base.endswith("/apis/v1") else base + "/apis/v1"


async def run_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed_rows: int,
    token: str,
    config: EmulatorConfig | None = None,
    ready: Callable[[str], None],
    seed: int = 0,
) -> None:
    """Serve a seeded emulator over HTTP until cancelled; `ready(base_url)` once bound."""
    import anyio

    from daemon import asgi_server  # lazily: written separately, anyio + h11

    state = build_emulator(seed_rows=seed_rows, token=token, config=config, seed=seed)
    app = create_app(state)
    # Coda takes upserts of hundreds of rows, and a `hang` fault must outlast client timeouts.
    limits = asgi_server.ServerLimits(
        max_body_bytes=16 * 1024 * 1024,
        max_connections=256,
        response_timeout_seconds=state.config.hang_seconds + 60.0,
        keepalive_timeout_seconds=30.0,
    )

    async def _serve(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await asgi_server.serve(app, host=host, port=port, task_status=task_status, limits=limits)

    async with anyio.create_task_group() as tg:
        started = await tg.start(_serve)
        ready(_url(started, host, port))
