"""Writes to Coda, crash-safe: intent first, then send, then confirm by mutationStatus.

Owns the life of a Coda mutation for one binding:

    plan says "push"     record intent (same transaction as the key's local effects)
          |                 row_state.pending_mutation_id = M, pending_values = new base
          v
    send (keyed upsert / PUT / DELETE)  -- crash here: intent stays, released next cycle
          |                                 (every write we send is idempotent)
          v
    202 -> mark_sent(M, requestId)
          |
          v  (later cycles)
    mutationStatus completed -> base := pending_values, fence for stale reads, pending cleared
    404 past the grace / pending past the timeout -> lost -> released (below)
    still an intent at the next cycle (crash before 202) -> released

Released: the upsert or delete is not replayed from its payload (Coda may have changed since
it was planned); its keys return to their base, marked for recheck, and are decided again.
Key write-backs touch only the key cell and are resent as recorded.

A key with a pending mutation is "ours in flight": the engine does not reconcile it, so a
stale read can never revert it. Knows nothing of reconciliation rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from daemon import mutants, normalize
from daemon.clock import Clock
from daemon.coda.client import CodaClient
from daemon.config import Binding, Settings
from daemon.errors import CodaBadRequest, CodaNotFound, CodaTransientError, RowError
from daemon.model import SyncKey, Values
from daemon.store.db import Store
from daemon.store.repo import (
    Mutation,
    MutationKind,
    MutationState,
    QuarantineItem,
    RowState,
    StateRepo,
    values_to_json,
)

log = logging.getLogger(__name__)

CrashHook = Callable[[str], None]


async def _always_leader() -> None:
    return None


@dataclass(slots=True)
class OutgoingRow:
    """One key's remote effect, as the engine hands it over."""

    key: SyncKey
    write: Values
    """Columns to write (all writable ones on insert)."""
    insert: bool
    new_base: Values


@dataclass(slots=True)
class WriteStats:
    sent_rows: int = 0
    sent_requests: int = 0
    confirmed: int = 0
    resent: int = 0
    rejected_rows: int = 0
    deleted_rows: int = 0
    released: int = 0
    """Unacknowledged or lost writes whose keys were handed back for a fresh decision."""


