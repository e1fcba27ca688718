"""Example table for `reconcile.plan`: every case of the module docstring, the guard, the skew band.

Columns: `name` and `qty` are writable, `calc` is readonly (a Coda calculated column).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon import reconcile
from daemon.model import (
    ABSENT,
    Action,
    Canon,
    Conflict,
    ConflictRule,
    DeletePolicy,
    KeyInput,
    KeyPlan,
    Policy,
    Side,
    SideState,
    SyncKey,
    Values,
    Version,
)

T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
K = SyncKey("k")
POLICY = Policy(
    readonly_columns=frozenset({"calc"}),
    clock_skew_seconds=5.0,
    tie_break=Side.REMOTE,
    max_delete_share=1.0,
    max_delete_count=0,
    known_rows=100,
)
BASE: dict[str, Canon] = {"name": "Ann", "qty": "1", "calc": "c0"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(**changes: Canon) -> dict[str, Canon]:
    """BASE with some columns changed."""
    return {**BASE, **changes}


def v(seconds: float = 0, **changes: Canon) -> Version:
    """A side's Version: BASE with changes, modified at T0 + seconds."""
    return Version(row(**changes), at(seconds))


def conflict(
    column: str | None,
    local: Canon,
    remote: Canon,
    base: Canon,
    winner: Side,
    rule: ConflictRule,
    local_at: datetime | None,
    remote_at: datetime | None,
) -> Conflict:
    return Conflict(K, column, local, remote, base, winner, rule, local_at, remote_at)


def ebd(winner: Side, local_at: datetime | None, remote_at: datetime | None) -> Conflict:
    rule = ConflictRule.EDIT_BEATS_DELETE
    return conflict(None, None, None, None, winner, rule, local_at, remote_at)


LWW, TIE, FIRST = ConflictRule.LWW, ConflictRule.TIE_BREAK, ConflictRule.FIRST_SYNC
L, R = Side.LOCAL, Side.REMOTE


def case(
    id: str,
    base: Values | None,
    local: SideState,
    remote: SideState,
    expected: KeyPlan,
    **policy: Any,
) -> Any:
    return pytest.param(base, local, remote, policy, expected, id=id)


def kp(action: Action, new_base: Values | None, **effects: Any) -> KeyPlan:
    return KeyPlan(K, action, new_base, **effects)


