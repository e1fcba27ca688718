"""The measured scenarios. Each `job_*` runs in its own fresh process (see `bench.perf`) and
returns a JSON-able dict; nothing here prints or writes result files.

Virtual time: in process, the emulator, the client's pacing and the engine share a FakeClock,
so "virtual seconds" are the time the sync WAITS (rate-limit pacing, sleeps, the interval
between cycles), while CPU work takes no virtual time. CPU work is measured separately, in
real seconds (wall and process CPU), with the API side (the emulator and HTTP) subtracted.
"""

from __future__ import annotations

import cProfile
import hashlib
import json
import math
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from bench.naive import open_naive_world
from bench.world import (
    COMMENT_COLUMN,
    IN_PROCESS_BASE_URL,
    REPO,
    Phase,
    World,
    combine,
    list_row_items,
    open_loopback_world,
    open_world,
)
from daemon.clock import FakeClock
from daemon.emulator import DEFAULT_TOKEN, TABLE_ID, EmulatorConfig, run_emulator

FAR = 10.0**9  # full_resync_seconds when full scans must only happen on request
KEY_COLUMN = "c-SyncKey01"
READ_LIMIT, WRITE_LIMIT, WINDOW = 100, 10, 6.0  # what Coda (and the emulator) enforce


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def rate_floor_seconds(requests: int, limit: int, window: float = WINDOW) -> float:
    """Earliest moment the last of `requests` requests can be SENT by an ideal client that
    starts with an empty sliding window allowing `limit` per `window` seconds, with zero
    latency and zero CPU: request i (0-based) goes at floor(i / limit) * window, so
    floor((requests - 1) / limit) * window (= (writes - 10) / 10 * 6 for whole windows)."""
    return 0.0 if requests <= 0 else ((requests - 1) // limit) * window


def memory_mb() -> dict[str, float]:
    """This process's current and peak resident set (MB), from /proc/self/status."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        import resource

        out["VmHWM"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


# --------------------------------------------------------------------------- profiling

_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("select.epoll", "waiting on aiosqlite's worker thread (SQLite execution)"),
    ("_queue.SimpleQueue", "aiosqlite (queueing calls to its thread)"),
    ("selectors.py", "waiting on aiosqlite's worker thread (SQLite execution)"),
    ("contextlib.py", "async with (store connections/transactions: open, commit, close)"),
    ("/daemon/emulator/", "emulator (API side, not daemon cost)"),
    ("starlette", "emulator (API side, not daemon cost)"),
    ("httpx", "httpx (client + ASGI transport)"),
    ("/daemon/normalize.py", "daemon.normalize (canonicalise)"),
    ("/daemon/reconcile.py", "daemon.reconcile (plan)"),
    ("/daemon/store/", "daemon.store (row mapping, state codec)"),
    ("sqlalchemy", "SQLAlchemy (statements, result rows, type processing)"),
    ("aiosqlite", "aiosqlite"),
    ("/daemon/writes.py", "daemon.writes"),
    ("/daemon/engine.py", "daemon.engine"),
    ("/daemon/coda/", "daemon.coda (client, parsing)"),
    ("json", "json encode/decode"),
    ("asyncio", "asyncio event loop"),
    ("datetime", "datetime"),
    ("builtins", "builtins (isinstance, getattr, ...)"),
    ("of 'dict' objects", "builtins (dict methods)"),
)


def _category(file: str, func: str) -> str:
    text = f"{file} {func}"
    for needle, name in _CATEGORIES:
        if needle in text:
            return name
    return "other"


def _where(file: str, line: int, func: str) -> str:
    marker = "/work/main/"
    short = file.split(marker, 1)[1] if marker in file else file
    short = re.sub(r".*/site-packages/", "", short)
    return f"{short}:{line}({func})" if line else func


def profile_summary(profile: cProfile.Profile, top: int = 12) -> dict[str, Any]:
    """Self time by category, the top functions by self time, and daemon functions by
    cumulative time (what dominates, as evidence)."""
    st = pstats.Stats(profile)
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    cats: dict[str, float] = {}
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        cats[_category(file, func)] = cats.get(_category(file, func), 0.0) + tt
        rows.append((tt, ct, nc, _where(file, line, func), file))
    by_self = sorted(rows, reverse=True)[:top]
    daemon_cum = sorted(
        (r for r in rows if "/daemon/" in r[4] and "/daemon/emulator/" not in r[4]),
        key=lambda r: r[1],
        reverse=True,
    )[:top]
    return {
        "profiled_seconds": round(total, 3),
        "self_time_by_category": {
            k: {"seconds": round(v, 3), "share": round(v / total, 3)}
            for k, v in sorted(cats.items(), key=lambda kv: -kv[1])
        },
        "top_self_time": [
            {"function": w, "self_s": round(tt, 3), "cum_s": round(ct, 3), "calls": nc}
            for tt, ct, nc, w, _ in by_self
        ],
        "daemon_by_cumulative": [
            {"function": w, "cum_s": round(ct, 3), "self_s": round(tt, 3), "calls": nc}
            for tt, ct, nc, w, _ in daemon_cum
        ],
    }


async def profiled(step: Callable[[], Awaitable[Phase]]) -> tuple[Phase, dict[str, Any]]:
    profile = cProfile.Profile()
    profile.enable()
    try:
        phase = await step()
    finally:
        profile.disable()
    return phase, profile_summary(profile)


# --------------------------------------------------------------------------- helpers


async def hash_baseline(w: World) -> dict[str, Any]:
    """Hash-only baseline over the same rows: (a) per row, serialise the row object Coda sent
    to JSON and sha256 it; (b) sha256 alone over those JSON bytes. Timed in this process."""
    items = await list_row_items(w.http, IN_PROCESS_BASE_URL, w.clock)
    n = len(items)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for item in items:
        text = json.dumps(item, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        hashlib.sha256(text.encode()).digest()
    json_cpu, json_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    blobs = [
        json.dumps(i, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        for i in items
    ]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for blob in blobs:
        hashlib.sha256(blob).digest()
    hash_cpu, hash_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "rows": n,
        "mean_row_json_bytes": round(sum(map(len, blobs)) / max(n, 1)),
        "json_sha256_rows_per_s_cpu": round(n / max(json_cpu, 1e-9)),
        "json_sha256_rows_per_s_wall": round(n / max(json_wall, 1e-9)),
        "sha256_only_rows_per_s_cpu": round(n / max(hash_cpu, 1e-9)),
        "sha256_only_rows_per_s_wall": round(n / max(hash_wall, 1e-9)),
    }


def local_rate(rows: int, phase: Phase) -> dict[str, Any]:
    return {
        "rows": rows,
        "local_cpu_seconds": round(phase.local_cpu_seconds, 3),
        "local_wall_seconds": round(phase.local_wall_seconds, 3),
        "api_wall_seconds": round(phase.api_wall_seconds, 3),
        "rows_per_s_cpu": round(rows / max(phase.local_cpu_seconds, 1e-9)),
        "rows_per_s_wall": round(rows / max(phase.local_wall_seconds, 1e-9)),
    }


def _key_index(w: World) -> dict[str, str]:
    """sync key -> Coda row id, from the emulator's true rows."""
    assert w.emu is not None
    return {
        str(r.cells.get(KEY_COLUMN)): r.id
        for r in w.emu.true_records(TABLE_ID)
        if r.cells.get(KEY_COLUMN)
    }


def _true_comment(w: World, row_id: str) -> Any:
    assert w.emu is not None
    w.emu.tick()
    spec = w.emu.find_table(TABLE_ID)
    row = w.emu.truth(spec).get(row_id)
    return None if row is None else row.cells.get(COMMENT_COLUMN)


async def _converge(w: World, name: str, limit: int = 8) -> Phase:
    """Cycles until one sends no write and leaves no write pending."""
    cycles = []
    for _ in range(limit):
        p = await w.cycle(name)
        cycles.append(p)
        if p.writes == 0 and p.pending_mutations == 0:
            break
    return combine(name, cycles)


async def _sample_converged(w: World, keys: list[str]) -> bool:
    index = _key_index(w)
    for key in keys:
        if _true_comment(w, index[key]) != await w.local_comment(key):
            return False
    return True


# --------------------------------------------------------------------------- API cost


async def job_api_cost(tmp: Path, size: int, *, converge_max: int) -> dict[str, Any]:
    """Criteria 1-3 for one table size, in process on virtual time, the emulator enforcing
    Coda's limits: initial pull, idle (= after convergence of the pull), full resync, push of
    N changed rows, and when size <= converge_max its confirmation and an idle cycle after it.
    NB: no "wait past the local overlap" step: the engine anchors the overlap window at the
    newest local updated_at (the watermark), not at the clock, so waiting changes nothing."""
    t0 = time.perf_counter()
    phases: dict[str, Phase] = {}
    out: dict[str, Any] = {"size": size}
    async with open_world(tmp, seed_rows=size, full_resync_seconds=FAR) as w:
        out["setup_seconds"] = round(time.perf_counter() - t0, 2)
        out["client_limits"] = client_limits(w)
        phases["initial_pull"] = await w.cycle("initial_pull")
        window = await w.rows_in_overlap_window()
        phases["idle"] = await w.cycle("idle")  # also "after convergence" of the pull
        phases["idle"].stats["bench_rows_in_overlap_window"] = window or 0
        phases["full_resync"] = await w.cycle("full_resync", full=True)
        out["hash_baseline"] = await hash_baseline(w)
        wall0 = time.perf_counter()
        keys = await w.edit_local_rows(size, "bench push")
        out["local_edit_seconds"] = round(time.perf_counter() - wall0, 3)
        phases["push"] = await w.cycle("push")
        if size <= converge_max:
            phases["push_converge"] = await _converge(w, "push_converge")
            phases["idle_after_push"] = await w.cycle("idle_after_push")
            out["converged_sample_ok"] = await _sample_converged(w, keys[:: max(1, size // 50)])
        else:
            out["push_converge_skipped"] = (
                f"not run: size {size:,} > --converge-max {converge_max:,} (bounds the runtime; "
                "see the confirm scaling in the findings)"
            )
        out["rows_in_coda"] = len(w.emu.true_records(TABLE_ID)) if w.emu else None
    out["phases"] = {k: v.as_json() for k, v in phases.items()}
    out["local"] = {
        "initial_pull": local_rate(size, phases["initial_pull"]),
        "full_resync": local_rate(size, phases["full_resync"]),
        "idle": local_rate(size, phases["idle"]),
        "push": local_rate(size, phases["push"]),
    }
    out["memory_mb_in_process_incl_emulator"] = memory_mb()
    out["job_seconds"] = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- naive


async def job_naive(
    tmp: Path, size: int, *, page_size: int, push_max: int, idle_cycles: int = 2
) -> dict[str, Any]:
    """The naive baseline for one size: pull, idle cycles, push (PUT per row), convergence."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"size": size, "page_size": page_size}
    phases: dict[str, Phase] = {}
    async with open_naive_world(tmp, seed_rows=size, page_size=page_size) as nw:
        phases["initial_pull"] = await nw.cycle("initial_pull")
        idle = [await nw.cycle("idle") for _ in range(idle_cycles)]
        phases["idle"] = combine("idle", idle)
        out["idle_reads_per_cycle"] = [p.reads for p in idle]
        phases["after_convergence"] = idle[-1]
        if size <= 10_000:  # for the idle-hour comparison (a 10k-row table)
            # 25: Coda's default `limit`, what a script that does not set it gets
            # (API-FACTS §3.1); 500: the largest page integrators use
            for other in (25, 500):
                nw.sync.page_size = other
                phases[f"idle_page_{other}"] = await nw.cycle(f"idle_page_{other}")
            nw.sync.page_size = page_size
        # 1 PUT per changed row by construction: above push_max, a 10 % sample is enough
        pushed = size if size <= push_max else max(1, push_max // 10)
        out["push_rows"] = pushed
        out["push_extrapolated"] = pushed < size
        nw.sync.edit_local_rows(pushed, "naive push")
        phases["push"] = await nw.cycle("push")
        phases["after_push_convergence"] = await nw.cycle("after_push_convergence")
    out["phases"] = {k: v.as_json() for k, v in phases.items()}
    out["local"] = {"full_listing": local_rate(size, phases["after_convergence"])}
    out["job_seconds"] = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- idle hour


async def job_idle_hour(tmp: Path, size: int, *, cycles: int = 120) -> dict[str, Any]:
    """One idle hour of coda-sync at the default settings (30 s interval, full resync every
    3600 s), after convergence: what it costs in requests."""
    t0 = time.perf_counter()
    async with open_world(tmp, seed_rows=size) as w:
        await w.cycle("initial_pull")
        await w.cycle("settle")
        hour = [await w.cycle("idle_hour") for _ in range(cycles)]
        interval = w.settings.sync.interval_seconds
        full_resync = w.settings.sync.full_resync_seconds
    total = combine("idle_hour", hour)
    return {
        "size": size,
        "cycles": cycles,
        "interval_seconds": interval,
        "full_resync_seconds": full_resync,
        "virtual_hours": round(cycles * interval / 3600, 3),
        "reads": total.reads,
        "writes": total.writes,
        "full_scans": sum(1 for p in hour if p.full_scan),
        "reads_incremental_cycles": sum(p.reads for p in hour if not p.full_scan),
        "reads_full_scans": sum(p.reads for p in hour if p.full_scan),
        "phase": total.as_json(),
        "job_seconds": round(time.perf_counter() - t0, 1),
    }


# --------------------------------------------------------------------------- latency


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _dist(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p95": round(_pct(values, 0.95), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


async def job_latency(tmp: Path, size: int, *, runs: int, seed: int = 42) -> dict[str, Any]:
    """Edit -> visible on the other side, `runs` times each way, on virtual time.

    Each run lands at a random phase of the 30 s schedule, then a trigger runs a cycle at
    once (as `coda-sync trigger` / the Pack's button do); when that cycle does not carry the
    edit, the regular cycles (every interval) continue until one does.
    Coda -> SQL: from the moment the edit is readable through the API (the emulator's read
    lag subtracted) to the end of the cycle that wrote it to SQL.
    SQL -> Coda: from the application's commit to the moment the write is applied in Coda's
    true state, minus the emulator's apply delay.
    A second Coda -> SQL series fires the trigger immediately after the edit, i.e. inside the
    read lag, to show what a too-early trigger costs.
    """
    t0 = time.perf_counter()
    rng = random.Random(seed)
    out: dict[str, Any] = {"size": size, "runs": runs}
    async with open_world(tmp, seed_rows=size, full_resync_seconds=FAR) as w:
        assert w.emu is not None and isinstance(w.clock, FakeClock)
        clock, emu = w.clock, w.emu
        interval = w.settings.sync.interval_seconds
        await w.cycle("initial_pull")
        await w.cycle("settle")
        index = _key_index(w)
        keys = sorted(index)
        lag, delay = emu.config.read_lag_seconds, emu.config.apply_delay_seconds
        out["read_lag_seconds"], out["apply_delay_seconds"] = lag, delay

        async def coda_to_sql(i: int, trigger_after: float) -> tuple[float, int, float]:
            clock.advance(rng.uniform(0, interval))
            key = rng.choice(keys)
            value = f"c2s {trigger_after} {i}"
            emu.ui_update_row(TABLE_ID, index[key], {COMMENT_COLUMN: value})
            edited = clock.monotonic()
            clock.advance(trigger_after)
            cycles, wall = 0, 0.0
            while True:
                p = await w.cycle(
                    "trigger" if cycles == 0 else "scheduled",
                    advance=0 if cycles == 0 else interval,
                )
                cycles, wall = cycles + 1, wall + p.wall_seconds
                if await w.local_comment(key) == value or cycles > 5:
                    break
            return clock.monotonic() - edited - lag, cycles, wall

        async def sql_to_coda(i: int) -> tuple[float, int, float]:
            clock.advance(rng.uniform(0, interval))
            key = rng.choice(keys)
            value = f"s2c {i}"
            async with w.store.begin() as conn:
                row = (await w.engine.bound.get_rows(conn, [key]))[key]
                await w.engine.bound.upsert_rows(
                    conn, [(key, {**row.values, "comment": value})], updated_at=clock.now()
                )
            edited = clock.monotonic()
            p = await w.cycle("trigger", advance=0)
            cycles, wall, last_cycle = 1, p.wall_seconds, clock.monotonic()
            while _true_comment(w, index[key]) != value and cycles <= 5:
                # jump to the next write the emulator applies (or the next scheduled cycle)
                now, next_cycle = clock.monotonic(), last_cycle + interval
                due = [
                    m["applyAt"]
                    for m in emu.pending_mutations()
                    if m["applyAt"] is not None and m["applyAt"] > now
                ]
                clock.advance(min([*due, next_cycle]) - now + 1e-9)
                if clock.monotonic() >= next_cycle:
                    p = await w.cycle("scheduled", advance=0)
                    cycles, wall, last_cycle = cycles + 1, wall + p.wall_seconds, clock.monotonic()
            visible = clock.monotonic()
            for _ in range(3):  # confirm the write, so the next run starts from a quiet state
                await w.cycle("settle")
            return visible - edited - delay, cycles, wall

        c2s = [await coda_to_sql(i, lag) for i in range(runs)]
        early = [await coda_to_sql(i, 0.0) for i in range(max(5, runs // 5))]
        s2c = [await sql_to_coda(i) for i in range(runs)]
    for name, series in (
        ("coda_to_sql", c2s),
        ("coda_to_sql_trigger_inside_read_lag", early),
        ("sql_to_coda", s2c),
    ):
        out[name] = {
            "virtual_seconds": _dist([s[0] for s in series]),
            "cycles_needed": _dist([float(s[1]) for s in series]),
            "cpu_wall_seconds_of_those_cycles": _dist([s[2] for s in series]),
            "runs": len(series),
        }
    out["job_seconds"] = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- loopback


async def job_loopback(tmp: Path, size: int) -> dict[str, Any]:
    """The API-cost scenario over real HTTP on 127.0.0.1 and the real clock (the emulator in
    a background task of this process, enforcing 100 reads / 10 writes per 6 s in real time),
    plus the same push in process on virtual time, to validate the virtual-time figures."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"size": size}
    phases: dict[str, Phase] = {}
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        urls: list[str] = []

        def on_ready(url: str) -> None:
            urls.append(url)
            ready.set()

        tg.start_soon(_serve_emulator, size, on_ready)
        with anyio.fail_after(600):
            await ready.wait()
        (tmp / "loop").mkdir()
        async with open_loopback_world(
            tmp / "loop", base_url=urls[0], full_resync_seconds=FAR
        ) as w:
            phases["initial_pull"] = await w.cycle("initial_pull")
            phases["idle"] = await w.cycle("idle")
            phases["full_resync"] = await w.cycle("full_resync", full=True)
            await w.edit_local_rows(size, "loopback push")
            phases["push"] = await w.cycle("push")
            cycles = []
            for _ in range(6):
                await anyio.sleep(5.0)  # apply delay (3 s) + mutationStatus 404 window (1.5 s)
                p = await w.cycle("push_converge")
                cycles.append(p)
                if p.writes == 0 and p.pending_mutations == 0:
                    break
            phases["push_converge"] = combine("push_converge", cycles)
            phases["idle_after_push"] = await w.cycle("idle_after_push")
        tg.cancel_scope.cancel()
    (tmp / "virtual").mkdir()
    async with open_world(tmp / "virtual", seed_rows=size, full_resync_seconds=FAR) as vw:
        await vw.cycle("initial_pull")
        await vw.edit_local_rows(size, "virtual push")
        phases["virtual_push"] = await vw.cycle("push")
    out["phases"] = {k: v.as_json() for k, v in phases.items()}
    out["job_seconds"] = round(time.perf_counter() - t0, 1)
    return out


async def _serve_emulator(size: int, ready: Callable[[str], None]) -> None:
    await run_emulator(
        port=0, seed_rows=size, token=DEFAULT_TOKEN, config=EmulatorConfig(), ready=ready, seed=1
    )


# --------------------------------------------------------------------------- memory


@contextmanager
def emulator_process(seed_rows: int, workdir: Path) -> Iterator[tuple[str, str]]:
    """An emulator in ANOTHER process (so it is not part of our RSS): `python -m daemon
    emulator --port 0` when that command exists, else `python -m bench.emuproc`."""
    commands = [
        (
            "python -m daemon emulator",
            [
                sys.executable,
                "-m",
                "daemon",
                "emulator",
                "--port",
                "0",
                "--seed-rows",
                str(seed_rows),
                "--seed",
                "1",
            ],
        ),
        (
            "python -m bench.emuproc",
            [sys.executable, "-m", "bench.emuproc", "--seed-rows", str(seed_rows)],
        ),
    ]
    errors: list[str] = []
    for label, cmd in commands:
        log = workdir / f"emulator-{len(errors)}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            found = re.search(r"(http://\S+/apis/v1)", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            proc.wait(timeout=30)
            errors.append(f"{label}: exit {proc.returncode}: {log.read_text()[-300:]}")
            continue
        try:
            yield url, label
            return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    raise RuntimeError("no emulator could be started: " + " | ".join(errors))


async def job_memory(tmp: Path, size: int) -> dict[str, Any]:
    """Peak RSS of a sync process that pulls N rows and then fully resyncs them, the emulator
    in another process over loopback (real clock, real limits)."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"size": size, "before": memory_mb()}
    with emulator_process(size, tmp) as (url, label):
        out["emulator"] = label
        async with open_loopback_world(
            tmp, base_url=url, control=False, full_resync_seconds=FAR
        ) as w:
            out["after_setup"] = memory_mb()
            pull = await w.cycle("initial_pull")
            out["after_pull"] = memory_mb()
            full = await w.cycle("full_resync", full=True)
            out["after_full_resync"] = memory_mb()
    out["peak_rss_mb"] = memory_mb()["VmHWM"]
    out["growth_over_setup_mb"] = round(out["peak_rss_mb"] - out["after_setup"]["VmRSS"], 1)
    out["phases"] = {"initial_pull": pull.as_json(), "full_resync": full.as_json()}
    out["job_seconds"] = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- profile


async def job_profile(tmp: Path, size: int) -> dict[str, Any]:
    """cProfile evidence for the local-cost figures: the initial pull, an idle cycle, a full
    resync, a push of N changed rows and the cycle that confirms it."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"size": size}
    async with open_world(tmp, seed_rows=size, full_resync_seconds=FAR) as w:
        pull, out["initial_pull"] = await profiled(lambda: w.cycle("initial_pull"))
        idle, out["idle"] = await profiled(lambda: w.cycle("idle"))
        full, out["full_resync"] = await profiled(lambda: w.cycle("full_resync", full=True))
        await w.edit_local_rows(size, "profile push")
        push, out["push"] = await profiled(lambda: w.cycle("push"))
        confirm, out["push_confirm"] = await profiled(lambda: w.cycle("push_confirm"))
    out["phases"] = {p.name: p.as_json() for p in (pull, idle, full, push, confirm)}
    out["job_seconds"] = round(time.perf_counter() - t0, 1)
    return out


JOBS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "api_cost": job_api_cost,
    "naive": job_naive,
    "idle_hour": job_idle_hour,
    "latency": job_latency,
    "loopback": job_loopback,
    "memory": job_memory,
    "profile": job_profile,
}


SOURCES = (
    "config/coda-sync.toml",
    "daemon/config.py",
    "daemon/engine.py",
    "daemon/writes.py",
    "daemon/normalize.py",
    "daemon/reconcile.py",
    "daemon/store/repo.py",
    "daemon/store/bound.py",
    "daemon/coda/client.py",
    "daemon/coda/pacing.py",
    "daemon/emulator/state.py",
)


def source_digests() -> dict[str, str]:
    """sha256 (12 hex) of the files the figures depend on (several are not committed yet, and
    other people edit them: each job records what it ran on)."""
    out = {}
    for rel in SOURCES:
        try:
            out[rel] = hashlib.sha256((REPO / rel).read_bytes()).hexdigest()[:12]
        except OSError:
            out[rel] = "missing"
    return out


def client_limits(w: World) -> dict[str, list[float]]:
    """The pacing the client ran with: [requests, window seconds] per class (from the config)."""
    c = w.settings.coda
    return {
        "read": [c.read_limit, c.rate_window_seconds],
        "write": [c.write_limit, c.rate_window_seconds],
    }


def run_job(name: str, size: int, **options: Any) -> dict[str, Any]:
    """Run one job in this process (a fresh one: `bench.perf` spawns a process per job)."""
    sources = source_digests()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as d:
        result = anyio.run(lambda: JOBS[name](Path(d), size, **options))
    result["sources"] = sources
    result["sources_changed_during_job"] = [
        k for k, v in source_digests().items() if sources.get(k) != v
    ]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result
