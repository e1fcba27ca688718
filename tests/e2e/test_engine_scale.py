"""Acceptance: volume, request cost and rate limits (criteria 1, 2 and 11), on virtual time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from daemon.emulator import TABLE_ID, EmulatorConfig
from daemon.engine import CycleResult
from tests.harness import World, world

pytestmark = pytest.mark.anyio


def _cost(results: list[CycleResult]) -> list[tuple[int, int]]:
    return [(r.reads, r.writes) for r in results]


def _assert_no_duplicates(w: World, expected: int) -> None:
    """Each sync key at most once in Coda's TRUE rows (coda_rows() asserts it too)."""
    column = w.binding.coda_key_column
    keys = Counter(row.cells.get(column) for row in w.emu.true_records(TABLE_ID))
    assert len(w.emu.true_records(TABLE_ID)) == expected
    assert None not in keys, "a Coda row has no sync key"
    assert len(keys) == expected and max(keys.values()) == 1


async def _converge(w: World, limit: int = 8) -> list[CycleResult]:
    """Cycles until one sends no write and leaves nothing pending (at most `limit`)."""
    out: list[CycleResult] = []
    for _ in range(limit):
        r = await w.cycle()
        out.append(r)
        if r.writes == 0 and r.pending_mutations == 0 and len(out) > 1:
            break
    return out


async def _assert_idle(w: World, cycles: int = 5) -> None:
    """Criterion 2: after convergence every cycle is exactly 1 read and 0 writes."""
    idle = [await w.cycle() for _ in range(cycles)]
    print("idle cycles (reads, writes):", _cost(idle))
    for r in idle:
        assert (r.reads, r.writes) == (1, 0), r.summary()
        assert r.stats["pulled_updates"] == r.stats["pushed_updates"] == 0, r.summary()


async def test_initial_pull_and_push_at_once(tmp_path: Path) -> None:
    """Criteria 1 + 2: 2,000 Coda rows and 1,000 local rows meet in the first cycle."""
    async with world(tmp_path, seed_rows=2000) as w:
        local_keys = await w.app_insert_many(1000)
        results = await _converge(w)
        for n, r in enumerate(results, 1):
            print(f"cycle {n}: {r.reads} reads, {r.writes} writes :: {r.summary()}")
        first = results[0]
        assert first.full_scan
        assert first.stats["pulled_inserts"] == 2000
        assert first.stats["pushed_inserts"] == 1000
        assert first.writes == 10, first.summary()  # ceil(1000 / upsert_batch_rows=100)
        assert sum(r.writes for r in results) == 10  # nothing is ever sent twice
        coda = await w.assert_converged()
        assert len(coda) == 3000
        assert set(local_keys) <= set(coda)
        _assert_no_duplicates(w, 3000)
        print(
            f"total to converge: {sum(r.reads for r in results)} reads, "
            f"{sum(r.writes for r in results)} writes in {len(results)} cycles"
        )
        await _assert_idle(w)
        await w.assert_converged()


def _report(w: World, label: str, results: list[CycleResult]) -> None:
    limiter = w.client._limiter
    print(
        f"{label}: {w.emu.stats.total} requests so far, by status "
        f"{w.emu.stats.by_status_class()}, 429s={w.emu.stats.count(status=429)}, "
        f"client rate_limited={w.client.stats.rate_limited}, paced waits so far: reads "
        f"{limiter.wait_seconds('read'):.1f} s, writes {limiter.wait_seconds('write'):.1f} s; "
        f"(reads, writes) per cycle {_cost(results)}"
    )
    assert w.emu.stats.count(status=429) == 0
    assert w.client.stats.rate_limited == 0 and w.client.stats.retries == 0


async def test_rate_limits_never_hit(tmp_path: Path) -> None:
    """Criterion 11: a push of 1,000 rows and a pull of 10,000 rows get zero 429s, both with
    and without `Retry-After` on 429 answers (one world, the flag switched half way: the first
    half pulls 10,000 new rows, the second re-reads them all in a full scan; each half also
    pushes 1,000 new local rows).

    Small pages (80 rows) and batches (25 rows) make each 10,000-row read need 125+ reads and
    each push 40 writes, so both limits (100 reads / 6 s, 10 writes / 6 s) are pressed on.
    """
    emu = EmulatorConfig(rate_limit_retry_after=False)
    coda = {"page_size": 80, "upsert_batch_rows": 25}
    async with world(tmp_path, seed_rows=10_000, emulator=emu, coda=coda) as w:
        assert (w.emu.config.read_limit, w.emu.config.write_limit) == (100, 10)
        limiter = w.client._limiter
        await w.app_insert_many(1000)
        results = await _converge(w)
        results.append(await w.cycle(advance=0))  # back to back: no interval in between
        _report(w, "rate_limit_retry_after=False", results)
        assert results[0].stats["pulled_inserts"] == 10_000
        assert results[0].stats["pushed_inserts"] == 1000
        assert sum(r.writes for r in results) == 40
        assert limiter.wait_seconds("read") > 0 and limiter.wait_seconds("write") > 0
        waited = limiter.wait_seconds("read"), limiter.wait_seconds("write")

        w.emu.set_config(rate_limit_retry_after=True)
        await w.app_insert_many(1000)
        results = [await w.cycle(full=True)]
        results += await _converge(w)
        _report(w, "rate_limit_retry_after=True", results)
        assert results[0].stats["remote_rows_read"] == 11_000
        assert results[0].stats["pushed_inserts"] == 1000
        assert limiter.wait_seconds("read") > waited[0]
        assert limiter.wait_seconds("write") > waited[1]
        async with w.store.connect() as conn:
            assert await w.engine.bound.count(conn) == 12_000  # the key is the primary key
        _assert_no_duplicates(w, 12_000)
