"""One sync cycle of one binding: read both sides, plan (pure), apply, record.

    settle writes     poll open mutations (0 reads when none), resend lost ones
    remote phase      incremental: GET rows?syncToken=T (1 read when idle); rows older than
                      the remote watermark - REMOTE_OVERLAP are skipped and end the paging
                      full scan (first run, every full_resync_seconds, on demand, token
                      refused): GET rows?sortBy=updatedAt, all pages; the token of the FIRST
                      page is kept, so rows edited during the scan come again next time
                      -> page by page: canonicalise, load state + local rows of those keys,
                         reconcile.plan, apply (memory stays bounded by the page size)
    local phase       rows with updated_at >= watermark - overlap (all rows on full scans)
    delete phase      local: keys in the state with no local row (one anti-join), soft-deleted
                      rows; remote: ONLY after a complete, error-free full scan, each missing
                      row confirmed gone by GET row (404) before it counts as deleted;
                      one plan, so the max-delete guard sees every delete of the cycle
    rechecks          keys whose observation was deferred (a push was in flight) re-read by id
    flush             pushes: intent recorded with the key's local effects in ONE transaction,
                      then sent as keyed upserts in batches (see `writes`)
    save              sync token + remote and local watermarks, only after everything above
                      is durable

A key with a pending write is skipped ("ours in flight"): a stale read cannot revert it.
Remote reads older than the version already incorporated (`remote_updated_at`) are ignored.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from daemon import mutants, normalize, reconcile
from daemon.clock import Clock, own_stamp
from daemon.coda.client import CodaClient
from daemon.coda.schema import RawRow
from daemon.config import Binding, Settings
from daemon.errors import (
    CodaAuthError,
    CodaBadRequest,
    CodaForbidden,
    CodaNotFound,
    LeadershipLost,
    RowError,
)
from daemon.model import (
    ABSENT,
    Action,
    Conflict,
    ConflictRule,
    GuardReport,
    KeyInput,
    KeyPlan,
    Side,
    SideState,
    SyncKey,
    Values,
    Version,
)
from daemon.store.bound import BoundTable, LocalRow, LocalRowHead
from daemon.store.db import Store
from daemon.store.fence import fenced, unfenced
from daemon.store.repo import (
    BindingState,
    DeleteAudit,
    MutationKind,
    QuarantineItem,
    RowState,
    RowStateHead,
    StateRepo,
)
from daemon.writes import OutgoingRow, Writer, tombstone

log = logging.getLogger(__name__)

LOCAL_BATCH = 1000
REMOTE_OVERLAP = timedelta(minutes=10)
"""Incremental listings re-read rows this much older than the newest `updatedAt` seen."""
_CLEAN = object()
_SLOW = object()
_UNKNOWN = object()  # Coda could not say (a stale snapshot answered 400)
RECHECK_BUDGET = 100


def _noop(_: str) -> None:
    return None


def parse_coda_time(text: str) -> datetime:
    """Coda's `createdAt`/`updatedAt` ("2026-06-23T10:58:35.359Z") as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(slots=True)
class CycleStats:
    pulled_inserts: int = 0
    pulled_updates: int = 0
    pulled_deletes: int = 0
    pushed_inserts: int = 0
    pushed_updates: int = 0
    pushed_deletes: int = 0
    merged: int = 0
    adopted: int = 0
    conflicts: int = 0
    quarantined: int = 0
    deferred: int = 0
    rechecked: int = 0
    remote_rows_read: int = 0
    local_rows_read: int = 0
    keys_assigned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class CycleResult:
    binding: str
    full_scan: bool
    started_at: datetime
    finished_at: datetime
    stats: dict[str, int]
    guard: GuardReport | None
    pending_mutations: int
    reads: int
    writes: int
    dry_run: bool = False
    planned: tuple[KeyPlan, ...] = ()

    def summary(self) -> str:
        s = self.stats
        text = (
            f"{self.binding}: {'full scan' if self.full_scan else 'incremental'}; "
            f"pulled +{s['pulled_inserts']} ~{s['pulled_updates']} -{s['pulled_deletes']}, "
            f"pushed +{s['pushed_inserts']} ~{s['pushed_updates']} -{s['pushed_deletes']}, "
            f"merged {s['merged']}, conflicts {s['conflicts']}, quarantined {s['quarantined']}, "
            f"pending writes {self.pending_mutations}; {self.reads} reads, {self.writes} writes"
        )
        if self.guard is not None:
            text += f"; GUARD: {self.guard.reason}"
        return text


@dataclass(slots=True)
class _Cycle:
    full_scan: bool
    dry_run: bool
    now: datetime
    stats: CycleStats = field(default_factory=CycleStats)
    handled: set[str] = field(default_factory=set)
    seen_row_ids: set[str] = field(default_factory=set)
    seen_keys: set[str] = field(default_factory=set)
    decided: dict[str, str] = field(default_factory=dict)
    """Key -> Coda row id of every observation this cycle's listing already decided."""
    outbox: list[tuple[KeyPlan, RowState | None, str | None, datetime | None]] = field(
        default_factory=list
    )
    deletes_out: list[tuple[SyncKey, str]] = field(default_factory=list)
    planned: list[KeyPlan] = field(default_factory=list)
    guard: GuardReport | None = None
    new_token: str | None = None
    listing_complete: bool = False
    local_high: datetime | None = None
    local_xid_mark: int | None = None
    """PostgreSQL: the transaction-id mark taken before this cycle's local read."""
    remote_high: datetime | None = None
    """Newest Coda `updatedAt` listed in this cycle (the remote watermark, once durable)."""
    quarantined: set[str] = field(default_factory=set)
    """Refs in the quarantine when the cycle started (released when they read clean)."""


@dataclass(slots=True)
class _LocalEffects:
    """What a batch of plans does to the local table and the state, collected for one write."""

    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    local_deletes: list[str] = field(default_factory=list)
    soft: list[str] = field(default_factory=list)
    audits: list[DeleteAudit] = field(default_factory=list)
    put: list[RowState] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    clear_q: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


