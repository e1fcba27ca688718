"""Run many seeds (concurrently, deterministically per seed), shrink failures, sum figures.

    results = anyio.run(run_seeds, range(1, 201))
    small = anyio.run(shrink, failing.scenario)      # drop steps while it still fails

Each seed runs in its own world; worlds share nothing but the template database file, so
running several at once on one event loop changes no seed's trace (and overlaps their
SQLite round trips, which is where the time goes).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import anyio

from daemon import mutants
from tests.simulation import schedule as sch
from tests.simulation.invariants import KNOWN_BUGS
from tests.simulation.sim import Sim, SimResult

Generator = Callable[[int], sch.Scenario]

# Seeds each planted bug needed in this process (filled by test_planted_bugs, reported with
# the CI figures by test_simulation when both run in one session).
PLANTED_CAUGHT: dict[str, int | None] = {}


def quiet() -> None:
    """The engine logs every retry at WARNING; a simulation makes thousands of them."""
    for name in ("daemon", "tests"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


async def run_scenario(scenario: sch.Scenario, *, planted: Sequence[str] = ()) -> SimResult:
    with mutants.planted(*planted):
        return await Sim(scenario).run()


async def run_seeds(
    seeds: Iterable[int],
    *,
    concurrency: int = 4,
    planted: Sequence[str] = (),
    generate: Generator = sch.generate,
    stop_on_failure: bool = False,
) -> list[SimResult]:
    """Run `seeds`, `concurrency` at a time; results in seed order."""
    quiet()
    seeds = list(seeds)
    results: dict[int, SimResult] = {}
    limit = anyio.Semaphore(concurrency)
    failed = anyio.Event()

    async def one(seed: int) -> None:
        async with limit:
            if stop_on_failure and failed.is_set():
                return
            result = await Sim(generate(seed)).run()
            results[seed] = result
            if not result.ok:
                failed.set()

    with mutants.planted(*planted):
        async with anyio.create_task_group() as tg:
            for seed in seeds:
                tg.start_soon(one, seed)
    return [results[s] for s in seeds if s in results]


def unexpected(result: SimResult) -> list[str]:
    """Violations that match no known engine bug."""
    return [str(v) for v in result.violations if v.tag not in KNOWN_BUGS]


async def shrink(
    scenario: sch.Scenario,
    *,
    planted: Sequence[str] = (),
    max_runs: int = 60,
    max_seconds: float = 90.0,
    same: Callable[[SimResult], bool] | None = None,
) -> tuple[sch.Scenario, SimResult]:
    """Drop steps (halves, quarters, ..., single steps) while the run still fails the same way.

    "The same way" defaults to: violates one of the invariants (with the same known-bug tags)
    of the original failure. Bounded by `max_runs` re-runs and `max_seconds`.
    """
    quiet()
    first = await run_scenario(scenario, planted=planted)
    if first.ok:
        return scenario, first
    wanted = {(v.invariant, v.tag) for v in first.violations}

    def still(result: SimResult) -> bool:
        if same is not None:
            return same(result)
        return bool(wanted & {(v.invariant, v.tag) for v in result.violations})

    best, best_result = scenario, first
    runs, started = 0, time.monotonic()
    chunk = max(1, len(best.steps) // 2)
    while chunk >= 1:
        start = 0
        while start < len(best.steps):
            if runs >= max_runs or time.monotonic() - started > max_seconds:
                return best, best_result
            steps = best.steps[:start] + best.steps[start + chunk :]
            candidate = replace(best, steps=steps)
            runs += 1
            result = await run_scenario(candidate, planted=planted)
            if not result.ok and still(result):
                best, best_result = candidate, result
            else:
                start += chunk
        chunk //= 2
    return best, best_result


def _signature(result: SimResult) -> set[tuple[str, str | None]]:
    return {(v.invariant, v.tag) for v in result.violations}


async def caught(
    seed: int, planted: str, *, generate: Generator = sch.generate
) -> SimResult | None:
    """The run of `seed` with the bug `planted`, if it fails in a way the real engine does not
    (a violation matching no known engine bug, or one the same seed does not show unplanted)."""
    scenario = generate(seed)
    result = await run_scenario(scenario, planted=(planted,))
    if result.ok:
        return None
    baseline = await run_scenario(scenario)
    return result if _signature(result) - _signature(baseline) else None


async def seeds_to_catch(
    planted: str,
    *,
    start: int = 1,
    max_seeds: int = 100,
    concurrency: int = 4,
    generate: Generator = sch.generate,
) -> tuple[int | None, SimResult | None]:
    """Run seeds start, start+1, ... with `planted` until one catches it: (seeds run, result)."""
    quiet()
    n = 0
    while n < max_seeds:
        batch = list(range(start + n, start + min(max_seeds, n + concurrency)))
        found: dict[int, SimResult] = {}

        async def one(seed: int, found: dict[int, SimResult] = found) -> None:
            result = await caught(seed, planted, generate=generate)
            if result is not None:
                found[seed] = result

        async with anyio.create_task_group() as tg:
            for seed in batch:
                tg.start_soon(one, seed)
        if found:
            first = min(found)
            return first - start + 1, found[first]
        n += len(batch)
    return None, None


def reproduction(scenario: sch.Scenario, result: SimResult) -> str:
    lines = [
        f"FAILING SEED {scenario.seed} ({len(scenario.steps)} steps after shrinking)",
        *(f"  violation {v}" for v in result.violations[:10]),
        "  reproduce: anyio.run(run_scenario, <the Scenario below>)",
        scenario.describe(),
        "  as code:",
        scenario.as_code(),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def figures(results: Sequence[SimResult], *, wall_seconds: float) -> dict[str, Any]:
    """The run's figures (TESTING.md 10.5 F1-F12) from per-seed figures."""
    faults: Counter[str] = Counter()
    schedules_with: Counter[str] = Counter()
    crash_fired: Counter[str] = Counter()
    crash_reached: Counter[str] = Counter()
    cells: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    known: Counter[str] = Counter()
    converge: list[float] = []
    failing: list[int] = []
    known_seeds: list[int] = []
    for r in results:
        f = r.figures
        faults.update(f["faults"])
        schedules_with.update(dict.fromkeys(f["faults"], 1))
        crash_fired.update(f["crash_points_fired"])
        crash_reached.update(f["crash_points_reached"])
        cells.update(f["crash_cells"])
        stats.update(f["stats"])
        if f["cycles_to_converge"] is not None:
            converge.append(float(f["cycles_to_converge"]))
        for v in r.violations:
            violations[v.invariant] += 1
            if v.tag:
                known[v.tag] += 1
        if unexpected(r):
            failing.append(r.scenario.seed)
        elif not r.ok:
            known_seeds.append(r.scenario.seed)
    seeds = [r.scenario.seed for r in results]
    lww = {k: v for k, v in stats.items() if k.startswith(("lww_decisions_", "wrong_winner_"))}
    return {
        "F1_schedules": len(results),
        "F1_seed_range": [min(seeds), max(seeds)] if seeds else [],
        "F1_operations": sum(r.figures["ops"] for r in results),
        "F1_steps": sum(r.figures["steps"] for r in results),
        "F1_cycles": sum(r.figures["cycles"] for r in results),
        "F1_simulated_hours": round(sum(r.figures["virtual_seconds"] for r in results) / 3600, 2),
        "F1_wall_seconds": round(wall_seconds, 1),
        "F2_faults_injected": dict(sorted(faults.items())),
        "F2_schedules_with_fault": dict(sorted(schedules_with.items())),
        "F3_crash_points_fired": {p: crash_fired.get(p, 0) for p in sch.CRASH_POINTS},
        "F3_crash_points_covered": f"{sum(1 for p in sch.CRASH_POINTS if crash_fired.get(p))}"
        f"/{len(sch.CRASH_POINTS)}",
        "F3_crash_cells": dict(sorted(cells.items())),
        "F4_violations": {
            f"I{n}": violations.get(f"I{n}", 0) for n in (0, 1, 2, 3, 4, 5, 7, 8, 10)
        },
        "F4_violations_known_engine_bugs": dict(known),
        "F4_failing_seeds_unexpected": failing,
        "F4_failing_seeds_known_engine_bugs": known_seeds,
        "F7_cycles_to_converge": {
            "p50": _pct(converge, 0.5),
            "p99": _pct(converge, 0.99),
            "max": max(converge, default=None),
            "mean": round(statistics.fmean(converge), 2) if converge else None,
        },
        "F8_conflicts_journaled": stats.get("conflicts_journaled", 0),
        "F9_lost_to_no_cas_race": stats.get("lost_raced", 0),
        "F9_concurrent_remote_edits": sum(r.figures["concurrent_edits"] for r in results),
        "F10_lww_by_skew": dict(sorted(lww.items())),
        "F11_peak_writes_per_6s": max((r.figures["peak_writes_6s"] for r in results), default=0),
        "F11_peak_accepted_writes_per_6s": max(
            (r.figures["peak_writes_6s_accepted"] for r in results), default=0
        ),
        "F11_requests": sum(r.figures["requests"] for r in results),
        "F11_429_injected": sum(r.figures["status_429_injected"] for r in results),
        "F11_429_from_rate_limiter": sum(r.figures["status_429_limiter"] for r in results),
        "F12_echo_or_second_pass_writes": violations.get("I7", 0) + violations.get("I8", 0),
        "F13_empty_listing_guard_trips": stats.get("guard_trips_empty_listing", 0),
        "restarts": sum(r.figures["restarts"] for r in results),
        "edit_beats_delete": {
            "journaled": stats.get("edit_beats_delete_journaled", 0),
            "unjournaled": stats.get("edit_beats_delete_unjournaled", 0),
        },
        "i2_fields_checked": stats.get("i2_fields_checked", 0),
        "incremental_remote_misses": stats.get("incremental_remote_misses", 0),
    }


