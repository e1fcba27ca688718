"""Smoke test of the benchmark suite: the quick run (N = 200) end to end.

Asserts on request COUNTS only (idle = 1 read, 0 writes after convergence, pull reads =
ceil(N/500), ...), never on wall time: timings depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
N = 200

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-results")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.perf", "--quick", "--results-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "perf.md").is_file()
    data: dict[str, Any] = json.loads((out / "perf.json").read_text(encoding="utf-8"))
    return data


def _phases(data: dict[str, Any], job: str) -> dict[str, dict[str, Any]]:
    phases: dict[str, dict[str, Any]] = data[job][str(N)]["phases"]
    return phases


def test_quick_run_has_every_job(quick: dict[str, Any]) -> None:
    assert quick["errors"] == {}
    assert quick["meta"]["sizes"] == [N]
    for job in ("api_cost", "naive", "idle_hour", "latency", "loopback", "memory", "profile"):
        assert str(N) in quick[job], job


def test_api_cost_counts_meet_the_floors(quick: dict[str, Any]) -> None:
    p = _phases(quick, "api_cost")
    assert p["initial_pull"]["reads"] == math.ceil(N / 500)
    assert p["initial_pull"]["writes"] == 0
    assert (p["idle"]["reads"], p["idle"]["writes"]) == (1, 0)
    assert p["full_resync"]["reads"] == math.ceil(N / 500)
    assert p["full_resync"]["writes"] == 0
    assert p["push"]["writes"] == math.ceil(N / 100)
    assert p["push_converge"]["writes"] == 0
    assert (p["idle_after_push"]["reads"], p["idle_after_push"]["writes"]) == (1, 0)
    for name, phase in p.items():
        assert phase["rate_limited_429"] == phase["emu_429"] == 0, name
        assert (phase["emu_reads"], phase["emu_writes"]) == (phase["reads"], phase["writes"]), name


def test_naive_baseline_counts(quick: dict[str, Any]) -> None:
    p = _phases(quick, "naive")
    page = quick["naive"][str(N)]["page_size"]
    assert p["after_convergence"]["reads"] == math.ceil(N / page)
    assert p["idle_page_500"]["reads"] == math.ceil(N / 500)
    assert p["push"]["writes"] == N  # one PUT per changed row
    assert p["after_push_convergence"]["writes"] == 0


def test_idle_hour_and_loopback_counts(quick: dict[str, Any]) -> None:
    hour = quick["idle_hour"][str(N)]
    assert hour["writes"] == 0
    assert hour["full_scans"] == 1
    assert hour["reads"] == hour["cycles"] - 1 + math.ceil(N / 500)
    loop = _phases(quick, "loopback")
    assert loop["initial_pull"]["reads"] == math.ceil(N / 500)
    assert (loop["idle"]["reads"], loop["idle"]["writes"]) == (1, 0)
    assert loop["push"]["writes"] == math.ceil(N / 100)
    assert loop["idle_after_push"]["writes"] == 0
    assert loop["push"]["emu_writes"] == loop["push"]["writes"]