CASES = [
    # --- first sync (no base) ---
    case("first-equal-adopt", None, v(), v(30), kp(Action.ADOPT, BASE)),
    case(
        "first-equal-readonly-fixed-locally",
        None,
        v(calc=None),
        v(),
        kp(Action.ADOPT, BASE, local_write=BASE),
    ),
    case(
        "first-differs-remote-later",
        None,
        v(0, qty="1"),
        v(60, qty="2"),
        kp(
            Action.MERGE,
            row(qty="2"),
            local_write=row(qty="2"),
            conflicts=(conflict("qty", "1", "2", None, R, FIRST, at(0), at(60)),),
        ),
    ),
    case(
        "first-differs-local-later",
        None,
        v(60, qty="1"),
        v(0, qty="2"),
        kp(
            Action.MERGE,
            row(qty="1"),
            remote_write={"qty": "1"},
            conflicts=(conflict("qty", "1", "2", None, L, FIRST, at(60), at(0)),),
        ),
    ),
    case(
        "first-differs-in-band-tie-break",
        None,
        v(0, qty="1", name="A"),
        v(3, qty="2", name="B"),
        kp(
            Action.MERGE,
            row(qty="2", name="B"),
            local_write=row(qty="2", name="B"),
            conflicts=(
                conflict("name", "A", "B", None, R, TIE, at(0), at(3)),
                conflict("qty", "1", "2", None, R, TIE, at(0), at(3)),
            ),
        ),
    ),
    case(
        "first-push-insert",
        None,
        v(),
        ABSENT,
        kp(Action.PUSH, BASE, remote_write={"name": "Ann", "qty": "1"}, remote_insert=True),
    ),
    case(
        "first-push-insert-remote-unread",
        None,
        v(),
        None,
        kp(Action.PUSH, BASE, remote_write={"name": "Ann", "qty": "1"}, remote_insert=True),
    ),
    case(
        "first-pull-insert",
        None,
        ABSENT,
        v(),
        kp(Action.PULL, BASE, local_write=BASE, local_insert=True),
    ),
    case(
        "first-pull-insert-local-unread",
        None,
        None,
        v(),
        kp(Action.PULL, BASE, local_write=BASE, local_insert=True),
    ),  # fmt: skip
    case("first-both-absent", None, ABSENT, ABSENT, kp(Action.FORGET, None)),
    case("first-nothing-read", None, None, None, kp(Action.FORGET, None)),
    # --- with a base: nothing changed ---
    case("skip-both-read", BASE, v(), v(), kp(Action.SKIP, BASE)),
    case("skip-nothing-read", BASE, None, None, kp(Action.SKIP, BASE)),
    case("skip-local-only-read", BASE, v(), None, kp(Action.SKIP, BASE)),
    case(
        "readonly-drift-pulled",
        BASE,
        v(),
        v(calc="c1"),
        kp(Action.PULL, row(calc="c1"), local_write=row(calc="c1")),
    ),
    case(
        "readonly-drift-pulled-local-unread",
        BASE,
        None,
        v(calc="c1"),
        kp(Action.PULL, row(calc="c1"), local_write=row(calc="c1")),
    ),
    case(
        "readonly-edited-locally-is-corrected-not-pushed",
        BASE,
        v(calc="local edit"),
        v(),
        kp(Action.PULL, BASE, local_write=BASE),
    ),
    case(
        "readonly-already-local-base-catches-up",
        BASE,
        v(calc="c1"),
        v(calc="c1"),
        kp(Action.PULL, row(calc="c1")),
    ),
    # --- one side changed ---
    case(
        "push-changed-fields-only",
        BASE,
        v(qty="2"),
        v(),
        kp(Action.PUSH, row(qty="2"), remote_write={"qty": "2"}),
    ),
    case(
        "push-remote-unread",
        BASE,
        v(qty="2"),
        None,
        kp(Action.PUSH, row(qty="2"), remote_write={"qty": "2"}),
    ),
    case(
        "push-with-readonly-drift",
        BASE,
        v(qty="2"),
        v(calc="c1"),
        kp(
            Action.PUSH,
            row(qty="2", calc="c1"),
            local_write=row(qty="2", calc="c1"),
            remote_write={"qty": "2"},
        ),
    ),
    case(
        "push-to-empty",
        BASE,
        v(name=None),
        v(),
        kp(Action.PUSH, row(name=None), remote_write={"name": None}),
    ),
    case(
        "pull-full-row",
        BASE,
        v(),
        v(qty="3", calc="c1"),
        kp(Action.PULL, row(qty="3", calc="c1"), local_write=row(qty="3", calc="c1")),
    ),
    case(
        "pull-local-unread",
        BASE,
        None,
        v(qty="3"),
        kp(Action.PULL, row(qty="3"), local_write=row(qty="3")),
    ),
    # --- both changed ---
    case(
        "merge-disjoint-fields",
        BASE,
        v(0, name="Bo"),
        v(0, qty="9", calc="c1"),
        kp(
            Action.MERGE,
            row(name="Bo", qty="9", calc="c1"),
            local_write=row(name="Bo", qty="9", calc="c1"),
            remote_write={"name": "Bo"},
        ),
    ),
    case(
        "merge-same-change-both-sides-adopt",
        BASE,
        v(0, qty="5"),
        v(100, qty="5"),
        kp(Action.ADOPT, row(qty="5")),
    ),
    case(
        "conflict-remote-later",
        BASE,
        v(0, qty="2"),
        v(10, qty="3"),
        kp(
            Action.MERGE,
            row(qty="3"),
            local_write=row(qty="3"),
            conflicts=(conflict("qty", "2", "3", "1", R, LWW, at(0), at(10)),),
        ),
    ),
    case(
        "conflict-local-later",
        BASE,
        v(10, qty="2"),
        v(0, qty="3"),
        kp(
            Action.MERGE,
            row(qty="2"),
            remote_write={"qty": "2"},
            conflicts=(conflict("qty", "2", "3", "1", L, LWW, at(10), at(0)),),
        ),
    ),
    case(
        "conflict-in-band-tie-break-remote",
        BASE,
        v(4, qty="2"),
        v(0, qty="3"),
        kp(
            Action.MERGE,
            row(qty="3"),
            local_write=row(qty="3"),
            conflicts=(conflict("qty", "2", "3", "1", R, TIE, at(4), at(0)),),
        ),
    ),
    case(
        "conflict-in-band-tie-break-local",
        BASE,
        v(0, qty="2"),
        v(4, qty="3"),
        kp(
            Action.MERGE,
            row(qty="2"),
            remote_write={"qty": "2"},
            conflicts=(conflict("qty", "2", "3", "1", L, TIE, at(0), at(4)),),
        ),
        tie_break=Side.LOCAL,
    ),
    case(
        "conflict-exactly-skew-is-a-tie",
        BASE,
        v(0, qty="2"),
        v(5, qty="3"),
        kp(
            Action.MERGE,
            row(qty="2"),
            remote_write={"qty": "2"},
            conflicts=(conflict("qty", "2", "3", "1", L, TIE, at(0), at(5)),),
        ),
        tie_break=Side.LOCAL,
    ),
    case(
        "conflict-just-outside-skew-is-lww",
        BASE,
        v(0, qty="2"),
        v(5.001, qty="3"),
        kp(
            Action.MERGE,
            row(qty="3"),
            local_write=row(qty="3"),
            conflicts=(conflict("qty", "2", "3", "1", R, LWW, at(0), at(5.001)),),
        ),
        tie_break=Side.LOCAL,
    ),
    case(
        "conflict-plus-one-sided-change",
        BASE,
        v(0, qty="2", name="Lo"),
        v(60, qty="3"),
        kp(
            Action.MERGE,
            row(qty="3", name="Lo"),
            local_write=row(qty="3", name="Lo"),
            remote_write={"name": "Lo"},
            conflicts=(conflict("qty", "2", "3", "1", R, LWW, at(0), at(60)),),
        ),
    ),
    # --- deletes ---
    case(
        "local-delete-propagates",
        BASE,
        ABSENT,
        v(),
        kp(Action.DELETE_REMOTE, None, remote_delete=True),
    ),
    case(
        "local-delete-remote-unread",
        BASE,
        ABSENT,
        None,
        kp(Action.DELETE_REMOTE, None, remote_delete=True),
    ),
    case(
        "local-delete-readonly-drift-is-no-edit",
        BASE,
        ABSENT,
        v(calc="c9"),
        kp(Action.DELETE_REMOTE, None, remote_delete=True),
    ),
    case(
        "local-delete-soft-policy",
        BASE,
        ABSENT,
        v(),
        kp(Action.DELETE_REMOTE, None, remote_delete=True),
        deletes=DeletePolicy.SOFT,
    ),
    case(
        "local-delete-ignored",
        BASE,
        ABSENT,
        v(),
        kp(Action.DETACH, None),
        deletes=DeletePolicy.IGNORE,
    ),
    case(
        "remote-delete-propagates",
        BASE,
        v(),
        ABSENT,
        kp(Action.DELETE_LOCAL, None, local_delete=True),
    ),
    case(
        "remote-delete-local-unread",
        BASE,
        None,
        ABSENT,
        kp(Action.DELETE_LOCAL, None, local_delete=True),
    ),
    case(
        "remote-delete-soft",
        BASE,
        v(),
        ABSENT,
        kp(Action.SOFT_DELETE_LOCAL, None, soft_delete=True),
        deletes=DeletePolicy.SOFT,
    ),
    case(
        "remote-delete-ignored",
        BASE,
        v(),
        ABSENT,
        kp(Action.DETACH, None),
        deletes=DeletePolicy.IGNORE,
    ),
    case(
        "remote-edit-beats-local-delete",
        BASE,
        ABSENT,
        v(7, qty="4"),
        kp(
            Action.PULL,
            row(qty="4"),
            local_write=row(qty="4"),
            local_insert=True,
            conflicts=(ebd(R, None, at(7)),),
        ),
    ),
    case(
        "local-edit-beats-remote-delete",
        BASE,
        v(7, qty="4"),
        ABSENT,
        kp(
            Action.PUSH,
            row(qty="4"),
            remote_write={"name": "Ann", "qty": "4"},
            remote_insert=True,
            conflicts=(ebd(L, at(7), None),),
        ),
        deletes=DeletePolicy.IGNORE,
    ),
    case("both-deleted", BASE, ABSENT, ABSENT, kp(Action.FORGET, None)),
]