def table(fig: dict[str, Any]) -> str:
    """A short human table of the main figures."""
    rows = [
        ("schedules (seeds)", f"{fig['F1_schedules']} {fig['F1_seed_range']}"),
        ("operations / cycles", f"{fig['F1_operations']} / {fig['F1_cycles']}"),
        ("simulated hours / wall s", f"{fig['F1_simulated_hours']} / {fig['F1_wall_seconds']}"),
        ("faults injected", sum(fig["F2_faults_injected"].values())),
        ("fault classes", len(fig["F2_faults_injected"])),
        ("crash points covered", fig["F3_crash_points_covered"]),
        ("violations by invariant", {k: v for k, v in fig["F4_violations"].items() if v} or 0),
        ("  of which known engine bugs", fig["F4_violations_known_engine_bugs"] or 0),
        ("seeds failing on known engine bugs", len(fig["F4_failing_seeds_known_engine_bugs"])),
        ("seeds failing otherwise", fig["F4_failing_seeds_unexpected"][:20] or "none"),
        (
            "cycles to converge p50/p99/max",
            "/".join(str(fig["F7_cycles_to_converge"][k]) for k in ("p50", "p99", "max")),
        ),
        ("conflicts journaled", fig["F8_conflicts_journaled"]),
        ("lost to the no-CAS race (F9)", fig["F9_lost_to_no_cas_race"]),
        (
            "peak writes per 6 s (all / accepted)",
            f"{fig['F11_peak_writes_per_6s']} / {fig['F11_peak_accepted_writes_per_6s']}",
        ),
        (
            "429s injected / from the limiter",
            f"{fig['F11_429_injected']} / {fig['F11_429_from_rate_limiter']}",
        ),
        ("empty-listing breaker trips", fig["F13_empty_listing_guard_trips"]),
    ]
    if "F5_planted_bugs" in fig:
        rows.append(("planted bugs caught", fig["F5_planted_bugs"]["caught"]))
    if "F6_determinism" in fig:
        rows.append(("determinism re-runs / mismatches", fig["F6_determinism"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


__all__ = [
    "caught",
    "figures",
    "reproduction",
    "run_scenario",
    "run_seeds",
    "seeds_to_catch",
    "shrink",
    "table",
    "unexpected",
]