@dataclass(slots=True)
class Writer:
    """Sends and confirms the Coda writes of one binding."""

    settings: Settings
    binding: Binding
    client: CodaClient
    store: Store
    repo: StateRepo
    clock: Clock
    crash: CrashHook
    stats: WriteStats = field(default_factory=WriteStats)
    leader: Callable[[], Awaitable[None]] = _always_leader
    """Raises LeadershipLost when this process lost the binding (PostgreSQL): asked before
    every Coda write batch."""

    # --------------------------------------------------------------------- payloads

    def _cells(self, key: SyncKey, write: Mapping[str, Any]) -> list[tuple[str, Any]]:
        cells: list[tuple[str, Any]] = [(self.binding.coda_key_column, str(key))]
        cells.extend(
            (spec.coda, normalize.to_coda(spec, write[spec.local]))
            for spec in self.binding.writable_columns
            if spec.local in write
        )
        return cells

    # --------------------------------------------------------------------- sending

    async def send_upserts(self, mutation_id: int, rows: Sequence[OutgoingRow]) -> None:
        """Send one keyed upsert batch whose intent is committed; mark it sent on 202."""
        self.crash("before-send")
        await self.leader()
        payload = [self._cells(r.key, r.write) for r in rows]
        try:
            result = await self.client.upsert_rows(
                self.binding.doc_id,
                self.binding.table_id,
                payload,
                key_columns=[] if mutants.on("plain_insert") else [self.binding.coda_key_column],
            )
        except CodaBadRequest as exc:
            if len(rows) > 1:
                # One bad row must not block the others: split and isolate it.
                await self._split(mutation_id, rows, exc)
                return
            await self._reject(mutation_id, rows, str(exc))
            return
        self.crash("after-202")
        async with self.store.begin() as conn:
            await self.repo.mark_sent(
                conn, mutation_id, request_id=result.request_id, at=self.clock.now()
            )
            if mutants.on("confirm_on_202"):  # planted bug (tests only): synced on 202
                await self._confirm(conn, self._mutation_stub(mutation_id, MutationKind.UPSERT))
        self.stats.sent_rows += len(rows)
        self.stats.sent_requests += 1
        self.crash("after-mark-sent")

    async def _split(self, mutation_id: int, rows: Sequence[OutgoingRow], exc: Exception) -> None:
        log.warning(
            "Coda refused a batch of %d rows (%s); sending halves to find the bad row",
            len(rows),
            exc,
            extra={"binding": self.binding.name},
        )
        half = len(rows) // 2
        now = self.clock.now()
        async with self.store.begin() as conn:
            await self.repo.mark_lost(conn, [mutation_id])
            ids = []
            for part in (rows[:half], rows[half:]):
                mid = await self.repo.create_mutation(
                    conn,
                    binding=self.binding.name,
                    kind=MutationKind.UPSERT,
                    at=now,
                    row_count=len(part),
                    payload=upsert_payload(part),
                )
                ids.append(mid)
                states = await self.repo.get_row_states(
                    conn, self.binding.name, [r.key for r in part]
                )
                await self.repo.put_row_states(
                    conn, [replace(s, pending_mutation_id=mid) for s in states.values()]
                )
        for mid, part in zip(ids, (rows[:half], rows[half:]), strict=True):
            await self.send_upserts(mid, part)

    async def _reject(self, mutation_id: int, rows: Sequence[OutgoingRow], reason: str) -> None:
        """Coda refused this row: quarantine it, drop the intent, keep the old base."""
        now = self.clock.now()
        async with self.store.begin() as conn:
            await self.repo.mark_lost(conn, [mutation_id])
            await self.repo.clear_pending(conn, self.binding.name, [mutation_id])
            for r in rows:
                await self.repo.quarantine_put(
                    conn,
                    self.binding.name,
                    [
                        QuarantineItem(
                            side="remote",
                            ref=str(r.key),
                            reason=f"Coda refused the write: {reason}",
                        )
                    ],
                    at=now,
                )
        self.stats.rejected_rows += len(rows)

    async def send_deletes(self, mutation_id: int, row_ids: Sequence[str]) -> None:
        self.crash("before-send")
        await self.leader()
        try:
            result = await self.client.delete_rows(
                self.binding.doc_id, self.binding.table_id, list(row_ids)
            )
        except CodaNotFound:
            # The table answered 404 for the rows: nothing to delete any more.
            result = None
        self.crash("after-202")
        async with self.store.begin() as conn:
            if result is None:
                await self._confirm(conn, self._mutation_stub(mutation_id, MutationKind.DELETE))
            else:
                await self.repo.mark_sent(
                    conn, mutation_id, request_id=result.request_id, at=self.clock.now()
                )
        self.stats.sent_requests += 1
        self.stats.deleted_rows += len(row_ids)

    async def send_key(self, mutation_id: int, key: SyncKey, row_id: str) -> None:
        """Write a daemon-assigned sync key into a row people created in Coda (PUT by id)."""
        self.crash("before-send")
        await self.leader()
        try:
            result = await self.client.update_row(
                self.binding.doc_id,
                self.binding.table_id,
                row_id,
                [(self.binding.coda_key_column, str(key))],
            )
        except CodaNotFound:
            async with self.store.begin() as conn:
                await self.repo.mark_lost(conn, [mutation_id])
                await self.repo.clear_pending(conn, self.binding.name, [mutation_id])
            return
        self.crash("after-202")
        async with self.store.begin() as conn:
            await self.repo.mark_sent(
                conn, mutation_id, request_id=result.request_id, at=self.clock.now()
            )
        self.stats.sent_requests += 1

    def _mutation_stub(self, mutation_id: int, kind: MutationKind) -> Mutation:
        return Mutation(
            id=mutation_id,
            binding=self.binding.name,
            kind=kind,
            state=MutationState.SENT,
            created_at=self.clock.now(),
        )

    # --------------------------------------------------------------------- confirming

    async def settle(self, *, budget: int | None = None) -> int:
        """Poll open mutations; confirm completed ones, resend intents and lost ones.

        Returns how many are still open. Costs one read per SENT mutation and one write per
        resent one; nothing when none are open (the idle cycle stays at one read).
        """
        async with self.store.connect() as conn:
            open_ = await self.repo.list_open_mutations(conn, self.binding.name)
        now = self.clock.now()
        timeout = timedelta(seconds=self.settings.coda.mutation_timeout_seconds)
        grace = timedelta(seconds=30)
        still_open = 0
        polled = 0
        keys_left = self.settings.sync.key_writeback_per_cycle or len(open_)
        for m in open_:
            if m.state is MutationState.INTENT:
                if m.kind is not MutationKind.KEY:
                    # Recorded before a crash, never acknowledged: re-decide its keys instead
                    # of resending a payload planned against an older view of Coda.
                    await self.release(m, "recorded before a restart, never acknowledged")
                    continue
                # Key write-backs (one PUT per row people created) are budgeted per cycle,
                # so a burst of new rows cannot hold the write budget for minutes.
                if keys_left <= 0:
                    still_open += 1
                    continue
                keys_left -= 1
                await self.resend(m)
                still_open += 1
                continue
            if budget is not None and polled >= budget:
                still_open += 1
                continue
            assert m.request_id is not None
            polled += 1
            try:
                status = await self.client.mutation_status(m.request_id)
            except CodaTransientError as exc:
                log.info("mutation status unavailable (%s); will ask again", exc)
                still_open += 1
                continue
            sent_at = m.sent_at or m.created_at
            age = now - sent_at
            if status is not None and status.completed:
                async with self.store.begin() as conn:
                    await self._confirm(conn, m)
                self.crash("after-confirm")
                continue
            if (status is None and age > grace and age > timeout / 4) or age > timeout:
                why = "unknown request id" if status is None else "still pending"
                log.warning(
                    "Coda has not applied write %s after %.0f s (%s); %s",
                    m.request_id,
                    age.total_seconds(),
                    why,
                    "sending it again" if m.kind is MutationKind.KEY else "re-deciding its rows",
                    extra={"binding": self.binding.name},
                )
                if m.kind is not MutationKind.KEY:
                    await self.release(m, f"not applied after {age.total_seconds():.0f} s ({why})")
                    continue
                await self.resend(m)
            still_open += 1
        return still_open

    async def release(self, m: Mutation, why: str) -> None:
        """Give up an upsert or delete that was never acknowledged, and re-decide its keys.

        Resending the stored payload would replay a decision made against the Coda of that
        moment: a person's edit since then would be overwritten (or their row deleted) with no
        journal entry. So the write is marked lost and its keys go back to their last synced
        base, marked for recheck: the cycle's listing or the recheck phase reads Coda again
        and reconciles both sides (sending the same values again if nothing changed; every
        write is idempotent, so a late arrival of the old one does no harm).
        """
        async with self.store.begin() as conn:
            await self.repo.mark_lost(conn, [m.id])
            states = await self.repo.row_states_pending_on(conn, self.binding.name, m.id)
            written = written_columns(m)
            await self.repo.put_row_states(conn, [released(s, written) for s in states])
        self.stats.released += 1
        log.info(
            "write %s (%s, %d rows) released: %s",
            m.id,
            m.kind.value,
            len(states),
            why,
            extra={"binding": self.binding.name},
        )

    async def _confirm(self, conn: Any, m: Mutation) -> None:
        now = self.clock.now()
        fence = now + timedelta(seconds=self.settings.sync.stale_window_seconds)
        await self.repo.mark_confirmed(conn, [m.id], at=now)
        states = await self.repo.row_states_pending_on(conn, self.binding.name, m.id)
        if m.kind is MutationKind.DELETE:
            # A tombstone for the stale window: a read that still shows the row (the snapshot
            # lags the delete) must not bring it back; dropped at a full scan after the fence.
            await self.repo.put_row_states(conn, [tombstone(s, fence) for s in states])
        elif m.kind is MutationKind.KEY:
            await self.repo.put_row_states(
                conn, [replace(s, pending_mutation_id=None, pending_values=None) for s in states]
            )
        else:
            confirmed = []
            for s in states:
                base = s.pending_values if s.pending_values is not None else s.base
                confirmed.append(
                    replace(
                        s,
                        base=base,
                        base_hash=normalize.row_hash(base),
                        pending_mutation_id=None,
                        pending_values=None,
                        fence_until=fence,
                        synced_at=now,
                    )
                )
            await self.repo.put_row_states(conn, confirmed)
        self.stats.confirmed += 1

    async def resend(self, m: Mutation) -> None:
        """Send a recorded key write-back again (after a crash, a loss or a timeout).

        Only key write-backs are resent: they touch nothing but the key cell. Upserts and
        deletes are released instead (`release`)."""
        assert m.kind is MutationKind.KEY, m.kind
        self.stats.resent += 1
        payload = m.payload or {}
        key, row_id = SyncKey(str(payload["key"])), str(payload["row_id"])
        # Sent before: if the key is in the row already, a mutationStatus that keeps
        # answering 404 must not make us PUT it again every few minutes, forever.
        if m.state is MutationState.SENT and await self._key_landed(key, row_id):
            async with self.store.begin() as conn:
                await self._confirm(conn, m)
            return
        await self.send_key(m.id, key, row_id)

    async def _key_landed(self, key: SyncKey, row_id: str) -> bool:
        """Does Coda's row `row_id` carry `key` in the key column already? (one read)"""
        b = self.binding
        try:
            raw = await self.client.get_row(b.doc_id, b.table_id, row_id)
        except (CodaNotFound, CodaBadRequest):
            return False
        try:
            return normalize.canon_key(raw.values.get(b.coda_key_column, "")) == key
        except RowError:
            return False

    # --------------------------------------------------------------------- intents

    async def record_upserts(
        self,
        conn: Any,
        rows: Sequence[OutgoingRow],
        states: Mapping[SyncKey, RowState],
        *,
        remote_seen: Mapping[SyncKey, tuple[str | None, datetime | None]],
    ) -> int:
        """Record one upsert intent and mark its keys pending (caller's transaction)."""
        now = self.clock.now()
        mid = await self.repo.create_mutation(
            conn,
            binding=self.binding.name,
            kind=MutationKind.UPSERT,
            at=now,
            row_count=len(rows),
            payload=upsert_payload(rows),
        )
        new_states = []
        for r in rows:
            old = states.get(r.key)
            row_id, remote_at = remote_seen.get(r.key, (None, None))
            if r.insert and old is not None:
                # A re-insert (edit beats a Coda delete): the old row is gone, and the new
                # one will have a new id, which must not look like a key moving rows.
                old = replace(old, coda_row_id=None, remote_updated_at=None)
            new_states.append(
                RowState(
                    binding=self.binding.name,
                    key=r.key,
                    base=old.base if old is not None else {},
                    base_hash=old.base_hash if old is not None else "",
                    synced_at=old.synced_at if old is not None else now,
                    coda_row_id=row_id or (old.coda_row_id if old else None),
                    remote_updated_at=remote_at or (old.remote_updated_at if old else None),
                    local_updated_at=now,
                    pending_mutation_id=mid,
                    pending_values=r.new_base,
                )
            )
        await self.repo.put_row_states(conn, new_states)
        return mid


