"""Pure three-way decisions: (base, local, remote) of every key -> a `Plan`.

PURE: no I/O, no clock, no logging; must not import httpx, sqlalchemy or anyio. Time comes in
as data (each `Version.updated_at`). `plan` is total for valid inputs (unique keys).

Per key, L = local, R = remote, B = base (values last seen equal on both sides). A side that is
None (not read this cycle) counts as unchanged: equal to B, or ABSENT when B is None. A side
*changed* iff it is a Version whose writable values (every column except
`policy.readonly_columns`) differ from B, or it is ABSENT while B is not None. A column missing
from a mapping reads as None.

    B     L          R          action                      effects
    ----  ---------  ---------  --------------------------  --------------------------------------
    None  Version    Version    ADOPT if writable equal,    per differing field: last writer wins
                                else MERGE                  (rule FIRST_SYNC, TIE_BREAK in band)
    None  Version    ABSENT     PUSH                        remote insert of all writable values
    None  ABSENT     Version    PULL                        local insert of R
    any   ABSENT     ABSENT     FORGET                      none; the key leaves the state
    set   same       same       SKIP                        none (PULL if R's readonly drifted)
    set   changed    same       PUSH                        remote: the writable fields L changed
    set   same       changed    PULL                        local: R's full row
    set   changed    changed    MERGE (ADOPT if equal)      three-way per field, LWW on conflicts
    set   ABSENT     same       DELETE_REMOTE               PROPAGATE or SOFT; IGNORE -> DETACH
    set   same       ABSENT     DELETE_LOCAL                PROPAGATE; SOFT -> SOFT_DELETE_LOCAL;
                                                            IGNORE -> DETACH
    set   ABSENT     changed    PULL + local insert         edit beats delete (journaled)
    set   changed    ABSENT     PUSH + remote insert        edit beats delete (journaled)

Three-way merge of a writable field (l, r, b): l == r -> l; l == b -> r; r == b -> l; else a
conflict: d = R.updated_at - L.updated_at; d > skew -> remote wins (LWW); -d > skew -> local
wins (LWW); otherwise `policy.tie_break` wins (TIE_BREAK). The loser's value is journaled as a
`Conflict` (both values, base, winner, rule, both timestamps).

Readonly (calculated) columns are Coda-owned: their value comes from R when R is a Version, else
from B; they never cause a push or a conflict; a local row holding other readonly values gets a
`local_write` correcting them.

Decisions (NB):
- DETACH, deletes and FORGET set `new_base` None; for DETACH the engine keeps a tombstone so the
  survivor is not synced back.
- A first push (insert) keeps L's readonly values in `new_base`: Coda computes them after the
  insert, and the next full read pulls them if they differ.
- Both sides changed to equal writable values -> ADOPT (nothing to send; the base catches up).
- Max-delete guard: if a plan would delete more than `allowed` rows, EVERY delete of the cycle
  becomes SKIP (old base kept) and `Plan.guard` says why; other keys are unaffected.
- `Plan.counts` holds every `Action`, zeros included; `Plan.keys` is sorted by key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from daemon.model import (
    ABSENT,
    Action,
    Canon,
    Conflict,
    ConflictRule,
    DeletePolicy,
    GuardReport,
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

_DELETES = (Action.DELETE_LOCAL, Action.SOFT_DELETE_LOCAL, Action.DELETE_REMOTE)
_EPSILON = 1e-9  # floor(0.29 * 100) must be 29, not 28


def plan(inputs: Iterable[KeyInput], policy: Policy) -> Plan:
    """Decide what to do for every key, then apply the max-delete guard over the whole plan."""
    bases: dict[SyncKey, Values | None] = {}
    plans: list[KeyPlan] = []
    for item in inputs:
        if item.key in bases:
            raise ValueError(f"sync key {item.key!r} appears twice in one plan")
        bases[item.key] = item.base
        plans.append(_plan_key(item, policy))
    plans.sort(key=lambda p: p.key)
    guarded, guard = _guard(plans, bases, policy)
    counts = dict.fromkeys(Action, 0)
    for p in guarded:
        counts[p.action] += 1
    return Plan(keys=tuple(guarded), guard=guard, counts=counts)


def allowed_deletes(policy: Policy) -> int:
    """How many deletes one cycle may carry: max(1, floor(share x known)), capped by the count."""
    allowed = max(1, math.floor(policy.max_delete_share * policy.known_rows + _EPSILON))
    if policy.max_delete_count > 0:
        allowed = min(allowed, policy.max_delete_count)
    return allowed


# --- one key ---


class _Key:
    """One key's inputs with unread sides resolved: `local`/`remote` are values or None (absent)."""

    __slots__ = ("base", "cols", "key", "l_at", "local", "policy", "r_at", "remote", "ro")

    def __init__(self, item: KeyInput, policy: Policy) -> None:
        self.key, self.base, self.policy = item.key, item.base, policy
        self.ro = policy.readonly_columns
        self.local, self.l_at = _resolve(item.local, item.base)
        self.remote, self.r_at = _resolve(item.remote, item.base)
        present = [v for v in (self.base, self.local, self.remote) if v is not None]
        if all(v.keys() == present[0].keys() for v in present[1:]):  # the usual case
            self.cols = sorted(present[0]) if present else []
        else:
            self.cols = sorted({f for v in present for f in v})

    def changed(self, side: Values | None) -> bool:
        if side is None:
            return self.base is not None
        if side == self.base:  # fast path (C-level); the field loop gives the same answer
            return False
        base = self.base if self.base is not None else {}
        return any(side.get(f) != base.get(f) for f in self.cols if f not in self.ro)

    def row(self, values: Values) -> dict[str, Canon]:
        return {f: values.get(f) for f in self.cols}

    def writable(self, values: Values) -> dict[str, Canon]:
        return {f: values.get(f) for f in self.cols if f not in self.ro}

    def differs(self, a: Values, b: Values) -> bool:
        return a != b and any(a.get(f) != b.get(f) for f in self.cols)

    def edit_beats_delete(self, winner: Side) -> Conflict:
        rule = ConflictRule.EDIT_BEATS_DELETE
        return Conflict(self.key, None, None, None, None, winner, rule, self.l_at, self.r_at)

    def winner(self, first_sync: bool) -> tuple[Side, ConflictRule]:
        """Last writer wins outside the clock-skew band; inside it, the tie-break side."""
        assert self.l_at is not None and self.r_at is not None
        d = (_aware(self.r_at) - _aware(self.l_at)).total_seconds()
        rule = ConflictRule.FIRST_SYNC if first_sync else ConflictRule.LWW
        if d > self.policy.clock_skew_seconds:
            return Side.REMOTE, rule
        if -d > self.policy.clock_skew_seconds:
            return Side.LOCAL, rule
        return self.policy.tie_break, ConflictRule.TIE_BREAK