@pytest.mark.parametrize(("base", "local", "remote", "policy", "expected"), CASES)
def test_plan_table(
    base: Values | None,
    local: SideState,
    remote: SideState,
    policy: dict[str, Any],
    expected: KeyPlan,
) -> None:
    """One key: the plan matches the documented case exactly."""
    result = reconcile.plan([KeyInput(K, base, local, remote)], replace(POLICY, **policy))
    assert result.keys == (expected,)
    assert result.guard is None
    assert result.counts[expected.action] == 1
    assert sum(result.counts.values()) == 1


def test_missing_column_reads_as_none() -> None:
    """A column absent from one mapping compares as None and appears in the outcome."""
    result = reconcile.plan(
        [KeyInput(K, {"name": "Ann"}, Version({"name": "Ann", "qty": "2"}, T0), None)], POLICY
    )
    (plan,) = result.keys
    assert plan.action is Action.PUSH
    assert plan.remote_write == {"qty": "2"}
    assert plan.new_base == {"name": "Ann", "qty": "2"}


def test_naive_timestamps_count_as_utc() -> None:
    """A naive timestamp against an aware one does not crash: it is taken as UTC."""
    local = Version(row(qty="2"), datetime(2024, 1, 1, 12, 0, 10))
    remote = Version(row(qty="3"), T0)
    (plan,) = reconcile.plan([KeyInput(K, BASE, local, remote)], POLICY).keys
    (c,) = plan.conflicts
    assert c.winner is Side.LOCAL and c.rule is ConflictRule.LWW


