"""Planted bugs ("mutants") that prove the simulation harness catches what it claims to.

Each name below switches on ONE known-bad behaviour at a one-line hook in the engine, the
writer or the Coda client (`if mutants.on("no_overlap"): ...`). Nothing is ever on unless a
test turns it on with `planted(...)`; there is deliberately no environment variable or config
key for it, so production code cannot run a mutant by accident. The check costs one set lookup.

    with mutants.planted("no_overlap"):
        ...  # run simulations; the harness must report a violation

Names (TESTING.md section 10.6):

    no_overlap           local watermark used without `local_overlap_seconds`: a transaction
                         that commits late with an earlier `updated_at` is never seen
    confirm_on_202       a push is recorded as synced on HTTP 202, without mutationStatus
    plain_insert         upserts are sent without `keyColumns` (every push inserts a row)
    unconfirmed_delete   a row missing from a full listing counts as deleted without the
                         confirming GET by id
    no_skew_band         conflicts compare raw timestamps: clock-skew band 0
    ignore_retry_after   the client ignores `Retry-After` on 429 and uses its own backoff
    trust_empty_listing  an empty full listing is not refused by the empty-listing breaker
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

KNOWN: Final[frozenset[str]] = frozenset(
    {
        "no_overlap",
        "confirm_on_202",
        "plain_insert",
        "unconfirmed_delete",
        "no_skew_band",
        "ignore_retry_after",
        "trust_empty_listing",
    }
)

_active: set[str] = set()


def on(name: str) -> bool:
    """True while the planted bug `name` is switched on (never in production)."""
    return bool(_active) and name in _active


def active() -> frozenset[str]:
    """The planted bugs switched on now."""
    return frozenset(_active)


@contextmanager
def planted(*names: str) -> Iterator[None]:
    """Switch the named planted bugs on for the duration of the block (nestable)."""
    unknown = sorted(set(names) - KNOWN)
    if unknown:
        raise ValueError(f"unknown planted bug(s): {', '.join(unknown)}")
    added = [name for name in names if name not in _active]
    _active.update(added)
    try:
        yield
    finally:
        _active.difference_update(added)
