"""Performance benchmarks of coda-sync against the emulator: `python -m bench.perf`.

bench/perf.py       entry point: runs the jobs (each in a fresh subprocess), checks the
                    targets, writes bench/results/perf.json + perf.md, prints the table
bench/world.py      emulator + real client + SQLite + real engine on one clock (in process
                    on a FakeClock, or over loopback HTTP on the real clock)
bench/scenarios.py  the measured scenarios (API cost, wall time, local cost, latency, ...)
bench/naive.py      the naive baseline sync (full listing every cycle, one PUT per row)
bench/report.py     targets, the table, perf.md
"""

from __future__ import annotations
