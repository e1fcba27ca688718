"""Fallback emulator process: `python -m bench.emuproc --seed-rows N` (port 0).

Used only when `python -m daemon emulator` is not available; prints the same
"emulator listening on URL" line, then serves until terminated.
"""

from __future__ import annotations

import argparse

import anyio

from daemon.emulator import DEFAULT_TOKEN, EmulatorConfig, run_emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed-rows", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    def ready(url: str) -> None:
        print(f"emulator listening on {url}", flush=True)

    async def serve() -> None:
        await run_emulator(
            port=args.port,
            seed_rows=args.seed_rows,
            token=DEFAULT_TOKEN,
            config=EmulatorConfig(),
            ready=ready,
        )

    anyio.run(serve)


if __name__ == "__main__":
    main()
