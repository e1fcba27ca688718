"""Hypothesis properties of `reconcile.plan`: the DESIGN.md invariants, proved on the pure function.

Each example is a small world: a few keys, each with a true local row, a true remote row and a
base, generated *correlated* (sides start from the base and edit a few fields over a tiny value
alphabet, so equal values and three-way coincidences are frequent). A side may be passed as
None ("not read") only when it truly equals the base, which is the engine's contract.

`_apply` models the effects: local := local_write / deleted; remote := remote_write over the
remote row / inserted (Coda computes readonly columns: modelled as the plan's new base) /
deleted.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import reconcile
from daemon.model import (
    ABSENT,
    Action,
    Canon,
    ConflictRule,
    DeletePolicy,
    KeyInput,
    KeyPlan,
    Plan,
    Policy,
    Side,
    SideState,
    SyncKey,
    Values,
    Version,
)

WRITABLE = ("a", "b", "c")
READONLY = "r"
COLS = (*WRITABLE, READONLY)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
VALUES: list[Canon] = [None, "x", ("x", "y")]  # few values: many coincidences
SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Row = dict[str, Canon]


@dataclass(frozen=True)
class Case:
    """One key: its true state on both sides and what `plan` is told."""

    item: KeyInput
    true_local: Row | None
    true_remote: Row | None


@dataclass(frozen=True)
class World:
    cases: tuple[Case, ...]
    policy: Policy


rows = st.fixed_dictionaries({c: st.sampled_from(VALUES) for c in COLS})


@st.composite
def _edited(draw: st.DrawFn, base: Row | None) -> Row:
    if base is None:
        return draw(rows)
    row = dict(base)
    for col in draw(st.lists(st.sampled_from(COLS), min_size=1, max_size=2)):
        row[col] = draw(st.sampled_from(VALUES))
    return row


@st.composite
def _drifted(draw: st.DrawFn, base: Row | None) -> Row:
    """Only the readonly column moved (a formula recalculated in Coda)."""
    row = dict(base) if base is not None else draw(rows)
    row[READONLY] = draw(st.sampled_from([v for v in VALUES if v != row[READONLY]]))
    return row


@st.composite
def _side(
    draw: st.DrawFn, base: Row | None, shared: Row, absent: int
) -> tuple[Row | None, SideState]:
    """One side: as the base, the edit both sides share, its own edit, absent, or not read."""
    kind = draw(st.sampled_from(["same", "shared", "edit", "unread"] + ["absent"] * absent))
    at = T0 + timedelta(seconds=draw(st.integers(0, 20)))
    if kind == "absent":
        return None, ABSENT
    if kind == "unread":
        return (None if base is None else dict(base)), None
    if kind == "shared":
        row = dict(shared)
    else:
        row = dict(base) if kind == "same" and base is not None else draw(_edited(base))
    return row, Version(row, at)


@st.composite
def worlds(draw: st.DrawFn, *, absent: int = 1) -> World:
    """A few keys and a policy; `absent` weights deleted sides (many deletes for the guard)."""
    n = draw(st.integers(1, 8))
    cases = []
    for i in range(n):
        base = draw(st.none() | rows)
        shared = draw(_edited(base) | _drifted(base))
        true_local, local = draw(_side(base, shared, absent))
        true_remote, remote = draw(_side(base, shared, absent))
        item = KeyInput(SyncKey(f"k{i}"), base, local, remote)
        cases.append(Case(item, true_local, true_remote))
    policy = Policy(
        readonly_columns=frozenset({READONLY}),
        deletes=draw(st.sampled_from(DeletePolicy)),
        clock_skew_seconds=draw(st.sampled_from([0.0, 2.0, 5.0])),
        tie_break=draw(st.sampled_from(Side)),
        max_delete_share=draw(st.sampled_from([0.0, 0.2, 0.5, 1.0])),
        max_delete_count=draw(st.sampled_from([0, 1, 3, 100])),
        known_rows=draw(st.integers(0, 12)),
    )
    return World(tuple(cases), policy)


def _row(values: Mapping[str, Canon]) -> Row:
    return {c: values.get(c) for c in COLS}


def _writable(values: Mapping[str, Canon]) -> Row:
    return {c: values.get(c) for c in WRITABLE}


def _apply(kp: KeyPlan, case: Case) -> tuple[Row | None, Row | None]:
    """The effects of one key's plan on the true state of both sides."""
    local, remote = case.true_local, case.true_remote
    if kp.local_delete or kp.soft_delete:
        local = None  # a soft-deleted row no longer takes part in the sync
    elif kp.local_write is not None:
        assert kp.local_insert == (local is None)
        local = _row(kp.local_write)
    if kp.remote_delete:
        remote = None
    elif kp.remote_write is not None:
        assert kp.remote_insert == (remote is None)
        assert READONLY not in kp.remote_write
        if kp.remote_insert:
            assert kp.new_base is not None
            remote = {**_row(kp.remote_write), READONLY: kp.new_base.get(READONLY)}
        else:
            assert remote is not None
            remote = {**remote, **kp.remote_write}
    return local, remote


