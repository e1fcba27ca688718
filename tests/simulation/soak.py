"""Long deterministic simulation: `python -m tests.simulation.soak --seeds N` (`make soak`).

Runs seeds START .. START+N-1 through the real engine against the emulator and SQLite,
re-runs a share of them (in this process and in a fresh one with another PYTHONHASHSEED) to
check the trace hash, measures how many seeds each planted bug needs to be caught, shrinks
failing seeds, then writes every figure to bench/results/reliability.json and prints a short
table. Exit status 1 if any invariant is violated in a way no known engine bug explains, a
planted bug goes uncaught, or a re-run traces differently.

    python -m tests.simulation.soak --seeds 2000 --workers 2
    python -m tests.simulation.soak --seeds 200 --start 5000 --planted-trials 5
    python -m tests.simulation.soak --trace-hash 17        # print one seed's trace hash
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from daemon import mutants
from tests.simulation import runner
from tests.simulation import schedule as sch
from tests.simulation.invariants import FIXED_BUGS, KNOWN_BUGS
from tests.simulation.sim import SimResult

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench" / "results" / "reliability.json"


def trace_hash_in_subprocess(seed: int, *, hashseed: str = "12345") -> str:
    """The trace hash of `seed` computed by a fresh interpreter (another PYTHONHASHSEED)."""
    env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "tests.simulation.soak", "--trace-hash", str(seed)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return out.stdout.strip().splitlines()[-1]


async def determinism(seeds: list[int], hashes: dict[int, str]) -> dict[str, Any]:
    """F6: re-run `seeds` here and the first one in a fresh process; compare trace hashes."""
    reruns = await runner.run_seeds(seeds)
    mismatches = [r.scenario.seed for r in reruns if r.trace_hash != hashes[r.scenario.seed]]
    cross: list[int] = []
    if seeds:
        other = await anyio.to_thread.run_sync(trace_hash_in_subprocess, seeds[0])
        if other != hashes[seeds[0]]:
            cross.append(seeds[0])
    return {
        "reruns_in_process": len(seeds),
        "reruns_in_fresh_process": 1 if seeds else 0,
        "mismatches": mismatches + cross,
    }


async def planted_bugs(trials: int, start: int, max_seeds: int) -> dict[str, Any]:
    """F5: for each planted bug, seeds needed to catch it in `trials` independent runs."""
    per: dict[str, Any] = {}
    for name in sorted(mutants.KNOWN):
        needed: list[int | None] = []
        examples: list[str] = []
        for trial in range(trials):
            n, result = await runner.seeds_to_catch(
                name, start=start + trial * 10_000, max_seeds=max_seeds
            )
            needed.append(n)
            if result is not None and len(examples) < 1:
                examples.append(
                    f"seed {result.scenario.seed}: {result.violations[0]}"
                    if result.violations
                    else ""
                )
        found = [n for n in needed if n is not None]
        per[name] = {
            "seeds_to_catch": needed,
            "median": statistics.median(found) if found else None,
            "caught_in_all_trials": len(found) == trials,
            "example": examples[0] if examples else None,
        }
    caught = sum(1 for v in per.values() if v["caught_in_all_trials"])
    return {"caught": f"{caught}/{len(per)}", "per_bug": per}


def _run_part(seeds: list[int], concurrency: int) -> list[SimResult]:
    """One worker process's share of the seeds (results are plain, picklable data)."""
    runner.quiet()
    return anyio.run(functools.partial(runner.run_seeds, seeds, concurrency=concurrency))


async def run_all(seeds: list[int], *, workers: int, concurrency: int) -> list[SimResult]:
    """Every seed, spread over `workers` processes (each seed is deterministic on its own,
    so where it runs does not change its trace); results in seed order."""
    if workers <= 1:
        return await runner.run_seeds(seeds, concurrency=concurrency)
    parts = [seeds[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_part, part, concurrency) for part in parts]
        done = await anyio.to_thread.run_sync(lambda: [f.result() for f in futures])
    by_seed = {r.scenario.seed: r for part in done for r in part}
    return [by_seed[s] for s in seeds]


async def soak(args: argparse.Namespace) -> int:
    runner.quiet()
    seeds = list(range(args.start, args.start + args.seeds))
    started = time.perf_counter()
    results = await run_all(seeds, workers=args.workers, concurrency=args.concurrency)
    fig = runner.figures(results, wall_seconds=time.perf_counter() - started)
    hashes = {r.scenario.seed: r.trace_hash for r in results}
    step = max(1, len(seeds) // max(1, round(len(seeds) * args.rerun_share)))
    fig["F6_determinism"] = await determinism(seeds[::step], hashes)
    if args.planted_trials:
        fig["F5_planted_bugs"] = await planted_bugs(
            args.planted_trials, args.start + 100_000, args.planted_max_seeds
        )
    unexpected = [r for r in results if runner.unexpected(r)]
    repros: list[str] = []
    for r in unexpected[: args.shrink]:
        small, small_result = await runner.shrink(r.scenario)
        repros.append(runner.reproduction(small, small_result))
    fig["reproductions"] = repros
    fig["known_engine_bugs"] = KNOWN_BUGS
    fig["fixed_engine_bugs"] = sorted(FIXED_BUGS)  # found by earlier runs, regression-tested
    fig["unexpected_failing_seeds"] = [r.scenario.seed for r in unexpected]
    fig["total_wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fig, indent=2, ensure_ascii=False, default=str) + "\n")
    print(runner.table(fig))
    for text in repros:
        print(text)
    print(f"figures written to {args.out}")
    bad_planted = args.planted_trials and fig["F5_planted_bugs"]["caught"].split("/")[0] != str(
        len(mutants.KNOWN)
    )
    failed = bool(unexpected) or bool(fig["F6_determinism"]["mismatches"]) or bool(bad_planted)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.simulation.soak", description=__doc__)
    p.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    p.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--concurrency", type=int, default=4, help="worlds run at once")
    p.add_argument(
        "--workers", type=int, default=1, help="processes sharing the seeds (e.g. one per CPU)"
    )
    p.add_argument("--rerun-share", type=float, default=0.02, help="share of seeds re-run")
    p.add_argument("--planted-trials", type=int, default=3, help="trials per planted bug (0: skip)")
    p.add_argument("--planted-max-seeds", type=int, default=200)
    p.add_argument("--shrink", type=int, default=3, help="failing seeds to shrink")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--trace-hash", type=int, metavar="SEED", help="print one seed's trace hash")
    args = p.parse_args(argv)
    if args.trace_hash is not None:
        runner.quiet()
        result = anyio.run(runner.run_scenario, sch.generate(args.trace_hash))
        print(result.trace_hash)
        return 0
    return anyio.run(soak, args)


if __name__ == "__main__":
    sys.exit(main())