def test_output_sorted_and_counts_complete() -> None:
    """Keys come out sorted whatever the input order; counts name every Action."""
    items = [KeyInput(SyncKey(k), BASE, None, None) for k in ("c", "a", "b")]
    result = reconcile.plan(items, POLICY)
    assert [k.key for k in result.keys] == ["a", "b", "c"]
    assert set(result.counts) == set(Action)
    assert result.counts[Action.SKIP] == 3 and result.counts[Action.PUSH] == 0


def test_duplicate_keys_are_refused() -> None:
    """The same key twice is a caller bug, reported loudly."""
    item = KeyInput(K, BASE, None, None)
    with pytest.raises(ValueError, match="appears twice"):
        reconcile.plan([item, item], POLICY)


def test_plan_accepts_any_iterable() -> None:
    """A generator works (the engine may stream keys)."""
    result = reconcile.plan((KeyInput(SyncKey(str(i)), BASE, None, None) for i in range(3)), POLICY)
    assert len(result.keys) == 3


# --- the max-delete guard ---


def _deletes(n: int, *, remote: int = 0) -> list[KeyInput]:
    """n local-side deletes (remote row gone) plus `remote` remote-side deletes."""
    items = [KeyInput(SyncKey(f"d{i:03d}"), BASE, v(), ABSENT) for i in range(n)]
    items += [KeyInput(SyncKey(f"r{i:03d}"), BASE, ABSENT, v()) for i in range(remote)]
    return items


@pytest.mark.parametrize(
    ("share", "count", "known", "expected"),
    [
        (0.2, 100, 10, 2),
        (0.2, 0, 1000, 200),
        (0.2, 100, 1000, 100),
        (0.2, 100, 0, 1),  # never below one
        (0.0, 0, 50, 1),
        (0.29, 0, 100, 29),  # no float floor surprise
        (1.0, 3, 10, 3),
    ],
)
def test_allowed_deletes(share: float, count: int, known: int, expected: int) -> None:
    """allowed = max(1, floor(share x known)), capped by max_delete_count when it is > 0."""
    policy = Policy(max_delete_share=share, max_delete_count=count, known_rows=known)
    assert reconcile.allowed_deletes(policy) == expected


def test_guard_refuses_all_deletes_and_keeps_bases() -> None:
    """Over the limit: every delete becomes SKIP with the old base; other keys still run."""
    policy = replace(POLICY, max_delete_share=0.2, max_delete_count=100, known_rows=10)
    push = KeyInput(SyncKey("p"), BASE, v(qty="2"), v())
    result = reconcile.plan([*_deletes(2, remote=1), push], policy)
    assert result.guard is not None
    assert result.guard.refused_local_deletes == 2
    assert result.guard.refused_remote_deletes == 1
    assert result.guard.known_rows == 10
    assert "3 deletes" in result.guard.reason and "2 allowed" in result.guard.reason
    by_key = {k.key: k for k in result.keys}
    assert by_key[SyncKey("p")].action is Action.PUSH
    for key in ("d000", "d001", "r000"):
        assert by_key[SyncKey(key)] == KeyPlan(SyncKey(key), Action.SKIP, BASE)
    assert result.counts[Action.SKIP] == 3 and result.counts[Action.DELETE_LOCAL] == 0


def test_guard_lets_deletes_at_the_limit_through() -> None:
    """Exactly `allowed` deletes pass."""
    policy = replace(POLICY, max_delete_share=0.2, max_delete_count=100, known_rows=10)
    result = reconcile.plan(_deletes(2), policy)
    assert result.guard is None
    assert result.counts[Action.DELETE_LOCAL] == 2


def test_guard_counts_soft_deletes() -> None:
    """Soft deletes count as deletes (the count cap applies too)."""
    policy = replace(POLICY, deletes=DeletePolicy.SOFT, max_delete_count=1, known_rows=1000)
    result = reconcile.plan(_deletes(2), policy)
    assert result.guard is not None and result.guard.refused_local_deletes == 2
    assert "max_delete_count 1" in result.guard.reason


def test_guard_ignores_detach_and_edit_beats_delete() -> None:
    """DETACH and revived rows are not deletes."""
    policy = replace(POLICY, max_delete_share=0.0, max_delete_count=1, known_rows=10)
    items = [
        KeyInput(SyncKey("a"), BASE, ABSENT, v(qty="9")),
        KeyInput(SyncKey("b"), BASE, v(qty="9"), ABSENT),
        KeyInput(SyncKey("c"), BASE, v(), ABSENT),
    ]
    result = reconcile.plan(items, policy)
    assert result.guard is None
    assert [k.action for k in result.keys] == [Action.PULL, Action.PUSH, Action.DELETE_LOCAL]