def _by_key(world: World) -> dict[SyncKey, Case]:
    return {c.item.key: c for c in world.cases}


def _plan(world: World) -> Plan:
    return reconcile.plan([c.item for c in world.cases], world.policy)


DELETES = (Action.DELETE_LOCAL, Action.SOFT_DELETE_LOCAL, Action.DELETE_REMOTE)


def _wanted_deletes(world: World) -> set[SyncKey]:
    """The keys the plan would delete if the guard allowed everything."""
    unguarded = reconcile.plan(
        [c.item for c in world.cases],
        replace(world.policy, known_rows=10**9, max_delete_count=0, max_delete_share=1.0),
    )
    assert unguarded.guard is None
    return {k.key for k in unguarded.keys if k.action in DELETES}


def _guarded(world: World, plan: Plan) -> set[SyncKey]:
    return _wanted_deletes(world) if plan.guard is not None else set()


def _resolved(case: Case, side: SideState) -> Values | None:
    if isinstance(side, Version):
        return side.values
    return None if side is ABSENT else case.item.base


@SETTINGS
@given(worlds())
def test_convergence(world: World) -> None:
    """(a) After applying the plan, both sides hold exactly `new_base` (or are both gone)."""
    plan = _plan(world)
    cases, guarded = _by_key(world), _guarded(world, plan)
    for kp in plan.keys:
        case = cases[kp.key]
        local, remote = _apply(kp, case)
        if kp.key in guarded:
            assert kp.action is Action.SKIP and kp.new_base == case.item.base
        if kp.action is Action.DETACH or kp.key in guarded:
            assert (local, remote) == (case.true_local, case.true_remote)
        elif kp.new_base is None:
            assert local is None and remote is None, kp
        else:
            assert local is not None and remote is not None, kp
            assert _row(local) == _row(remote) == _row(kp.new_base), kp


@SETTINGS
@given(worlds())
def test_idempotence(world: World) -> None:
    """(b) Planning again over the applied state gives only SKIP/FORGET, no writes or conflicts."""
    plan = _plan(world)
    cases, guarded = _by_key(world), _guarded(world, plan)
    again: list[KeyInput] = []
    later = T0 + timedelta(hours=1)
    for kp in plan.keys:
        case = cases[kp.key]
        if kp.action is Action.DETACH or kp.key in guarded:
            continue
        local, remote = _apply(kp, case)
        sides = [ABSENT if s is None else Version(s, later) for s in (local, remote)]
        again.append(KeyInput(kp.key, kp.new_base, sides[0], sides[1]))
    replan = reconcile.plan(again, world.policy)
    for kp in replan.keys:
        assert kp.action in (Action.SKIP, Action.FORGET), kp
        assert kp.local_write is None and kp.remote_write is None and not kp.conflicts
    assert replan.guard is None


@SETTINGS
@given(worlds())
def test_no_lost_one_sided_change(world: World) -> None:
    """(c) A field changed on one side only ends up with that side's value."""
    plan = _plan(world)
    cases = _by_key(world)
    for kp in plan.keys:
        case = cases[kp.key]
        base = case.item.base
        local, remote = _resolved(case, case.item.local), _resolved(case, case.item.remote)
        if base is None or local is None or remote is None:
            continue
        assert kp.new_base is not None  # both sides exist: nothing is deleted
        for f in WRITABLE:
            lv, rv, bv = local.get(f), remote.get(f), base.get(f)
            if lv != bv and rv == bv:
                assert kp.new_base[f] == lv, (f, kp)
            if rv != bv and lv == bv:
                assert kp.new_base[f] == rv, (f, kp)


@SETTINGS
@given(worlds())
def test_every_overwritten_value_is_journaled(world: World) -> None:
    """(d) Each concurrently changed field has exactly one Conflict with both values."""
    plan = _plan(world)
    cases = _by_key(world)
    for kp in plan.keys:
        case = cases[kp.key]
        base = case.item.base
        local, remote = case.item.local, case.item.remote
        named = [c.column for c in kp.conflicts]
        assert READONLY not in named
        if isinstance(local, Version) and isinstance(remote, Version):
            expected = []
            for f in WRITABLE:
                lv, rv = local.values.get(f), remote.values.get(f)
                bv = None if base is None else base.get(f)
                if lv != rv and (base is None or (lv != bv and rv != bv)):
                    expected.append(f)
                    (conflict,) = [c for c in kp.conflicts if c.column == f]
                    assert (conflict.local_value, conflict.remote_value) == (lv, rv)
                    assert conflict.base_value == bv
                    rules = {ConflictRule.TIE_BREAK}
                    rules.add(ConflictRule.FIRST_SYNC if base is None else ConflictRule.LWW)
                    assert conflict.rule in rules
                    winner = lv if conflict.winner is Side.LOCAL else rv
                    assert kp.new_base is not None and kp.new_base[f] == winner
            assert named == expected
            if _writable(local.values) == _writable(remote.values):
                assert kp.action is not Action.MERGE and not kp.remote_write
        elif base is not None and (local is ABSENT) != (remote is ABSENT):
            survivor = remote if local is ABSENT else local
            edited = isinstance(survivor, Version) and _writable(survivor.values) != _writable(base)
            if edited:
                (conflict,) = kp.conflicts
                assert conflict.column is None
                assert conflict.rule is ConflictRule.EDIT_BEATS_DELETE
                assert conflict.winner is (Side.REMOTE if local is ABSENT else Side.LOCAL)
                assert kp.action in (Action.PUSH, Action.PULL)
            else:
                assert named == []
        else:
            assert named == []


@SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(world: World, rnd: random.Random) -> None:
    """(e) A shuffled input gives the same plan, sorted by key."""
    items = [c.item for c in world.cases]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    first, second = reconcile.plan(items, world.policy), reconcile.plan(shuffled, world.policy)
    assert first == second
    assert [k.key for k in first.keys] == sorted(k.key for k in first.keys)
    assert sum(first.counts.values()) == len(items)


@SETTINGS
@given(worlds())
def test_no_key_deleted_and_written_on_one_side(world: World) -> None:
    """(f) Deleting and writing the same side of one key never happen together."""
    for kp in _plan(world).keys:
        assert not ((kp.local_delete or kp.soft_delete) and kp.local_write is not None)
        assert not (kp.remote_delete and kp.remote_write is not None)
        assert not (kp.local_delete and kp.soft_delete)


@SETTINGS
@given(worlds(absent=4))
def test_guard_never_lets_more_than_allowed_through(world: World) -> None:
    """(g) At most `allowed` deletes pass; when the guard trips, none do and bases are kept."""
    plan = _plan(world)
    allowed = reconcile.allowed_deletes(world.policy)
    deletes = [k for k in plan.keys if k.local_delete or k.soft_delete or k.remote_delete]
    assert len(deletes) <= allowed
    wanted = len(_wanted_deletes(world))
    if wanted > allowed:
        assert plan.guard is not None and deletes == []
        refused = plan.guard.refused_local_deletes + plan.guard.refused_remote_deletes
        assert refused == wanted
    else:
        assert plan.guard is None and len(deletes) == wanted


@SETTINGS
@given(worlds())
def test_last_writer_wins_outside_the_skew_band(world: World) -> None:
    """(h) LWW picks the later writer when the gap exceeds the skew, else the tie-break side."""
    skew = world.policy.clock_skew_seconds
    for conflict in _plan(world).conflicts:
        if conflict.rule is ConflictRule.EDIT_BEATS_DELETE:
            continue
        assert conflict.local_at is not None and conflict.remote_at is not None
        d = (conflict.remote_at - conflict.local_at).total_seconds()
        if conflict.rule is ConflictRule.TIE_BREAK:
            assert abs(d) <= skew and conflict.winner is world.policy.tie_break
        else:
            assert abs(d) > skew
            assert conflict.winner is (Side.REMOTE if d > 0 else Side.LOCAL)
