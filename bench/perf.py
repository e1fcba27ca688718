"""coda-sync benchmarks: `python -m bench.perf [--quick] [--sizes 1000,10000,100000]`.

Runs every measurement as a job in its OWN fresh subprocess (so memory peaks and caches never
mix), at most `--jobs` at a time (longest first), then checks the targets and writes
bench/results/perf.json and bench/results/perf.md atomically, and prints the figures table.

    python -m bench.perf                 default sizes 1k, 10k, 100k (several minutes)
    python -m bench.perf --quick         N = 200 everywhere (seconds; what the smoke test runs)
    python -m bench.perf --sizes 1000,10000 --jobs 2 --results-dir /tmp/perf
    python -m bench.perf --report-only   rebuild table/targets/perf.md from perf.json
    python -m bench.perf --job api_cost --size 1000 --job-out x.json   (one job, internal)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZE = 200


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help=f"small sizes (N = {QUICK_SIZE})")
    p.add_argument("--sizes", help="comma-separated table sizes (default 1000,10000,100000)")
    p.add_argument("--jobs", type=int, default=2, help="jobs run at once (default 2)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--converge-max",
        type=int,
        default=10_000,
        help="largest N whose push is also confirmed (quadratic today)",
    )
    p.add_argument(
        "--naive-push-max",
        type=int,
        default=10_000,
        help="naive: PUT every changed row up to this N; above it a 10%% sample, extrapolated",
    )
    p.add_argument("--naive-page-size", type=int, default=100)
    p.add_argument("--latency-runs", type=int, default=50)
    p.add_argument("--latency-rows", type=int, default=1_000)
    p.add_argument("--idle-hour-rows", type=int, default=10_000)
    p.add_argument(
        "--loopback-rows",
        type=int,
        default=2_000,
        help="rows pushed over loopback in real time (2000 = 20 writes)",
    )
    p.add_argument("--profile-rows", type=int, default=3_000)
    p.add_argument(
        "--memory-min",
        type=int,
        default=10_000,
        help="peak RSS is measured for sizes >= this (always in --quick)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="no measuring: rebuild the table, targets and perf.md from perf.json's raw results",
    )
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--job-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--page-size", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--push-max", type=int, default=10_000, help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=50, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[list[int], list[tuple[str, int, dict[str, Any]]]]:
    """The jobs to run: (name, size, options), longest first."""
    if args.sizes:
        sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    elif args.quick:
        sizes = [QUICK_SIZE]
    else:
        sizes = list(DEFAULT_SIZES)
    small = max(sizes) if args.quick else None
    jobs: list[tuple[str, int, dict[str, Any]]] = []
    for n in sizes:
        jobs.append(("api_cost", n, {"converge_max": args.converge_max}))
        jobs.append(
            ("naive", n, {"page_size": args.naive_page_size, "push_max": args.naive_push_max})
        )
        if args.quick or n >= args.memory_min:
            jobs.append(("memory", n, {}))
    hour_rows = small or (args.idle_hour_rows if args.idle_hour_rows in sizes else max(sizes))
    jobs.append(("idle_hour", hour_rows, {}))
    if hour_rows not in sizes:
        jobs.append(
            (
                "naive",
                hour_rows,
                {"page_size": args.naive_page_size, "push_max": args.naive_push_max},
            )
        )
    jobs.append(
        ("latency", small or args.latency_rows, {"runs": 10 if args.quick else args.latency_runs})
    )
    jobs.append(("loopback", small or args.loopback_rows, {}))
    jobs.append(("profile", small or args.profile_rows, {}))
    weight = {
        "api_cost": 6.0,
        "memory": 3.0,
        "naive": 2.0,
        "idle_hour": 3.0,
        "profile": 8.0,
        "latency": 30.0,
        "loopback": 10.0,
    }
    jobs.sort(key=lambda j: -weight[j[0]] * max(j[1], 1_000))
    return sizes, jobs


def run_child(
    name: str, size: int, options: dict[str, Any], workdir: Path
) -> tuple[dict[str, Any] | None, str | None, float]:
    """One job in a fresh `python -m bench.perf --job ...` process."""
    out = workdir / f"{name}-{size}.json"
    log = workdir / f"{name}-{size}.log"
    cmd = [
        sys.executable,
        "-m",
        "bench.perf",
        "--job",
        name,
        "--size",
        str(size),
        "--job-out",
        str(out),
    ]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    started = time.perf_counter()
    with log.open("wb") as err:
        proc = subprocess.run(
            cmd,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=err,
            stderr=subprocess.STDOUT,
            check=False,
        )
    took = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        return None, f"exit {proc.returncode}: " + " / ".join(tail), took
    return json.loads(out.read_text()), None, took


def child_main(args: argparse.Namespace) -> int:
    from bench.scenarios import run_job

    options: dict[str, Any] = {}
    if args.job == "api_cost":
        options = {"converge_max": args.converge_max}
    elif args.job == "naive":
        options = {"page_size": args.page_size, "push_max": args.push_max}
    elif args.job == "latency":
        options = {"runs": args.runs}
    result = run_job(args.job, args.size, **options)
    write_atomic(args.job_out, json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory + rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def misses(figures: list[report.Figure]) -> list[str]:
    return [
        f"{f.section} / {f.metric} (N={f.size}): measured {f.measured} {f.unit}, target "
        f"{f.target}" + (f" ({f.ratio}x floor)" if f.ratio is not None else "")
        for f in figures
        if f.ok is False
    ]


def git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return None
    return proc.stdout.strip() or None


def source_digests() -> dict[str, str]:
    from bench.scenarios import source_digests as digests

    return digests()


def consistency(results: dict[str, Any]) -> dict[str, Any]:
    """Did every job run on the same daemon sources? (others edit daemon/ meanwhile)"""
    seen: dict[str, list[str]] = {}
    for group, jobs in results.items():
        for size, job in jobs.items():
            if isinstance(job, dict) and "sources" in job:
                key = json.dumps(job["sources"], sort_keys=True)
                seen.setdefault(key, []).append(f"{group}-{size}")
                if job.get("sources_changed_during_job"):
                    seen.setdefault("changed during the job", []).append(f"{group}-{size}")
    return {"all_jobs_same_sources": len(seen) <= 1, "jobs_by_sources": list(seen.values())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        return child_main(args)
    if args.report_only:
        return report_only(args.results_dir)
    started = time.perf_counter()
    digests = source_digests()
    load_start = [round(x, 2) for x in os.getloadavg()]
    sizes, jobs = plan(args)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    print(f"bench: {len(jobs)} jobs, sizes {sizes}, {args.jobs} at a time", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="coda-sync-bench-") as d,
        ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
    ):
        futures = {
            pool.submit(run_child, name, size, options, Path(d)): (name, size)
            for name, size, options in jobs
        }
        for future in as_completed(futures):
            name, size = futures[future]
            result, error, took = future.result()
            timings[f"{name}-{size}"] = round(took, 1)
            status = "failed" if error else "done"
            print(f"  {name:<10} N={size:<7} {status} in {took:6.1f} s", flush=True)
            if error:
                errors[f"{name}-{size}"] = error
            else:
                results.setdefault(name, {})[str(size)] = result
    results["meta"] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.perf " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(),
        "daemon_sources_sha256_at_start": digests,
        "daemon_sources_changed_during_run": [
            k for k, v in source_digests().items() if digests.get(k) != v
        ],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "sizes": sizes,
        "quick": args.quick,
        "jobs_at_once": args.jobs,
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "total_seconds": round(time.perf_counter() - started, 1),
        "job_seconds": timings,
        "time_note": "sections 1, 2, 5: VIRTUAL time (FakeClock shared by client and emulator); "
        "section 2b: real time over loopback; section 3: real CPU seconds",
    }
    results["meta"]["sources_consistency"] = consistency(
        {k: v for k, v in results.items() if k != "meta"}
    )
    results["errors"] = errors
    return finish(results, args.results_dir)


def finish(results: dict[str, Any], results_dir: Path) -> int:
    """Targets, figures, perf.json + perf.md (atomically), the table on stdout."""
    figures = report.build_figures(results, results["meta"]["sizes"])
    results["definitions"] = report.DEFINITIONS
    results["figures"] = [f.as_json() for f in figures]
    results["misses"] = misses(figures)
    results["findings"] = report.findings(results)
    errors: dict[str, str] = results.get("errors", {})
    results_dir.mkdir(parents=True, exist_ok=True)
    head = ("meta", "definitions", "figures", "misses", "findings", "errors")
    ordered = {k: results[k] for k in head}
    ordered |= {k: v for k, v in results.items() if k not in ordered}
    write_atomic(results_dir / "perf.json", json.dumps(ordered, indent=1, ensure_ascii=False))
    write_atomic(results_dir / "perf.md", report.markdown(results, figures))
    print()
    print(report.text_table(figures))
    print()
    if results["misses"]:
        print("targets missed:")
        for m in results["misses"]:
            print("  -", m)
    if errors:
        print("job errors:")
        for name, err in errors.items():
            print(f"  - {name}: {err}")
    print(f"\nwrote {results_dir / 'perf.json'} and perf.md")
    return 1 if errors else 0


def report_only(results_dir: Path) -> int:
    """Rebuild figures, targets and perf.md from the raw job results already in perf.json."""
    results = json.loads((results_dir / "perf.json").read_text(encoding="utf-8"))
    for derived in ("definitions", "figures", "misses", "findings"):
        results.pop(derived, None)
    results["meta"]["report_rebuilt_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return finish(results, results_dir)


if __name__ == "__main__":
    raise SystemExit(main())