class Engine:
    """Runs cycles for one binding. Holds no per-cycle state between cycles."""

    def __init__(
        self,
        *,
        settings: Settings,
        binding: Binding,
        client: CodaClient,
        store: Store,
        clock: Clock,
        rng: random.Random | None = None,
        repo: StateRepo | None = None,
        crash: Callable[[str], None] | None = None,
        leader_check: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.settings = settings
        self.binding = binding
        self.client = client
        self.leader_check = leader_check  # PostgreSQL: asked before each commit and Coda write
        self.store = store if leader_check is None else fenced(store, self.ensure_leader)
        self.clock = clock
        self.rng = rng or random.Random()
        self.repo = repo or StateRepo()
        self.bound = BoundTable(binding)
        self.crash = crash or _noop
        self.writer = Writer(
            settings=settings,
            binding=binding,
            client=client,
            store=self.store,
            repo=self.repo,
            clock=clock,
            crash=self.crash,
            leader=self.ensure_leader,
        )
        self._columns = binding.columns
        self._readonly = binding.readonly_columns

    async def ensure_leader(self) -> None:
        """Raise LeadershipLost unless this process still leads the binding (PostgreSQL)."""
        if self.leader_check is not None and not await self.leader_check():
            raise LeadershipLost(f"lost the leader lock of binding {self.binding.name!r}")

    # ------------------------------------------------------------------ entry point

    async def prepare(self) -> None:
        """Check (or create) the bound table; call once before the first cycle."""
        async with unfenced(self.store).begin() as conn:  # leader or standby: every instance
            await self.bound.ensure(conn)

    async def cycle(self, *, full: bool = False, dry_run: bool = False) -> CycleResult:
        started = self.clock.now()
        reads0 = self.client.stats.count("read")
        writes0 = self.client.stats.count("write")
        async with self.store.connect() as conn:
            bstate = await self.repo.get_binding_state(conn, self.binding.name)
            quarantined = await self.repo.quarantine_list(conn, self.binding.name)
        full_scan = full or self._full_due(bstate, started)
        ctx = _Cycle(full_scan=full_scan, dry_run=dry_run, now=own_stamp(started))
        ctx.quarantined = {q.item.ref for q in quarantined}
        if not dry_run:
            if full_scan:
                async with self.store.begin() as conn:
                    await self.repo.drop_expired_tombstones(conn, self.binding.name, started)
            await self.writer.settle()
        await self._remote_phase(ctx, bstate)
        self.crash("after-remote-list")
        if not await self._empty_listing_breaker(ctx):
            await self._local_phase(ctx, bstate)
            self.crash("after-local-list")
            await self._delete_phase(ctx)
            if not dry_run:
                await self._recheck_phase(ctx)
                await self._flush(ctx)
                await self._save(ctx, bstate)
        async with self.store.connect() as conn:
            pending = len(await self.repo.list_open_mutations(conn, self.binding.name))
        return CycleResult(
            binding=self.binding.name,
            full_scan=full_scan,
            started_at=started,
            finished_at=self.clock.now(),
            stats=ctx.stats.as_dict(),
            guard=ctx.guard,
            pending_mutations=pending,
            reads=self.client.stats.count("read") - reads0,
            writes=self.client.stats.count("write") - writes0,
            dry_run=dry_run,
            planned=tuple(ctx.planned),
        )

    async def _empty_listing_breaker(self, ctx: _Cycle) -> bool:
        """A full listing with no rows while rows are known: trust nothing this cycle.

        Coda (or a proxy) answering an empty page is far likelier than a person deleting
        the whole table, and the listing is this cycle's only view of Coda: deleting on it
        would wipe SQL, and pushing on it would overwrite Coda edits we could not see. So the
        cycle stops here: no local phase, no writes, no new sync token or watermark. It
        trips again every cycle until Coda lists rows (or an operator empties the state).
        """
        if not (ctx.full_scan and ctx.listing_complete) or ctx.seen_row_ids:
            return False
        if mutants.on("trust_empty_listing"):  # planted bug (tests only): believe it
            return False
        async with self.store.connect() as conn:
            known = await self.repo.count_row_states(conn, self.binding.name)
        if not known:
            return False  # a first sync of an empty table, or every key already gone
        ctx.guard = GuardReport(
            refused_local_deletes=known,
            refused_remote_deletes=0,
            known_rows=known,
            reason=f"Coda listed no rows while {known} are known: an empty listing is never "
            "taken as deletes, and nothing is pushed until Coda lists rows again",
        )
        log.error(
            "empty-listing breaker: %s", ctx.guard.reason, extra={"binding": self.binding.name}
        )
        return True

    def _full_due(self, bstate: BindingState | None, now: datetime) -> bool:
        if bstate is None or not bstate.sync_token or bstate.last_full_scan_at is None:
            return True
        age = (now - bstate.last_full_scan_at).total_seconds()
        return age >= self.settings.sync.full_resync_seconds

    # ------------------------------------------------------------------ remote phase

    async def _remote_phase(self, ctx: _Cycle, bstate: BindingState | None) -> None:
        if not ctx.full_scan:
            assert bstate is not None and bstate.sync_token
            cutoff = None
            if bstate.remote_watermark is not None:
                cutoff = bstate.remote_watermark - REMOTE_OVERLAP
            try:
                await self._list(ctx, sync_token=bstate.sync_token, cutoff=cutoff)
                return
            except (CodaAuthError, CodaForbidden):
                raise
            except (CodaBadRequest, CodaNotFound) as exc:
                # Undocumented what Coda says to an expired or foreign token: any 4xx on a
                # syncToken call means "start over with a full scan".
                log.warning(
                    "sync token refused (%s); running a full scan",
                    exc,
                    extra={"binding": self.binding.name},
                )
                ctx.full_scan = True
                ctx.handled.clear()
        await self._list(ctx, sync_token=None)

    async def _list(
        self, ctx: _Cycle, *, sync_token: str | None, cutoff: datetime | None = None
    ) -> None:
        """List rows newest first (a full scan, or what changed since `sync_token`).

        `cutoff` (incremental listings only): rows older than it were incorporated before, so
        they are skipped and paging stops at the first page that reaches them. A token whose
        watermark lags (minted on an old page, or re-delivering rows) then still costs one read.
        """
        pages = self.client.list_rows(
            self.binding.doc_id,
            self.binding.table_id,
            sync_token=sync_token,
            # Also with a token: if Coda ignores a token it does not accept, the full listing
            # it sends instead must mint an updatedAt token (a createdAt one never sees edits).
            sort_by="updatedAt",
            value_format="rich",
            limit=self.settings.coda.page_size,
        )
        first_token: str | None = None
        async with aclosing(pages):
            async for page in pages:
                if first_token is None and page.next_sync_token:
                    first_token = page.next_sync_token
                times = [parse_coda_time(r.updated_at) for r in page.items]
                if times and (ctx.remote_high is None or max(times) > ctx.remote_high):
                    ctx.remote_high = max(times)
                rows = page.items
                if cutoff is not None:
                    rows = [r for r, at in zip(page.items, times, strict=True) if at >= cutoff]
                await self._ingest_remote(ctx, rows)
                if cutoff is not None and len(rows) < len(page.items):
                    break  # newest first: every later page is older still
        ctx.new_token = first_token or sync_token
        ctx.listing_complete = True

    async def _ingest_remote(self, ctx: _Cycle, rows: Sequence[RawRow]) -> None:
        ctx.stats.remote_rows_read += len(rows)
        b = self.binding
        parsed, bad = self._parse_remote(ctx, rows)
        async with self.store.connect() as conn:
            keyless_ids = [raw.id for raw, key, _ in parsed if key is None]
            by_row = (
                await self.repo.get_row_states_by_coda_ids(conn, b.name, keyless_ids)
                if keyless_ids
                else {}
            )
            keys = {key for _, key, _ in parsed if key} | {s.key for s in by_row.values()}
            states = await self.repo.get_row_states(conn, b.name, keys)
            local_rows = await self.bound.get_rows(conn, keys)
        observations, new_keys = self._observe(parsed, by_row, states, bad)
        moved = await self._moved_rows(observations, states)
        inputs: list[KeyInput] = []
        seen: dict[SyncKey, tuple[str, datetime]] = {}
        changed: list[RowState] = []  # deferred (recheck) and echoed states
        revived: list[Conflict] = []
        for skey, (raw, values) in observations.items():
            if ctx.decided.get(skey) == raw.id:
                # Offset paging shifted under a concurrent delete: the same row on a second
                # page. Decided once already (and maybe queued); deciding again queues twice.
                continue
            ctx.decided[skey] = raw.id
            updated = parse_coda_time(raw.updated_at)
            ctx.handled.add(skey)
            state = states.get(skey)
            fate = moved.get(skey)
            if fate == "undecided":
                # Stale snapshot: the recheck phase reads the known row again (latest) each
                # cycle until Coda answers; the sync token will not list this row again.
                assert state is not None
                changed.append(replace(state, recheck=True))
                ctx.stats.deferred += 1
                continue
            if fate == "duplicate":
                assert state is not None
                reason = f"duplicate sync key {skey!r} (also row {state.coda_row_id})"
                bad.append(QuarantineItem("remote", raw.id, reason))
                continue
            seen[skey] = (raw.id, updated)
            if fate == "recreated":
                assert state is not None
                state, conflict = self._revive(state, raw.id, values, updated)
                states[skey] = state
                revived.append(conflict)
            verdict = self._judge_remote(ctx, state, values, updated)
            if verdict == "ignore":
                continue
            if verdict == "defer":
                assert state is not None
                changed.append(replace(state, recheck=True, coda_row_id=raw.id))
                ctx.stats.deferred += 1
                continue
            if verdict == "echo":
                # Our write landed: the base becomes what we wrote; the row still goes through
                # reconcile so Coda-computed (read-only) columns and local edits are handled.
                assert state is not None
                state = states[skey] = self._echo_state(state, raw.id, updated, ctx.now)
                changed.append(state)
            try:
                local = self._local_side(ctx, local_rows.get(skey), state)
            except _LocalRowBad as exc:
                # One unreadable local row must not stop the cycle: quarantine it, and re-read
                # this Coda row (recheck) once the app has fixed its row.
                bad.append(QuarantineItem("local", skey, exc.reason))
                if state is not None:
                    changed.append(replace(state, recheck=True, coda_row_id=raw.id))
                continue
            if verdict == "use" and self._unchanged(ctx, state, local, values, seen[skey]):
                continue
            base = state.base if state is not None else None
            inputs.append(
                KeyInput(key=skey, base=base, local=local, remote=Version(values, updated))
            )
        ctx.stats.quarantined += len(bad)
        ctx.stats.conflicts += len(revived)
        if (bad or changed or revived) and not ctx.dry_run:
            async with self.store.begin() as conn:
                await self.repo.quarantine_put(conn, b.name, bad, at=ctx.now)
                await self.repo.put_row_states(conn, changed)
                await self.repo.journal_conflicts(conn, b.name, revived, at=ctx.now)
        await self._apply(ctx, inputs, states, seen, new_keys=new_keys)

    async def _moved_rows(
        self,
        observations: dict[SyncKey, tuple[RawRow, dict[str, Any]]],
        states: dict[SyncKey, RowState],
    ) -> dict[SyncKey, str]:
        """Keys listed on another Coda row than the one we know, and why (one read each).

        Our partial keyed upserts write only the changed columns. If a person deleted the row
        before one landed, Coda inserted a NEW row holding just those columns and the key:
        "recreated" (the known row answers 404). If the known row still exists, the new one is
        a copy carrying our key: "duplicate". A stale snapshot: "undecided" (next cycle).
        """
        b = self.binding
        out: dict[SyncKey, str] = {}
        for skey, (raw, _) in observations.items():
            st = states.get(skey)
            if st is None or st.detached or st.coda_row_id in (None, raw.id):
                continue
            assert st.coda_row_id is not None
            try:
                await self.client.get_row(b.doc_id, b.table_id, st.coda_row_id, latest=True)
            except CodaNotFound:
                out[skey] = "recreated"
            except CodaBadRequest:
                out[skey] = "undecided"
            else:
                out[skey] = "duplicate"
        return out

    def _revive(
        self, state: RowState, row_id: str, values: Values, updated: datetime
    ) -> tuple[RowState, Conflict]:
        """A key's row was deleted in Coda and our partial upsert re-created it on `row_id`:
        the state to reconcile it against, and the edit-beats-delete entry to journal.

        In that state the re-created row's blank cells count as "not edited in Coda", so the
        local values of every column the re-creation blanked are pushed again; cells it holds
        (our write, or a person's later edit) merge as usual."""
        log.warning(
            "Coda row %s of key %s was deleted and the key re-created on row %s: "
            "restoring its other columns (edit beats delete, journaled)",
            state.coda_row_id,
            state.key,
            row_id,
            extra={"binding": self.binding.name},
        )
        base = dict(state.pending_values if state.pending_values is not None else state.base)
        for spec in self.binding.writable_columns:
            if _blank(values.get(spec.local)):
                base[spec.local] = values.get(spec.local)
        rule = ConflictRule.EDIT_BEATS_DELETE
        conflict = Conflict(state.key, None, None, None, None, Side.LOCAL, rule, None, updated)
        return self._settled(state, base, row_id, None, recheck=False), conflict

    @staticmethod
    def _unchanged(
        ctx: _Cycle,
        state: RowState | None,
        local: SideState,
        values: Values,
        seen: tuple[str, datetime],
    ) -> bool:
        """Both sides read equal to the base and the state already records this Coda version.

        Planning such a key gives SKIP (`reconcile._refresh`: nothing changed, no read-only
        drift) and `_effects_of` leaves no trace (same row id and updatedAt, nothing to release
        from the quarantine), so the hot path of a full resync skips planning it at all.
        """
        return (
            state is not None
            and state.pending_mutation_id is None
            and not state.detached
            and (state.coda_row_id, state.remote_updated_at) == seen
            and state.key not in ctx.quarantined
            and isinstance(local, Version)
            and values == state.base
            and local.values == state.base
        )

    def _parse_remote(
        self, ctx: _Cycle, rows: Sequence[RawRow]
    ) -> tuple[list[tuple[RawRow, str | None, dict[str, Any]]], list[QuarantineItem]]:
        """Canonical values and sync key of each listed row; unreadable rows -> quarantine."""
        b = self.binding
        parsed: list[tuple[RawRow, str | None, dict[str, Any]]] = []
        bad: list[QuarantineItem] = []
        for raw in rows:
            ctx.seen_row_ids.add(raw.id)
            try:
                key = normalize.canon_key(raw.values.get(b.coda_key_column, ""))
            except RowError as exc:
                bad.append(QuarantineItem("remote", raw.id, f"sync key: {exc.reason}"))
                continue
            if key:
                ctx.seen_keys.add(key)
            values, errors = normalize.canon_row_from_coda(self._columns, raw.values)
            if errors:
                reason = "; ".join(str(e) for e in errors)
                payload = {"row_id": raw.id, "name": raw.name}
                bad.append(QuarantineItem("remote", key or raw.id, reason, payload))
                if key:
                    ctx.handled.add(key)
                continue
            parsed.append((raw, key, values))
        return parsed, bad

    def _observe(
        self,
        parsed: Sequence[tuple[RawRow, str | None, dict[str, Any]]],
        by_row: dict[str, RowState],
        states: dict[SyncKey, RowState],
        bad: list[QuarantineItem],
    ) -> tuple[dict[SyncKey, tuple[RawRow, dict[str, Any]]], list[tuple[SyncKey, RawRow]]]:
        """One observation per sync key (keyless rows get their known or a new key);
        a second row with the same key is quarantined."""
        observations: dict[SyncKey, tuple[RawRow, dict[str, Any]]] = {}
        new_keys: list[tuple[SyncKey, RawRow]] = []
        for raw, key, values in parsed:
            if key is None:
                known = by_row.get(raw.id)
                if known is None:
                    key = self._new_key()
                    new_keys.append((SyncKey(key), raw))
                else:
                    key = known.key
            skey = SyncKey(key)
            if skey in observations and observations[skey][0].id != raw.id:
                state = states.get(skey)
                ours = state.coda_row_id if state else observations[skey][0].id
                dup = raw if raw.id != ours else observations[skey][0]
                reason = f"duplicate sync key {key!r} (also row {ours})"
                bad.append(QuarantineItem("remote", dup.id, reason))
                if dup is raw:
                    continue
            observations[skey] = (raw, values)
        return observations, new_keys

    def _judge_remote(
        self, ctx: _Cycle, state: RowState | None, values: Values, updated: datetime
    ) -> str:
        """What to make of one remote observation: use | ignore | defer | echo."""
        if state is None:
            return "use"
        if state.detached:
            return "ignore"
        writable_equal_pending = state.pending_values is not None and self._writable(
            values
        ) == self._writable(state.pending_values)
        if state.pending_mutation_id is not None:
            # Ours in flight. Our own write showing up = it landed; anything else waits.
            return "echo" if writable_equal_pending else "defer"
        if state.remote_updated_at is not None and updated < state.remote_updated_at:
            return "ignore"  # older than what the base already incorporates: a stale read
        if state.fence_until is not None and ctx.now < state.fence_until:
            if self._writable(values) == self._writable(state.base):
                return "echo"
            return "defer"
        return "use"

    def _echo_state(
        self, state: RowState, row_id: str, updated: datetime, now: datetime
    ) -> RowState:
        base = state.pending_values if state.pending_values is not None else state.base
        return self._settled(state, base, row_id, updated, synced_at=now)

    def _settled(
        self,
        state: RowState,
        base: Values,
        row_id: str,
        updated: datetime | None,
        **more: Any,
    ) -> RowState:
        """`state` with a new base seen on Coda row `row_id`, nothing in flight or fenced."""
        return replace(
            state,
            base=base,
            base_hash=normalize.row_hash(base, exclude=self._readonly),
            coda_row_id=row_id,
            remote_updated_at=updated,
            pending_mutation_id=None,
            pending_values=None,
            fence_until=None,
            **more,
        )

    def _writable(self, values: Values) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in self._readonly}

    def _new_key(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _local_side(self, ctx: _Cycle, local: LocalRow | None, state: RowState | None) -> SideState:
        if local is None or local.soft_deleted:
            return ABSENT
        ctx.stats.local_rows_read += 1
        values, errors = normalize.canon_row_from_sql(self._columns, local.values)
        if errors:
            raise _LocalRowBad(local.key, "; ".join(str(e) for e in errors))
        return Version(values, local.updated_at)

    # ------------------------------------------------------------------ local phase

    async def _local_phase(self, ctx: _Cycle, bstate: BindingState | None) -> None:
        since: datetime | None = None
        if not ctx.full_scan and bstate is not None and bstate.local_watermark is not None:
            since = bstate.local_watermark - timedelta(
                seconds=self.settings.sync.local_overlap_seconds
            )
            if mutants.on("no_overlap"):  # planted bug (tests only): watermark, no overlap
                since = bstate.local_watermark
        async with self.store.connect() as conn:
            # PostgreSQL: rows of every transaction at or after the saved mark (no overlap
            # guess; BoundTable.xid_marks); SQLite: updated_at >= watermark - overlap
            old_mark = bstate.local_xid_mark if bstate is not None and since is not None else None
            ctx.local_xid_mark, since_xid = await self.bound.xid_marks(conn, old_mark)
            # Heads first (key, updated_at): rows the remote phase handled, or that the state
            # settles (see _settled_local), are never read in full nor canonicalised.
            heads = self.bound.iter_row_heads(
                conn, since=since, since_xid=since_xid, batch=LOCAL_BATCH
            )
            async for batch in heads:
                await self._ingest_local(ctx, batch, conn)

    async def _ingest_local(self, ctx: _Cycle, batch: Sequence[LocalRowHead], listing: Any) -> None:
        """One batch of changed local rows (heads, read in full on `listing` when needed)."""
        for row in batch:
            if ctx.local_high is None or row.updated_at > ctx.local_high:
                ctx.local_high = row.updated_at
        todo = [r for r in batch if r.key not in ctx.handled]
        if not todo:
            return
        name = self.binding.name
        async with self.store.connect() as conn:
            heads = await self.repo.get_row_state_heads(conn, name, [r.key for r in todo])
            settled = {r.key: self._settled_local(ctx, r, heads.get(SyncKey(r.key))) for r in todo}
            slow = [key for key, verdict in settled.items() if verdict is _SLOW]
            # full states (decoded bases) only where the head does not decide
            with_state = [key for key in slow if SyncKey(key) in heads]
            states = await self.repo.get_row_states(conn, name, with_state) if with_state else {}
        # Same read transaction as the heads: on SQLite the same snapshot, so the same rows.
        rows = await self.bound.get_rows(listing, slow) if slow else {}
        inputs: list[KeyInput] = []
        deferred: list[RowState] = []
        bad: list[QuarantineItem] = []
        clean: list[str] = []
        for head in todo:
            key = SyncKey(head.key)
            verdict = settled[head.key]
            if verdict is _SLOW:
                full = rows.get(head.key)
                if full is None:
                    continue  # deleted since the heads were read (PostgreSQL): delete phase
                verdict = self._judge_local(ctx, full, states.get(key))
            else:
                ctx.handled.add(key)
            if isinstance(verdict, KeyInput):
                inputs.append(verdict)
            elif isinstance(verdict, QuarantineItem):
                bad.append(verdict)
            elif isinstance(verdict, RowState):
                deferred.append(verdict)
            elif verdict is _CLEAN and head.key in ctx.quarantined:
                clean.append(head.key)  # read clean again (a bad value set back): release
        if (bad or deferred or clean) and not ctx.dry_run:
            ctx.stats.quarantined += len(bad)
            async with self.store.begin() as conn:
                await self.repo.quarantine_put(conn, self.binding.name, bad, at=ctx.now)
                await self.repo.put_row_states(conn, deferred)
                await self.repo.quarantine_clear(conn, self.binding.name, clean, side="local")
        await self._apply(ctx, inputs, states, {})

    @staticmethod
    def _settled_local(ctx: _Cycle, row: LocalRowHead, head: RowStateHead | None) -> object:
        """`_judge_local`'s verdict when the state's scalar columns decide it: None (tombstoned,
        or a recheck is waiting) or _CLEAN (the version the daemon wrote itself); _SLOW when
        it needs the full state (no state, a full scan, a write in flight, or a row to compare
        with its base). Pure: the caller marks the key handled, as `_judge_local` does."""
        if head is None or ctx.full_scan:
            return _SLOW
        return Engine._by_state(ctx, row.updated_at, head)

    @staticmethod
    def _by_state(ctx: _Cycle, updated_at: datetime, st: RowState | RowStateHead) -> object:
        """What the state alone says of a changed local row (shared by both judges):
        None (tombstoned, or a Coda observation waits for the recheck phase), _CLEAN (the
        version the daemon wrote itself) or _SLOW (compare the row; a write in flight)."""
        if st.detached:
            return None  # tombstoned
        if st.pending_mutation_id is not None:
            return _SLOW
        if st.recheck:
            # A Coda observation of this key is waiting: the recheck phase reads Coda again
            # and merges; planning with "Coda unchanged" here would drop that edit.
            return None
        if not ctx.full_scan and st.local_updated_at == updated_at == st.synced_at:
            # The version the daemon itself wrote (a pull stamps both with the cycle's time,
            # clock.own_stamp: an instant a coarse or lagging app clock never stamps), re-read
            # only because of the overlap window. Rows the app wrote are always compared: a
            # second app edit may carry the same (coarse) updated_at.
            return _CLEAN
        return _SLOW

    def _judge_local(
        self, ctx: _Cycle, row: LocalRow, state: RowState | None
    ) -> KeyInput | QuarantineItem | RowState | object | None:
        """One changed local row: a KeyInput to plan, a QuarantineItem, a RowState to mark for
        recheck (a write of ours is in flight), _CLEAN (equal to the base) or None (not ours)."""
        if state is not None and self._unseen(ctx, state):
            return None  # missing from a complete full listing: the delete phase decides
        ctx.handled.add(SyncKey(row.key))
        if state is None and row.soft_deleted:
            return None  # soft-deleted and already gone from the sync
        if state is not None:
            if state.pending_mutation_id is not None and not state.detached:
                ctx.stats.deferred += 1
                return None if state.recheck else replace(state, recheck=True)
            verdict = self._by_state(ctx, row.updated_at, state)
            if verdict is not _SLOW:
                return verdict
        try:
            local = self._local_side(ctx, row, state)
        except _LocalRowBad as exc:
            return QuarantineItem("local", row.key, exc.reason)
        if (
            state is not None
            and isinstance(local, Version)
            and self._writable(local.values) == self._writable(state.base)
        ):
            return _CLEAN  # unchanged (our own pull, or an edit that was undone)
        if state is not None and state.coda_row_id is None and state.base:
            # Synced, but its Coda row was never read (our insert's echo is still ahead of
            # the snapshot). A partial upsert now would, if a person deleted that row,
            # re-create it with just the changed columns under an id we could not tell from
            # the original. The recheck phase reads it by key (latest) first: 1 read.
            ctx.stats.deferred += 1
            return replace(state, recheck=True)
        base = state.base if state else None
        return KeyInput(key=SyncKey(row.key), base=base, local=local, remote=None)

    # ------------------------------------------------------------------ delete phase

    async def _delete_phase(self, ctx: _Cycle) -> None:
        b = self.binding
        async with self.store.connect() as conn:
            missing = [
                k for k in await self.bound.missing_keys(conn, b.name) if k not in ctx.handled
            ]
            states = await self.repo.get_row_states(conn, b.name, missing)
            candidates = await self._remote_candidates(ctx, conn, set(missing))
        inputs, deferred = self._local_deletes(states, missing)
        remote_states = await self._remote_deletes(ctx, candidates, inputs, deferred)
        if deferred and not ctx.dry_run:
            async with self.store.begin() as conn:
                await self.repo.put_row_states(conn, deferred)
        all_states = {**states, **remote_states}
        await self._apply(ctx, list(inputs.values()), all_states, {}, deletes=True)

    def _unseen(self, ctx: _Cycle, s: RowState) -> bool:
        """A known, settled key that a complete full listing did not show: maybe deleted."""
        return (
            ctx.full_scan
            and ctx.listing_complete
            and not s.detached
            and s.pending_mutation_id is None
            # just confirmed: our insert may not be in the (lagging) read snapshot yet
            and (s.fence_until is None or s.fence_until <= ctx.now)
            and s.key not in ctx.seen_keys
            and (s.coda_row_id is None or s.coda_row_id not in ctx.seen_row_ids)
        )

    async def _remote_candidates(self, ctx: _Cycle, conn: Any, missing: set[str]) -> list[RowState]:
        if not (ctx.full_scan and ctx.listing_complete):
            return []
        out: list[RowState] = []
        async for batch in self._unlisted_states(ctx, conn):
            out.extend(
                s
                for s in batch
                if self._unseen(ctx, s) and (s.key not in ctx.handled or s.key in missing)
            )
        return out

    async def _unlisted_states(self, ctx: _Cycle, conn: Any) -> AsyncIterator[list[RowState]]:
        """Live row states (not detached) whose key and row id this cycle's listing did not
        show, in key order: the only ones `_unseen` can select. Decided on (key, row id), so
        a full scan of N listed rows does not decode N bases just to find none missing."""
        async for refs in self.repo.iter_row_refs(conn, self.binding.name, include_detached=False):
            keys = [
                key
                for key, row_id in refs
                if key not in ctx.seen_keys and (row_id is None or row_id not in ctx.seen_row_ids)
            ]
            if keys:
                states = await self.repo.get_row_states(conn, self.binding.name, keys)
                yield [states[k] for k in keys if k in states]

    @staticmethod
    def _local_deletes(
        states: dict[SyncKey, RowState], missing: Sequence[str]
    ) -> tuple[dict[SyncKey, KeyInput], list[RowState]]:
        """Keys whose local row is gone: (inputs, states to recheck after a pending write)."""
        inputs: dict[SyncKey, KeyInput] = {}
        deferred: list[RowState] = []
        for key in missing:
            gone = states.get(SyncKey(key))
            if gone is None or gone.detached:
                continue
            if gone.recheck and gone.pending_mutation_id is None:
                # A Coda observation of this key waits (a listing showed a version that could
                # not be decided yet): planning the delete with "Coda unchanged" would delete
                # an edit. The recheck phase decides it on a fresh read, this cycle.
                continue
            if gone.pending_mutation_id is not None:
                deferred.append(replace(gone, recheck=True))
                continue
            inputs[gone.key] = KeyInput(key=gone.key, base=gone.base, local=ABSENT, remote=None)
        return inputs, deferred

    async def _remote_deletes(
        self,
        ctx: _Cycle,
        candidates: Sequence[RowState],
        inputs: dict[SyncKey, KeyInput],
        deferred: list[RowState],
    ) -> dict[SyncKey, RowState]:
        """Add the keys a full listing did not show to `inputs`; returns their states.

        A candidate whose Coda row could not be read (stale snapshot), or was not read (too
        many to confirm), while its local row changed goes to `deferred` (recheck) instead:
        planned with "Coda unchanged", its edit would go out as a partial upsert, which
        re-creates a deleted row with just the edited columns.
        """
        if not candidates:
            return {}
        # (An empty listing never gets here: _empty_listing_breaker stops the cycle.)
        locals_: dict[SyncKey, SideState] = {}
        for cand in candidates:
            prev = inputs.get(cand.key)
            locals_[cand.key] = prev.local if prev else await self._read_local(ctx, cand)
        # Only candidates whose local row is unchanged would become local deletes. If more of
        # them than the plan's guard allows (the same share of known row states), they go in
        # unconfirmed and the guard refuses them all (the reads are saved); otherwise each is
        # confirmed by a 404 first. Counting every candidate instead let a few unconfirmed
        # deletes through when others (keys never inserted, local edits) inflated the count.
        deletable = {c.key for c in candidates if self._same_as_base(locals_[c.key], c)}
        many = len(deletable) > reconcile.allowed_deletes(await self._delete_policy())
        out: dict[SyncKey, RowState] = {}
        for cand in candidates:
            local = locals_[cand.key]
            remote: SideState | object
            if many:
                remote = ABSENT if cand.key in deletable else _UNKNOWN
            else:
                remote = await self._confirm_gone(cand)  # None: still there, unchanged
            if remote is _UNKNOWN:
                inputs.pop(cand.key, None)
                if cand.key not in deletable:  # an edit, a local delete: read Coda first
                    ctx.stats.deferred += 1
                    deferred.append(replace(cand, recheck=True))
                continue  # unchanged on our side: nothing to do until Coda answers
            out[cand.key] = cand
            side = cast(SideState, remote)
            inputs[cand.key] = KeyInput(key=cand.key, base=cand.base, local=local, remote=side)
        return out

    def _same_as_base(self, local: SideState, s: RowState) -> bool:
        return isinstance(local, Version) and self._writable(local.values) == self._writable(s.base)

    async def _read_local(self, ctx: _Cycle, s: RowState) -> SideState:
        async with self.store.connect() as conn:
            row = (await self.bound.get_rows(conn, [s.key])).get(s.key)
        return self._safe_local(ctx, row, s)

    async def _delete_policy(self) -> Any:
        async with self.store.connect() as conn:
            known = await self.repo.count_row_states(conn, self.binding.name)
        return self.settings.policy(self.binding, known_rows=max(known, 1))

    def _safe_local(self, ctx: _Cycle, row: LocalRow | None, s: RowState) -> SideState:
        try:
            return self._local_side(ctx, row, s)
        except _LocalRowBad:
            return None

    async def _confirm_gone(self, s: RowState) -> SideState | object:
        """A row missing from a full scan is gone only if Coda says 404 for it by id
        (ABSENT); None: still there, unchanged; _UNKNOWN: the snapshot is stale (400)."""
        if mutants.on("unconfirmed_delete"):  # planted bug (tests only): no confirming GET
            return ABSENT
        b = self.binding
        try:
            if s.coda_row_id is not None:
                # latest: a snapshot older than the row's creation would answer 404
                raw: RawRow | None = await self.client.get_row(
                    b.doc_id, b.table_id, s.coda_row_id, latest=True
                )
            else:
                raw = await self._find_by_key(s.key)
            if raw is None:
                return ABSENT
        except CodaNotFound:
            return ABSENT
        except CodaBadRequest:
            return _UNKNOWN
        values, errors = normalize.canon_row_from_coda(self._columns, raw.values)
        if errors:
            return None
        updated = parse_coda_time(raw.updated_at)
        if s.remote_updated_at is not None and updated <= s.remote_updated_at:
            return None  # still there, unchanged
        return Version(values, updated)

    async def _find_by_key(self, key: str) -> RawRow | None:
        """The Coda row holding `key`, read from the LATEST doc version.

        Used for keys whose row id we have not read yet (our insert's echo is still ahead of
        the read snapshot), so a lagging snapshot's "not found" would be a lie: with
        X-Coda-Doc-Version: latest Coda answers 400 (CodaBadRequest) instead. None is trusted.
        """
        b = self.binding
        query = f'{b.coda_key_column}:"{key}"'
        async for page in self.client.list_rows(
            b.doc_id, b.table_id, query=query, value_format="rich", latest=True
        ):
            for raw in page.items:
                return raw
        return None

    # ------------------------------------------------------------------ rechecks

    async def _recheck_phase(self, ctx: _Cycle) -> None:
        b = self.binding
        # Keys this cycle already decided and queued for Coda still carry their old recheck
        # flag until the flush records the write: deciding them again would queue them twice.
        queued = {kp.key for kp, _, _, _ in ctx.outbox} | {key for key, _ in ctx.deletes_out}
        async with self.store.connect() as conn:
            keys = [k for k in await self.repo.keys_to_recheck(conn, b.name) if k not in queued]
            states = await self.repo.get_row_states(conn, b.name, keys[:RECHECK_BUDGET])
        ready = [
            s
            for s in states.values()
            # No need to wait for the fence: the re-read below sends X-Coda-Doc-Version: latest,
            # and Coda answers 400 rather than serve a stale snapshot ([C] API-FACTS §5).
            if s.pending_mutation_id is None
        ]
        if not ready:
            return
        inputs: list[KeyInput] = []
        seen: dict[SyncKey, tuple[str, datetime]] = {}
        cleared: list[RowState] = []
        revived: list[Conflict] = []
        for s in ready:
            found = await self._recheck_one(ctx, s)
            if found is None:
                continue  # not now: stays marked for the next cycle
            item, remote_seen, revival = found
            if remote_seen is not None:
                seen[s.key] = remote_seen
            ctx.stats.rechecked += 1
            if revival is not None:  # re-created on another row (see _recheck_one)
                settled, conflict = revival
                revived.append(conflict)
                cleared.append(settled)
            else:
                cleared.append(replace(s, recheck=False, fence_until=None))
            inputs.append(item)
        ctx.stats.conflicts += len(revived)
        # The flag is cleared with the decision's own effects (_apply), never before: a crash
        # in between must leave the key marked, as the listing that saw its Coda edit is
        # behind the saved sync token. deletes=True: the guard measures deletes decided here
        # (a row gone on one side, held back from the delete phase) against every known row.
        await self._apply(
            ctx,
            inputs,
            {s.key: s for s in cleared},
            seen,
            deletes=True,
            cleared=cleared,
            journal=revived,
        )

    async def _recheck_one(
        self, ctx: _Cycle, s: RowState
    ) -> tuple[KeyInput, tuple[str, datetime] | None, tuple[RowState, Conflict] | None] | None:
        """Both sides of one deferred key, read now; None when it cannot be decided yet.

        The third item, when set, is `_revive`'s state to decide against instead of `s`, and
        its journal entry: the key's known row is gone (404) and the key lives on another row,
        which our partial upsert re-created (see `_moved_rows`; a listing found it while the
        snapshot was stale).
        """
        b = self.binding
        async with self.store.connect() as conn:
            row = (await self.bound.get_rows(conn, [s.key])).get(s.key)
        try:
            local = self._local_side(ctx, row, s)
        except _LocalRowBad:
            return None  # the app's row is unreadable (quarantined): wait until it is fixed
        gone_id: str | None = None
        try:
            if s.coda_row_id is None:
                raw: RawRow | None = await self._find_by_key(s.key)
            else:
                try:
                    raw = await self.client.get_row(
                        b.doc_id, b.table_id, s.coda_row_id, latest=True
                    )
                except CodaNotFound:
                    gone_id = s.coda_row_id  # latest says no such row: is the key elsewhere?
                    raw = await self._find_by_key(s.key)
        except CodaBadRequest:
            return None  # snapshot still stale: next cycle
        except CodaNotFound:
            raw = None
        if raw is None and s.base:
            # A synced key the latest doc version does not hold (its row answers 404, or no
            # row carries it): deleted in Coda. Edit beats delete, or the delete propagates,
            # as the plan decides.
            return KeyInput(key=s.key, base=s.base, local=local, remote=ABSENT), None, None
        if raw is None:  # never synced and not in Coda: the local side decides
            return KeyInput(key=s.key, base=s.base, local=local, remote=None), None, None
        values, errors = normalize.canon_row_from_coda(self._columns, raw.values)
        if errors:
            return None
        updated = parse_coda_time(raw.updated_at)
        remote = Version(values, updated)
        revival: tuple[RowState, Conflict] | None = None
        base = s.base
        if gone_id is not None and raw.id != gone_id:
            revival = self._revive(s, raw.id, values, updated)
            base = revival[0].base
        item = KeyInput(key=s.key, base=base, local=local, remote=remote)
        return item, (raw.id, updated), revival

    # ------------------------------------------------------------------ applying plans

    def _policy(self, ctx: _Cycle) -> Any:
        return self.settings.policy(self.binding, known_rows=max(len(ctx.seen_row_ids), 1))

    async def _apply(
        self,
        ctx: _Cycle,
        inputs: Sequence[KeyInput],
        states: dict[SyncKey, RowState] | Any,
        seen: dict[SyncKey, tuple[str, datetime]],
        *,
        new_keys: Sequence[tuple[SyncKey, RawRow]] = (),
        deletes: bool = False,
        cleared: Sequence[RowState] = (),
        journal: Sequence[Conflict] = (),
    ) -> None:
        """Plan `inputs`; apply the local effects now, queue the Coda writes for the flush.

        `cleared`: states whose recheck flag this decision settles. Written in the same
        transaction as the local effects; a key bound for Coda keeps its flag until the
        flush records its intent (which writes the state `states` holds for it).
        """
        if not inputs:
            return
        policy = await self._delete_policy() if deletes else self._policy(ctx)
        if mutants.on("no_skew_band"):  # planted bug (tests only): raw timestamps, no band
            policy = replace(policy, clock_skew_seconds=0.0)
        plan = reconcile.plan(inputs, policy)
        self.crash("after-plan")
        if plan.guard is not None:
            ctx.guard = plan.guard
            log.error(
                "delete guard tripped: %s", plan.guard.reason, extra={"binding": self.binding.name}
            )
        by_key = {i.key: i for i in inputs}
        if ctx.dry_run:
            ctx.planned.extend(k for k in plan.keys if k.action is not Action.SKIP)
            self._count(ctx, plan.keys)
            return
        local_only: list[KeyPlan] = []
        for kp in plan.keys:
            if kp.remote_write is not None:
                st = states.get(kp.key)
                row_id, at = seen.get(kp.key, (None, None))
                ctx.outbox.append((kp, st, row_id, at))
            elif kp.remote_delete:
                local_only.append(kp)
            else:
                local_only.append(kp)
        key_intents = {k for k, _ in new_keys}
        if cleared:
            to_coda = {kp.key for kp, _, _, _ in ctx.outbox}
            cleared = [s for s in cleared if s.key not in to_coda]
        async with self.store.begin() as conn:
            await self.repo.put_row_states(conn, cleared)
            await self.repo.journal_conflicts(conn, self.binding.name, journal, at=ctx.now)
            await self._apply_local(ctx, conn, local_only, states, seen, by_key, key_intents)
            for skey, raw in new_keys:
                mid = await self.repo.create_mutation(
                    conn,
                    binding=self.binding.name,
                    kind=MutationKind.KEY,
                    at=ctx.now,
                    row_count=1,
                    payload={"key": str(skey), "row_id": raw.id},
                )
                cur = await self.repo.get_row_states(conn, self.binding.name, [skey])
                if skey in cur:
                    await self.repo.put_row_states(
                        conn, [replace(cur[skey], pending_mutation_id=mid)]
                    )
                ctx.stats.keys_assigned += 1
            self.crash("inside-local-transaction")
        self.crash("after-local-commit")
        self._count(ctx, plan.keys)
        if len(ctx.outbox) >= self.settings.coda.upsert_batch_rows * 5:
            await self._flush(ctx)

    async def _apply_local(
        self,
        ctx: _Cycle,
        conn: Any,
        plans: Sequence[KeyPlan],
        states: Any,
        seen: dict[SyncKey, tuple[str, datetime]],
        by_key: dict[SyncKey, KeyInput],
        key_intents: set[SyncKey],
    ) -> None:
        b = self.binding
        fx = _LocalEffects()
        for kp in plans:
            self._effects_of(ctx, fx, kp, states.get(kp.key), by_key[kp.key], seen)
        if fx.writes:
            await self.bound.upsert_rows(conn, fx.writes, updated_at=ctx.now)
        if fx.local_deletes:
            await self.bound.delete_rows(conn, fx.local_deletes)
        if fx.soft:
            await self.bound.soft_delete_rows(conn, fx.soft, ctx.now)
        await self.repo.audit_deletes(conn, b.name, fx.audits, at=ctx.now)
        await self.repo.journal_conflicts(conn, b.name, fx.conflicts, at=ctx.now)
        await self.repo.put_row_states(conn, fx.put)
        if fx.drop:
            await self.repo.delete_row_states(conn, b.name, fx.drop)
        if fx.clear_q:
            await self.repo.quarantine_clear(conn, b.name, fx.clear_q)

    def _sql_values(self, values: Values) -> dict[str, Any]:
        return {c.local: normalize.to_sql(c, values.get(c.local)) for c in self._columns}

    def _effects_of(
        self,
        ctx: _Cycle,
        fx: _LocalEffects,
        kp: KeyPlan,
        st: RowState | None,
        inp: KeyInput,
        seen: dict[SyncKey, tuple[str, datetime]],
    ) -> None:
        """Local rows, audit entries and the row state one key's plan leaves behind."""
        fx.conflicts.extend(kp.conflicts)
        if kp.local_write is not None:
            fx.writes.append((kp.key, self._sql_values(kp.local_write)))
        old, row_id = (st.base, st.coda_row_id) if st is not None else (None, None)
        if kp.local_delete:
            fx.local_deletes.append(kp.key)
            fx.audits.append(DeleteAudit(kp.key, "local", old, row_id))
        if kp.soft_delete:
            fx.soft.append(kp.key)
            fx.audits.append(DeleteAudit(kp.key, "soft", old, row_id))
        if kp.remote_delete:
            fx.audits.append(DeleteAudit(kp.key, "remote", old, row_id))
            ctx.deletes_out.append((kp.key, row_id or ""))
            if st is not None:
                fx.put.append(replace(st, pending_values=None))
            return
        if kp.new_base is None:  # DETACH keeps a tombstone; deletes and FORGET drop the key
            if st is not None and kp.action is Action.DETACH:
                fx.put.append(replace(st, detached=True, fence_until=None))  # for good
            elif st is not None:
                fx.drop.append(kp.key)
            return
        if kp.action is Action.SKIP and st is not None and kp.local_write is None:
            row_id, at = seen.get(kp.key, (st.coda_row_id, st.remote_updated_at))
            if row_id != st.coda_row_id or (at and at != st.remote_updated_at):
                fx.put.append(replace(st, coda_row_id=row_id, remote_updated_at=at))
            if kp.key in ctx.quarantined and isinstance(inp.remote, Version):
                fx.clear_q.append(kp.key)  # read clean again (a bad cell typed back): release
            return
        fx.put.append(self._synced_state(ctx, kp, kp.new_base, st, inp, seen))
        fx.clear_q.append(kp.key)

    def _synced_state(
        self,
        ctx: _Cycle,
        kp: KeyPlan,
        base: Values,
        st: RowState | None,
        inp: KeyInput,
        seen: dict[SyncKey, tuple[str, datetime]],
    ) -> RowState:
        row_id, at = seen.get(kp.key, (None, None))
        if kp.local_write is not None:
            local_at: datetime | None = ctx.now
        elif isinstance(inp.local, Version):
            local_at = inp.local.updated_at
        else:
            local_at = st.local_updated_at if st else None
        return RowState(
            binding=self.binding.name,
            key=kp.key,
            base=base,
            base_hash=normalize.row_hash(base, exclude=self._readonly),
            synced_at=ctx.now,
            coda_row_id=row_id or (st.coda_row_id if st else None),
            remote_updated_at=at or (st.remote_updated_at if st else None),
            local_updated_at=local_at,
            recheck=False,
            fence_until=None,
        )

    def _count(self, ctx: _Cycle, plans: Iterable[KeyPlan]) -> None:
        s = ctx.stats
        for kp in plans:
            s.conflicts += len(kp.conflicts)
            if kp.action is Action.MERGE:
                s.merged += 1
            if kp.action is Action.ADOPT:
                s.adopted += 1
            if kp.local_write is not None:
                if kp.local_insert:
                    s.pulled_inserts += 1
                else:
                    s.pulled_updates += 1
            if kp.local_delete or kp.soft_delete:
                s.pulled_deletes += 1
            if kp.remote_write is not None:
                if kp.remote_insert:
                    s.pushed_inserts += 1
                else:
                    s.pushed_updates += 1
            if kp.remote_delete:
                s.pushed_deletes += 1

    # ------------------------------------------------------------------ flushing writes

    async def _flush(self, ctx: _Cycle) -> None:
        """Record intents (with the keys' local effects) and send them, batch by batch."""
        outbox, ctx.outbox = ctx.outbox, []
        size = self.settings.coda.upsert_batch_rows
        b = self.binding
        for start in range(0, len(outbox), size):
            chunk = outbox[start : start + size]
            rows = [
                OutgoingRow(kp.key, kp.remote_write or {}, kp.remote_insert, kp.new_base or {})
                for kp, _, _, _ in chunk
            ]
            async with self.store.begin() as conn:
                local_plans = [kp for kp, _, _, _ in chunk]
                writes = [
                    (kp.key, self._sql_values(kp.local_write))
                    for kp in local_plans
                    if kp.local_write is not None
                ]
                if writes:
                    await self.bound.upsert_rows(conn, writes, updated_at=ctx.now)
                await self.repo.journal_conflicts(
                    conn, b.name, [c for kp in local_plans for c in kp.conflicts], at=ctx.now
                )
                states = {kp.key: st for kp, st, _, _ in chunk if st is not None}
                remote_seen = {kp.key: (rid, at) for kp, _, rid, at in chunk}
                mid = await self.writer.record_upserts(conn, rows, states, remote_seen=remote_seen)
                await self.repo.quarantine_clear(conn, b.name, [r.key for r in rows])
            self.crash("after-intent-commit")
            await self.writer.send_upserts(mid, rows)
        deletes, ctx.deletes_out = ctx.deletes_out, []
        await self._flush_deletes(ctx, deletes)

    async def _flush_deletes(self, ctx: _Cycle, deletes: Sequence[tuple[SyncKey, str]]) -> None:
        b = self.binding
        resolved: list[tuple[SyncKey, str]] = []
        gone: list[SyncKey] = []
        undecided: list[SyncKey] = []
        for key, row_id in deletes:
            if row_id:
                resolved.append((key, row_id))
                continue
            try:
                raw = await self._find_by_key(key)
            except CodaBadRequest:
                undecided.append(key)  # the snapshot lags our insert: ask again next cycle
                continue
            if raw is None:
                gone.append(key)
            else:
                resolved.append((key, raw.id))
        if gone or undecided:
            until = ctx.now + timedelta(seconds=self.settings.sync.stale_window_seconds)
            async with self.store.begin() as conn:
                states = await self.repo.get_row_states(conn, b.name, [*gone, *undecided])
                await self.repo.put_row_states(
                    conn,
                    [
                        tombstone(s, until) if s.key in gone else replace(s, recheck=True)
                        for s in states.values()
                    ],
                )
        size = self.settings.coda.upsert_batch_rows
        for start in range(0, len(resolved), size):
            chunk = resolved[start : start + size]
            async with self.store.begin() as conn:
                mid = await self.repo.create_mutation(
                    conn,
                    binding=b.name,
                    kind=MutationKind.DELETE,
                    at=ctx.now,
                    row_count=len(chunk),
                    payload={"row_ids": [r for _, r in chunk]},
                )
                states = await self.repo.get_row_states(conn, b.name, [k for k, _ in chunk])
                await self.repo.put_row_states(
                    conn, [replace(s, pending_mutation_id=mid) for s in states.values()]
                )
            self.crash("after-intent-commit")
            await self.writer.send_deletes(mid, [r for _, r in chunk])

    # ------------------------------------------------------------------ saving

    async def _save(self, ctx: _Cycle, bstate: BindingState | None) -> None:
        if not ctx.listing_complete:
            return
        old_wm = bstate.local_watermark if bstate else None
        watermark = old_wm
        if ctx.local_high is not None and (old_wm is None or ctx.local_high > old_wm):
            watermark = ctx.local_high
        remote_wm = bstate.remote_watermark if bstate else None
        if ctx.remote_high is not None and (remote_wm is None or ctx.remote_high > remote_wm):
            remote_wm = ctx.remote_high
        token = ctx.new_token
        if ctx.full_scan and not ctx.seen_row_ids:
            # A full listing with no rows (a first sync, before any state for the breaker to
            # protect): its token's watermark would be the table's newest row, so rows an
            # empty answer hid would wait for the next full scan. No token: the next cycle
            # scans in full again, for the same one read an incremental cycle costs.
            token = None
        new = BindingState(
            binding=self.binding.name,
            updated_at=ctx.now,
            sync_token=token,
            remote_watermark=remote_wm,
            local_watermark=watermark,
            last_full_scan_at=ctx.now
            if ctx.full_scan
            else (bstate.last_full_scan_at if bstate else None),
            last_local_full_scan_at=ctx.now
            if ctx.full_scan
            else (bstate.last_local_full_scan_at if bstate else None),
            schema_fingerprint=bstate.schema_fingerprint if bstate else None,
            local_xid_mark=ctx.local_xid_mark,
        )
        self.crash("before-save-token")
        async with self.store.begin() as conn:
            await self.repo.save_binding_state(conn, new)


def _blank(value: Any) -> bool:
    """What a cell a new Coda row was not given reads back as."""
    return value is None or value is False or value == "" or value == [] or value == ()


class _LocalRowBad(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason
