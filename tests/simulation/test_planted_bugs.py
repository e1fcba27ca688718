"""The harness must catch every planted bug (TESTING.md 10.6, figure F5).

Each planted bug (`daemon.mutants`) is switched on and seeds are run, from a fixed start, until
one fails in a way the same seed does not fail without the bug. A harness that misses one of
these is no evidence of safety. `python -m tests.simulation.soak` repeats this over several
starts and reports the median seeds-to-catch.
"""

from __future__ import annotations

import pytest

from daemon import mutants
from tests.simulation import runner

START = 1000
MAX_SEEDS = 150


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(mutants.KNOWN))
async def test_planted_bug_is_caught(name: str) -> None:
    needed, result = await runner.seeds_to_catch(name, start=START, max_seeds=MAX_SEEDS)
    runner.PLANTED_CAUGHT[name] = needed
    assert result is not None, f"planted bug {name!r} not caught in {MAX_SEEDS} seeds"
    print(f"\nplanted bug {name}: caught after {needed} seed(s), seed {result.scenario.seed}:")
    for v in result.violations[:3]:
        print(f"  {v}")
    assert not mutants.active(), "planted bugs must be off again after the run"


def test_planted_is_scoped_and_validated() -> None:
    assert not mutants.on("no_overlap")
    with mutants.planted("no_overlap"):
        assert mutants.on("no_overlap")
        with mutants.planted("no_overlap", "plain_insert"):
            assert mutants.active() == {"no_overlap", "plain_insert"}
        assert mutants.active() == {"no_overlap"}
    assert not mutants.active()
    with pytest.raises(ValueError, match="unknown planted bug"):
        with mutants.planted("no_such_bug"):
            pass
