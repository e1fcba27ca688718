"""The invariants of TESTING.md 10.3, checked on a quiesced `Sim` against its `Model`.

    I0   no unexpected exception escapes a cycle (only the daemon's own error types)
    I1   convergence: per key, Coda = SQL (canonical values), store base = both, nothing pending
    I2   no lost update: every acknowledged write is in the final state, or a later write
         superseded it, or the conflict journal names it as the loser; LWW decisions agree with
         the true order when the injected skew is within the configured band (F10)
    I3   no duplicates: each sync key at most once in Coda, no Coda row without a key
    I4   no phantom delete: a key is absent only if deleted, and not edited after its delete
    I5   no unexpected value / no resurrection: every final value was written by someone; a
         deleted key survives only if an edit beat the delete
    I7   no echo: after quiescence a cycle sends 0 writes and changes nothing locally
    I8   idle cost: an idle incremental cycle is exactly 1 read, 0 writes
    I10  rails: no 429 from the real limiter, Retry-After honoured, the empty-listing breaker
         trips whenever a full listing comes back empty while rows are known

Lost writes that only the no-CAS race can explain (a person's edit made while an engine write
to the same field was in flight, or before the engine could have read it) are counted as F9,
not as violations. `I6` (crash atomicity) is covered by running every crash point and
checking I1-I5 afterwards.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.model import ConflictRule, Side

if TYPE_CHECKING:
    from tests.simulation.sim import Delete, Sim, TraceEntry, Violation, Write

WINDOW = 6.0

# Engine bugs the simulation found and that are fixed: each has a regression test in
# tests/simulation/test_regressions.py. Violations are still tagged with their class (so a
# reappearance names its likely cause), but a tag not in KNOWN_BUGS fails like any other.
FIXED_BUGS: dict[str, str] = {
    "partial-upsert-recreates-deleted-row": (
        "a push of only the changed columns is a keyed upsert; when a person deleted the row "
        "in Coda meanwhile, Coda inserts a row holding just those columns, and the engine then "
        "pulls the blank columns over the local row (data loss)"
    ),
    "stale-intent-replay": (
        "an intent (upsert or delete) recorded before a crash is resent after the restart "
        "without re-reading the row: a Coda edit made in between is overwritten or deleted, "
        "unjournaled"
    ),
    "stale-find-by-key": (
        "a key whose Coda row id is not known yet (an insert whose echo was not read) is looked "
        "up with a key query against the lagging read snapshot and 'not found' is trusted: an "
        "app delete drops the key without deleting the Coda row (which is pulled back later), "
        "and a full scan deletes the SQL row of a row it just inserted (phantom delete)"
    ),
    "own-delete-stale-read": (
        "after the engine's own Coda delete is confirmed the key's state is dropped; a read "
        "that still shows the row (read lag, or an edit racing the delete) re-inserts it "
        "locally, until the next full scan deletes it again"
    ),
    "empty-listing-breaker": (
        "an empty full listing trips the breaker only for delete candidates: the cycle still "
        "pushes local edits of keys it could not observe (a Coda edit of the same field is "
        "overwritten unseen and unjournaled), keeps the listing's sync token, and with no "
        "candidate (keys pending or fenced) does not trip at all"
    ),
}

# Engine bugs found but not fixed yet: each needs an xfail(strict=True) regression test in
# tests/simulation/test_regressions.py. A violation matching one is tagged, not hidden.
KNOWN_BUGS: dict[str, str] = {}


def _v(invariant: str, detail: str, tag: str | None = None) -> Violation:
    from tests.simulation.sim import Violation

    return Violation(invariant, detail, tag)


def _short(key: str) -> str:
    return key[:8] if not key.startswith("row:") else key


# --------------------------------------------------------------------------- I1 / I3


async def convergence(sim: Sim, *, partial: bool = False) -> list[Violation]:
    """I1 (and I3): both sides and the store agree.

    `partial` (after clean incremental cycles, before any full scan): only the SQL -> Coda
    direction is owed. Local inserts, edits and deletes must have reached Coda; Coda-side
    changes may still wait for a full scan (remote deletes always do; sync tokens can skip a
    change, see `incremental_remote_misses`), they are counted, not reported.
    """
    if partial:
        return await _local_ahead(sim)
    out: list[Violation] = []
    truth = sim.coda_truth()
    sim.learn_keys(truth)
    coda: dict[str, dict[str, Any]] = {key: values for key, values in truth.values() if key}
    keyless = [rid for rid, (key, _) in truth.items() if not key]
    dups: Counter[str] = Counter(key for key, _ in truth.values() if key)
    if keyless:
        out.append(_v("I3", f"Coda rows without a sync key: {sorted(keyless)[:5]}"))
    for key, n in sorted(dups.items()):
        if n > 1:
            out.append(_v("I3", f"sync key {key} is on {n} Coda rows"))
    local = await sim.local_truth()
    states = await sim.row_states()
    pending = await sim.open_mutations()
    only_coda = sorted(set(coda) - set(local))
    only_local = sorted(set(local) - set(coda))
    if only_coda:
        out.append(_v("I1", f"only in Coda: {[_short(k) for k in only_coda[:6]]}"))
    if only_local:
        out.append(_v("I1", f"only in SQL: {[_short(k) for k in only_local[:6]]}"))
    ro = sim.binding.readonly_columns
    for key in sorted(set(coda) & set(local)):
        if coda[key] != local[key]:
            diff = {
                c: (local[key].get(c), coda[key].get(c))
                for c in coda[key]
                if coda[key].get(c) != local[key].get(c)
            }
            out.append(_v("I1", f"{_short(key)} differs (sql, coda): {diff}"))
            continue
        state = states.get(key)
        if state is None:
            out.append(_v("I1", f"{_short(key)} has no row state"))
            continue
        base = {c: v for c, v in state.base.items() if c not in ro}
        want = {c: v for c, v in coda[key].items() if c not in ro}
        if base != want:
            diff = {c: (base.get(c), want.get(c)) for c in want if base.get(c) != want.get(c)}
            out.append(_v("I1", f"{_short(key)} store base differs (base, both sides): {diff}"))
    stale = sorted(
        k for k, s in states.items() if not s.detached and k not in coda and k not in local
    )
    if stale:
        out.append(_v("I1", f"row states for keys on neither side: {[_short(k) for k in stale]}"))
    if pending:
        out.append(_v("I1", f"{pending} Coda write(s) still open"))
    return out


async def _local_ahead(sim: Sim) -> list[Violation]:
    """SQL-side changes that have not reached Coda after clean incremental cycles."""
    out: list[Violation] = []
    model = sim.model
    truth = sim.coda_truth()
    sim.learn_keys(truth)
    coda = {key: values for key, values in truth.values() if key}
    local = await sim.local_truth()
    last_app: dict[tuple[str, str, Any], int] = {}
    last_other: dict[tuple[str, str, Any], int] = {}
    for w in model.writes:
        target = last_app if w.actor == "app" else last_other
        target[(model.resolve(w.ref), w.field, w.value)] = w.seq

    def local_newer(key: str, column: str, mine: Any, theirs: Any) -> bool:
        seq = last_app.get((key, column, mine))
        return seq is not None and last_other.get((key, column, theirs), -1) < seq

    app_deleted = {d.ref for d in model.deletes if d.side == "local"}
    # A keyless row a person inserted and deleted: the engine may have read it (and given it
    # a key, whose write-back then found no row) before the delete; only its state knows
    # which key that was.
    assigned = {s.coda_row_id: k for k, s in (await sim.row_states()).items() if s.coda_row_id}

    def deleted_key(ref: str) -> str:
        key = model.resolve(ref)
        return assigned.get(key[4:], key) if key.startswith("row:") else key

    person_deleted = {deleted_key(d.ref) for d in model.deletes if d.side == "remote"}
    races = Races(sim, engine_writes(sim))
    remote_misses = 0
    for key in sorted(set(coda) - set(local)):
        if key in app_deleted:
            out.append(_v("I1", f"{_short(key)} deleted in SQL but still in Coda"))
        else:
            remote_misses += 1
    for key in sorted(set(local) - set(coda)):
        if key in person_deleted:
            continue  # a Coda delete: only a full scan may conclude it
        if races.deleted_rows(key):
            out.append(_v("I1", f"only in SQL: {_short(key)}", "own-delete-stale-read"))
        else:
            out.append(_v("I1", f"only in SQL: {_short(key)} (a local insert never pushed)"))
    for key in sorted(set(coda) & set(local)):
        ahead = {
            c: (v, coda[key].get(c))
            for c, v in local[key].items()
            if v != coda[key].get(c) and local_newer(key, c, v, coda[key].get(c))
        }
        if ahead:
            recreated = key in person_deleted and all(c in (None, False) for _, c in ahead.values())
            tag = "partial-upsert-recreates-deleted-row" if recreated else None
            out.append(_v("I1", f"{_short(key)}: SQL edits not in Coda (sql, coda): {ahead}", tag))
        elif local[key] != coda[key]:
            remote_misses += 1
    sim.stats["incremental_remote_misses"] += remote_misses
    pending = await sim.open_mutations()
    if pending:
        out.append(_v("I1", f"{pending} Coda write(s) still open"))
    return out


# --------------------------------------------------------------------------- engine writes


@dataclass
class EngineWrite:
    kind: str  # upsert | key | delete
    first_sent: float
    """When the engine read what it decided this write on (its cycle's listing)."""
    applied: float | None
    keys: dict[str, set[str]]  # upsert: key -> local columns written
    row_ids: set[str]
    replay: bool = False  # sent before the cycle's listing: a stored intent, resent


def engine_writes(sim: Sim) -> list[EngineWrite]:
    """Every write the engine got accepted by Coda (202, or applied behind a lost answer)."""
    coda_to_local = {c.coda: c.local for c in sim.binding.columns}
    first: dict[str, float] = {}
    out: list[EngineWrite] = []
    listed: dict[int, float] = {}  # cycle -> when its listing (the decision's read) answered
    for e in sim.trace:
        if e.method == "GET" and e.path.endswith("/rows") and "query=" not in e.query:
            listed.setdefault(e.in_cycle, e.t)
        if e.access != "write":
            continue
        first.setdefault(e.req_hash, listed.get(e.in_cycle, e.t))
        if not e.mutation_ids:
            continue
        applied: float | None = None
        for mid in e.mutation_ids:
            m = sim.emu._mutations.get(mid)
            if m is not None and m.applied_at is not None and not m.fail:
                applied = m.applied_at
        body = e.body or {}
        keys: dict[str, set[str]] = {}
        row_ids: set[str] = set()
        if e.method == "POST":
            kind = "upsert"
            for row in body.get("rows", []):
                cells = {c["column"]: c["value"] for c in row.get("cells", [])}
                key = str(cells.get("c-SyncKey01", ""))
                # (a key twice in one batch: both rows are applied, in order)
                keys.setdefault(key, set()).update(
                    c2l for c in cells if (c2l := coda_to_local.get(c))
                )
        elif e.method == "PUT":
            kind = "key"
            row_ids.add(e.path.rsplit("/", 1)[-1])
            cells = {c["column"]: c["value"] for c in body.get("row", {}).get("cells", [])}
            if "c-SyncKey01" in cells:
                sim.model.rowkey.setdefault(e.path.rsplit("/", 1)[-1], str(cells["c-SyncKey01"]))
        else:
            kind = "delete"
            row_ids.update(str(r) for r in body.get("rowIds", []))
            if e.path.rsplit("/", 2)[-2] == "rows":
                row_ids.add(e.path.rsplit("/", 1)[-1])
        replay = e.in_cycle not in listed
        out.append(EngineWrite(kind, first[e.req_hash], applied, keys, row_ids, replay))
    return out


class Races:
    """Which person actions the engine could not have seen before overwriting them."""

    def __init__(self, sim: Sim, writes: list[EngineWrite]) -> None:
        self.sim = sim
        self.writes = writes
        self.lag = sim.max_lag + 1.0
        self.rows_of: dict[str, set[str]] = defaultdict(set)
        for row_id, key in sim.model.rowkey.items():
            self.rows_of[key].add(row_id)

    def _window(self, e: EngineWrite, t: float) -> bool:
        return e.applied is not None and e.applied >= t and e.first_sent <= t + self.lag

    def write(self, w: Write, key: str) -> bool:
        if w.side != "remote":
            return False
        rows = self.rows_of.get(key, set())
        if w.ref.startswith("row:"):
            rows = rows | {w.ref[4:]}
        for e in self.writes:
            if not self._window(e, w.t):
                continue
            if e.kind == "upsert" and w.field in e.keys.get(key, ()):
                return True
            if e.kind == "delete" and e.row_ids & rows:
                return True
        return False

    def replayed_over(self, w: Write, key: str) -> str | None:
        """The known-bug tag for a lost person write `w`, if one explains it."""
        if w.side != "remote":
            return None
        if any(
            e.fault == "empty_listing" and e.transport is None and e.t >= w.t
            for e in self.sim.trace
        ):
            return "empty-listing-breaker"
        for e in self.writes:
            if e.replay and e.kind == "upsert" and w.field in e.keys.get(key, ()):
                if e.applied is not None and e.applied >= w.t:
                    return "stale-intent-replay"
        return None

    def delete_replayed(self, key: str, after: float) -> bool:
        """A resent stored delete intent removed the row of `key` after time `after`."""
        rows = self.rows_of.get(key, set())
        return any(
            e.replay and e.kind == "delete" and e.row_ids & rows and (e.applied or 0) >= after
            for e in self.writes
        )

    def deleted_rows(self, key: str) -> bool:
        rows = self.rows_of.get(key, set())
        return any(e.kind == "delete" and e.row_ids & rows for e in self.writes)

    def delete(self, d: Delete, key: str) -> bool:
        if d.side != "remote":
            return False
        return any(
            e.kind == "upsert" and key in e.keys and self._window(e, d.t) for e in self.writes
        )


# --------------------------------------------------------------------------- I2 / I4 / I5


async def model_checks(sim: Sim, stats: Counter[str]) -> list[Violation]:
    out: list[Violation] = []
    model = sim.model
    states = await sim.row_states()
    conflicts, audits = await sim.journal()
    for s in states.values():
        if s.coda_row_id:
            model.rowkey.setdefault(s.coda_row_id, s.key)
    for a in audits:
        if a.audit.coda_row_id:
            model.rowkey.setdefault(a.audit.coda_row_id, a.audit.key)
    races = Races(sim, engine_writes(sim))
    truth = sim.coda_truth()
    sim.learn_keys(truth)
    final: dict[str, dict[str, Any]] = {k: v for k, v in truth.values() if k}
    final_rows = set(truth)
    ro = sim.binding.readonly_columns

    writes_of: dict[str, list[Write]] = defaultdict(list)
    for w in model.writes:
        if w.prev is not _missing() and w.prev == w.value:
            continue  # a write that changed nothing is no change to sync
        writes_of[model.resolve(w.ref)].append(w)
    deletes_of: dict[str, list[Delete]] = defaultdict(list)
    for d in model.deletes:
        deletes_of[model.resolve(d.ref)].append(d)
    journal: dict[tuple[str, str | None], list[Any]] = defaultdict(list)
    for rec in conflicts:
        journal[(rec.conflict.key, rec.conflict.column)].append(rec.conflict)
    by_seq = {w.seq: w for w in model.writes}

    def present(entity: str) -> bool:
        return entity[4:] in final_rows if entity.startswith("row:") else entity in final

    def loser_journaled(key: str, column: str, value: Any) -> bool:
        for c in journal.get((key, column), ()):
            loser = c.local_value if c.winner is Side.REMOTE else c.remote_value
            if loser == value:
                return True
        return False

    for entity in sorted(set(writes_of) | set(deletes_of)):
        ws = writes_of.get(entity, [])
        dels = sorted(deletes_of.get(entity, []), key=lambda d: d.seq)
        if not present(entity):
            if not dels:
                created = min((w.seq for w in ws), default=0)
                out.append(
                    _v(
                        "I4",
                        f"{_short(entity)} is gone but nobody deleted it "
                        f"(created/written at seq {created})",
                    )
                )
                continue
            last = dels[-1]
            later = [w for w in ws if w.seq > last.seq and w.actor != "seed"]
            lost = [w for w in later if not races.write(w, entity)]
            stats["lost_raced"] += len(later) - len(lost)
            if lost:
                w = lost[0]
                tag = "stale-intent-replay" if races.delete_replayed(entity, w.t) else None
                out.append(
                    _v(
                        "I4",
                        f"{_short(entity)} deleted ({last.actor}, seq {last.seq}) "
                        f"although {w.actor} edited {w.field}={w.value!r} after it "
                        f"(seq {w.seq})",
                        tag,
                    )
                )
                continue
            beaten = [by_seq[s] for s in last.unsynced if s in by_seq]
            # An edit that had already lost a conflict (journaled) is settled, not unseen: the
            # delete that follows does not have to yield to it.
            settled = [w for w in beaten if loser_journaled(entity, w.field, w.value)]
            stats["edit_lost_conflict_then_deleted"] += len(settled)
            beaten = [w for w in beaten if w not in settled]
            unexplained = [w for w in beaten if not races.write(w, entity)]
            stats["lost_raced"] += len(beaten) - len(unexplained)
            if unexplained:
                w = unexplained[0]
                out.append(
                    _v(
                        "I4",
                        f"{_short(entity)} deleted ({last.actor}, seq {last.seq}) "
                        f"over an edit the other side had not seen: {w.actor} "
                        f"{w.field}={w.value!r} (seq {w.seq}); edit must beat delete",
                    )
                )
            continue
        if entity.startswith("row:"):
            continue  # a row that never got a key, still there: nothing to compare
        values = final[entity]
        if dels:
            last = dels[-1]
            later = [w for w in ws if w.seq > last.seq and w.actor != "seed"]
            if not later:
                if journal.get((entity, None)):
                    stats["edit_beats_delete_journaled"] += 1
                elif last.unsynced:
                    stats["edit_beats_delete_unjournaled"] += 1
                elif races.delete(last, entity):
                    stats["lost_raced"] += 1
                else:
                    tag = None
                    if last.side == "local" and not races.deleted_rows(entity):
                        tag = "stale-find-by-key"
                    out.append(
                        _v(
                            "I5",
                            f"{_short(entity)} resurrected: deleted by {last.actor} "
                            f"(seq {last.seq}, t={last.t:.1f}) with no later edit, "
                            "no unseen edit on the other side, no journal entry",
                            tag,
                        )
                    )
        for column, value in values.items():
            if column in ro:
                continue
            fw = [w for w in ws if w.field == column]
            if not fw:
                continue
            allowed = {w.value for w in fw}
            if value not in allowed:
                tag = None
                if value in (None, False) and any(d.side == "remote" for d in dels):
                    tag = "partial-upsert-recreates-deleted-row"
                out.append(
                    _v(
                        "I5",
                        f"{_short(entity)}.{column}={value!r} was never written "
                        f"(writes: {sorted(map(repr, allowed))[:6]})",
                        tag,
                    )
                )
                continue
            if dels:
                continue  # revived rows: values follow the reviving side; I5 only
            stats["i2_fields_checked"] += 1
            maximal = [
                w
                for w in fw
                if not any(
                    x.seq > w.seq
                    and (x.side == w.side or (x.prev is not _missing() and x.prev == w.value))
                    for x in fw
                )
            ]
            for m in maximal:
                if m.value == value:
                    continue
                if loser_journaled(entity, column, m.value):
                    stats["superseded_by_journal"] += 1
                    continue
                if races.write(m, entity):
                    stats["lost_raced"] += 1
                    continue
                out.append(
                    _v(
                        "I2",
                        f"{_short(entity)}.{column}: {m.actor} wrote {m.value!r} "
                        f"(seq {m.seq}, t={m.t:.1f}) but the final value is "
                        f"{value!r} and no journal entry names it",
                        races.replayed_over(m, entity),
                    )
                )
    out.extend(audit_checks(sim, audits, races))
    out.extend(skew_checks(sim, conflicts, stats))
    stats["conflicts_journaled"] += sum(1 for c in conflicts if c.conflict.column is not None)
    return out


def audit_checks(sim: Sim, audits: list[Any], races: Races) -> list[Violation]:
    """I4 on the delete audit: every delete the engine made answers an actor's delete.

    End states alone miss a transient phantom delete that a later full scan repairs (the row
    is pulled back): the audit log still shows it."""
    out: list[Violation] = []
    model = sim.model
    deleted_by: dict[str, set[str]] = defaultdict(set)
    for d in model.deletes:
        deleted_by[model.resolve(d.ref)].add(d.side)
        if d.ref.startswith("row:"):
            deleted_by[d.ref].add(d.side)
    for rec in audits:
        a = rec.audit
        sides = deleted_by.get(a.key, set()) | deleted_by.get(f"row:{a.coda_row_id}", set())
        # the engine deletes on side X because the OTHER side deleted
        needed = "remote" if a.side_deleted in ("local", "soft") else "local"
        if needed in sides:
            continue
        tag = None
        if a.side_deleted == "local" and "local" in sides and races.deleted_rows(a.key):
            tag = "own-delete-stale-read"  # cleaning up a row the engine had pulled back
        elif a.side_deleted == "local" and a.coda_row_id is None:
            tag = "stale-find-by-key"  # "gone" by a key query on the lagging snapshot
        where = "SQL" if a.side_deleted in ("local", "soft") else "Coda"
        other = "Coda" if where == "SQL" else "SQL"
        out.append(
            _v(
                "I4",
                f"{_short(a.key)}: the engine deleted the {where} row although "
                f"nobody deleted it in {other} (audit at {rec.recorded_at:%H:%M:%S})",
                tag,
            )
        )
    return out


def _missing() -> object:
    from tests.simulation.sim import MISSING

    return MISSING


def skew_checks(sim: Sim, conflicts: list[Any], stats: Counter[str]) -> list[Violation]:
    """F10: LWW decisions against the true order; a violation when the skew is within band."""
    out: list[Violation] = []
    p = sim.p
    bucket = f"skew_{abs(p.skew):g}s"
    for rec in conflicts:
        c = rec.conflict
        if c.column is None or c.rule is not ConflictRule.LWW:
            continue
        if c.local_at is None or c.remote_at is None:
            continue
        true_d = (c.remote_at - c.local_at).total_seconds() + p.skew
        wrong = (c.winner is Side.REMOTE and true_d < 0) or (c.winner is Side.LOCAL and true_d > 0)
        stats[f"lww_decisions_{bucket}"] += 1
        if wrong:
            stats[f"wrong_winner_{bucket}"] += 1
            if p.skew_within_band:
                out.append(
                    _v(
                        "I2",
                        f"{_short(c.key)}.{c.column}: last-writer-wins chose "
                        f"{c.winner.value} although the other write was "
                        f"{abs(true_d):.1f}s later in true time (skew {p.skew:g}s, "
                        f"band {p.skew_band:g}s)",
                    )
                )
    return out


# --------------------------------------------------------------------------- I7 / I8


async def idle_checks(sim: Sim) -> list[Violation]:
    out: list[Violation] = []
    # past every apply delay and read lag, so deferred re-checks are done and idle means idle
    sim.clock.advance(max(sim.p.interval, sim.max_lag + 120.0))
    r = await sim.run_cycle()
    if r is None:
        return [_v("I7", "the cycle after convergence failed")]
    s = r.stats
    changed = {
        k: v
        for k, v in s.items()
        if k.startswith(("pulled_", "pushed_")) or k in ("merged", "conflicts", "keys_assigned")
    }
    changed = {k: v for k, v in changed.items() if v}
    if r.writes or changed:
        out.append(_v("I7", f"after convergence a cycle still did {r.writes} write(s), {changed}"))
    for _ in range(3):
        sim.clock.advance(sim.p.interval)
        r2 = await sim.run_cycle()
        if r2 is None:
            return [*out, _v("I8", "an idle cycle failed")]
        if r2.full_scan:
            continue
        if (r2.reads, r2.writes) != (1, 0):
            out.append(_v("I8", f"idle incremental cycle: {r2.reads} reads, {r2.writes} writes"))
        break
    return out


# --------------------------------------------------------------------------- I10


def peak_writes(trace: list[TraceEntry], *, accepted_only: bool = False) -> int:
    times = [
        e.t
        for e in trace
        if e.access == "write"
        and e.status is not None
        and (not accepted_only or 200 <= e.status < 300)
    ]
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - WINDOW:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _is_full_listing(e: TraceEntry) -> bool:
    return (
        e.method == "GET"
        and e.path.endswith("/rows")
        and "syncToken=" not in e.query
        and "pageToken=" not in e.query
        and "query=" not in e.query
    )


def rails(sim: Sim) -> list[Violation]:
    out: list[Violation] = []
    trace = sim.trace
    for i, e in enumerate(trace):
        if e.method == "POST" and e.body and not e.fault:
            sent = Counter(
                str(c["value"])
                for row in e.body.get("rows", [])
                for c in row.get("cells", [])
                if c["column"] == "c-SyncKey01"
            )
            twice = sorted(k for k, n in sent.items() if n > 1)
            if twice:
                out.append(_v("I8", f"key {_short(twice[0])} twice in one upsert at t={e.t:.1f}"))
        if e.status == 429 and e.fault is None and e.transport is None:
            out.append(_v("I10", f"Coda's rate limiter refused a {e.access} at t={e.t:.1f}"))
        if e.status == 429 and e.retry_after and e.transport is None and i + 1 < len(trace):
            nxt = trace[i + 1]
            if nxt.t - e.t < e.retry_after - 1e-6:
                out.append(
                    _v(
                        "I10",
                        f"request {nxt.method} {nxt.path} sent {nxt.t - e.t:.2f}s "
                        f"after a 429 with Retry-After {e.retry_after:g}",
                    )
                )
    for rec in sim.cycles:
        if rec.result is None or not rec.known_rows:
            continue
        hit = any(
            e.in_cycle == rec.no
            and e.fault == "empty_listing"
            and e.transport is None  # the client did see the empty page
            and _is_full_listing(e)
            for e in trace
        )
        if not hit:
            continue
        r = rec.result
        if r.guard is None or r.stats.get("pulled_deletes", 0):
            tag = "empty-listing-breaker" if not r.stats.get("pulled_deletes", 0) else None
            out.append(
                _v(
                    "I10",
                    f"cycle {rec.no}: a full listing came back empty while "
                    f"{rec.known_rows} rows are known, and the breaker did not "
                    f"trip (guard={r.guard}, local deletes "
                    f"{r.stats.get('pulled_deletes', 0)})",
                    tag,
                )
            )
        else:
            sim.stats["guard_trips_empty_listing"] += 1
    return out


# --------------------------------------------------------------------------- all


async def check_all(sim: Sim) -> list[Violation]:
    out: list[Violation] = []
    converged = not any(v.invariant in ("I1", "I3") for v in sim.violations)
    if converged:
        out.extend(await model_checks(sim, sim.stats))
        out.extend(await idle_checks(sim))
    out.extend(rails(sim))
    return out


def extra_figures(sim: Sim) -> dict[str, Any]:
    return {
        "peak_writes_6s_accepted": peak_writes(sim.trace, accepted_only=True),
        "stats": dict(sim.stats),
        "skew": sim.p.skew,
        "concurrent_edits": sim.concurrent_ops,
        "status_429_injected": sum(1 for e in sim.trace if e.status == 429 and e.fault),
        "status_429_limiter": sum(1 for e in sim.trace if e.status == 429 and not e.fault),
    }


__all__ = ["check_all", "convergence", "extra_figures", "peak_writes", "rails"]