def written_columns(m: Mutation) -> dict[str, set[str]]:
    """The columns upsert `m` was to write, by key, for the rows it updates (not inserts)."""
    if m.kind is not MutationKind.UPSERT:
        return {}
    rows = (m.payload or {}).get("rows", ())
    return {str(r["key"]): set(r.get("write") or ()) for r in rows if not r.get("insert")}


def released(state: RowState, written: Mapping[str, set[str]]) -> RowState:
    """The state of a key whose write is given up: marked for recheck, and its base.

    `written`: `written_columns` of that write. The columns it was to write go back to the
    last synced base (Coda may not hold them). The others of its new base were already on
    both sides when it was decided: Coda's values, pulled into the local row in the same
    transaction as the intent. They become the base, or a later Coda edit that puts a column
    back to its old base value would look unchanged, and the pulled value would be pushed
    over it. An insert (or a delete) keeps its base: nothing of it is known to be in Coda.
    """
    out = replace(state, pending_mutation_id=None, pending_values=None, recheck=True)
    columns = written.get(state.key)
    if columns is None or state.pending_values is None:
        return out
    base = dict(state.base)
    base.update((c, v) for c, v in state.pending_values.items() if c not in columns)
    if base == state.base:
        return out
    return replace(out, base=base, base_hash=normalize.row_hash(base))


def tombstone(state: RowState, until: datetime) -> RowState:
    """The state of a key whose Coda row we deleted: ignored on both sides until `until`."""
    return replace(
        state,
        detached=True,
        fence_until=until,
        pending_mutation_id=None,
        pending_values=None,
        recheck=False,
    )


def upsert_payload(rows: Sequence[OutgoingRow]) -> dict[str, Any]:
    return {
        "rows": [
            {
                "key": str(r.key),
                "write": values_to_json(r.write),
                "insert": r.insert,
                "base": values_to_json(r.new_base),
            }
            for r in rows
        ]
    }