def _resolve(side: SideState, base: Values | None) -> tuple[Values | None, datetime | None]:
    if isinstance(side, Version):
        return side.values, side.updated_at
    if side is ABSENT:
        return None, None
    return base, None  # not read: unchanged


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _plan_key(item: KeyInput, policy: Policy) -> KeyPlan:
    k = _Key(item, policy)
    local, remote = k.local, k.remote
    if local is None and remote is None:
        return KeyPlan(k.key, Action.FORGET, None)
    if k.base is None:
        if remote is None:
            assert local is not None
            return _push_insert(k, local, ())
        if local is None:
            return _pull(k, remote, insert=True, conflicts=())
        return _merge(k, local, remote)
    l_changed, r_changed = k.changed(local), k.changed(remote)
    if l_changed and r_changed:
        if local is None:
            assert remote is not None
            return _pull(k, remote, insert=True, conflicts=(k.edit_beats_delete(Side.REMOTE),))
        if remote is None:
            return _push_insert(k, local, (k.edit_beats_delete(Side.LOCAL),))
        return _merge(k, local, remote)
    if l_changed:
        assert remote is not None
        return _delete_remote(k) if local is None else _push(k, local, remote)
    if r_changed:
        assert local is not None
        return _delete_local(k) if remote is None else _pull(k, remote, insert=False, conflicts=())
    assert local is not None and remote is not None
    return _refresh(k, local, remote)


def _push_insert(k: _Key, local: Values, conflicts: tuple[Conflict, ...]) -> KeyPlan:
    write = k.writable(local)
    return KeyPlan(
        k.key,
        Action.PUSH,
        k.row(local),
        remote_write=write,
        remote_insert=True,
        conflicts=conflicts,
    )


def _pull(k: _Key, remote: Values, *, insert: bool, conflicts: tuple[Conflict, ...]) -> KeyPlan:
    row = k.row(remote)
    return KeyPlan(
        k.key, Action.PULL, row, local_write=row, local_insert=insert, conflicts=conflicts
    )


def _outcome(k: _Key, local: Values, remote: Values) -> dict[str, Canon]:
    """L's writable values with R's readonly ones."""
    return {f: (remote.get(f) if f in k.ro else local.get(f)) for f in k.cols}


def _push(k: _Key, local: Values, remote: Values) -> KeyPlan:
    merged = _outcome(k, local, remote)
    write = {f: v for f, v in merged.items() if f not in k.ro and v != remote.get(f)}
    local_write = merged if k.differs(merged, local) else None
    return KeyPlan(k.key, Action.PUSH, merged, local_write=local_write, remote_write=write)


def _refresh(k: _Key, local: Values, remote: Values) -> KeyPlan:
    """Nothing writable changed; R's readonly values may still have drifted from L or B."""
    assert k.base is not None
    merged = _outcome(k, k.base, remote)
    local_write = merged if k.differs(merged, local) else None
    if local_write is None and not k.differs(merged, k.base):
        return KeyPlan(k.key, Action.SKIP, k.base)
    return KeyPlan(k.key, Action.PULL, merged, local_write=local_write)


def _merge(k: _Key, local: Values, remote: Values) -> KeyPlan:
    """Three-way per field (two-way on a first sync, where every difference is a conflict)."""
    base, first_sync = k.base, k.base is None
    merged: dict[str, Canon] = {}
    conflicts: list[Conflict] = []
    decided: tuple[Side, ConflictRule] | None = None
    equal = True
    for f in k.cols:
        lv, rv = local.get(f), remote.get(f)
        if f in k.ro or lv == rv:
            merged[f] = rv
            continue
        equal = False
        bv = None if base is None else base.get(f)
        if base is not None and lv == bv:
            merged[f] = rv
        elif base is not None and rv == bv:
            merged[f] = lv
        else:
            decided = decided or k.winner(first_sync)
            side, rule = decided
            merged[f] = lv if side is Side.LOCAL else rv
            conflicts.append(Conflict(k.key, f, lv, rv, bv, side, rule, k.l_at, k.r_at))
    remote_write = {f: v for f, v in merged.items() if f not in k.ro and v != remote.get(f)}
    return KeyPlan(
        k.key,
        Action.ADOPT if equal else Action.MERGE,
        merged,
        local_write=merged if k.differs(merged, local) else None,
        remote_write=remote_write or None,
        conflicts=tuple(conflicts),
    )


def _delete_remote(k: _Key) -> KeyPlan:
    if k.policy.deletes is DeletePolicy.IGNORE:
        return KeyPlan(k.key, Action.DETACH, None)
    return KeyPlan(k.key, Action.DELETE_REMOTE, None, remote_delete=True)


def _delete_local(k: _Key) -> KeyPlan:
    if k.policy.deletes is DeletePolicy.IGNORE:
        return KeyPlan(k.key, Action.DETACH, None)
    if k.policy.deletes is DeletePolicy.SOFT:
        return KeyPlan(k.key, Action.SOFT_DELETE_LOCAL, None, soft_delete=True)
    return KeyPlan(k.key, Action.DELETE_LOCAL, None, local_delete=True)


# --- the whole plan ---


def _guard(
    plans: list[KeyPlan], bases: Mapping[SyncKey, Values | None], policy: Policy
) -> tuple[list[KeyPlan], GuardReport | None]:
    """Refuse every delete of the cycle when there are more than `allowed_deletes`."""
    local = sum(p.action in (Action.DELETE_LOCAL, Action.SOFT_DELETE_LOCAL) for p in plans)
    remote = sum(p.action is Action.DELETE_REMOTE for p in plans)
    allowed = allowed_deletes(policy)
    if local + remote <= allowed:
        return plans, None
    cap = f", max_delete_count {policy.max_delete_count}" if policy.max_delete_count > 0 else ""
    reason = (
        f"refused {local + remote} deletes ({local} local, {remote} remote): more than the "
        f"{allowed} allowed per cycle (max_delete_share {policy.max_delete_share:g} of "
        f"{policy.known_rows} known rows{cap})"
    )
    report = GuardReport(local, remote, policy.known_rows, reason)
    kept = [KeyPlan(p.key, Action.SKIP, bases[p.key]) if p.action in _DELETES else p for p in plans]
    return kept, report
