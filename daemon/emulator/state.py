"""The emulated doc's state: true rows, the lagging read snapshot, queued mutations, controls.

Two copies of every base table exist. The TRUE state receives mutations when they apply and
people's UI edits at once; the VISIBLE snapshot, which every API read is served from, receives
each change `read_lag_seconds` after it was committed:

    write received --apply_delay--> true state changes --read_lag--> reads see it

Row records are immutable and shared by both copies, so the snapshot costs two dicts and two
sorted id lists. No background tasks: `tick()` (run at the start of every request and every
control call) applies whatever the injected clock says is due. No HTTP here; the control
methods (people's UI edits, inspection) come from `ui.ControlMixin`.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from daemon.clock import Clock
from daemon.emulator import seed
from daemon.emulator.config import EmulatorConfig
from daemon.emulator.faults import FaultPlan
from daemon.emulator.formulas import Evaluator, FormulaError, compile_formula
from daemon.emulator.model import ApiError, ColumnSpec, RowRecord, TableSpec
from daemon.emulator.mutations import NORMAL, Fate, Mutation, Op, apply_op
from daemon.emulator.ratelimit import RateLimiter, RequestStats
from daemon.emulator.tabledata import TableData
from daemon.emulator.ui import ControlMixin
from daemon.emulator.values import (
    Cell,
    PeopleDirectory,
    RowRef,
    ValueContext,
    is_value,
    make_renderer,
    parse_cell,
)

ROW_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@dataclass(frozen=True, slots=True)
class _Change:
    commit_at: float
    extra_lag: float
    table_id: str
    row: RowRecord | None
    deleted_id: str | None
    at_ms: int


def _blank(get: object, today: object) -> Cell:
    return None


class EmulatorState(ControlMixin):
    """The in-memory Coda doc, its clocks and its control surface."""

    def __init__(self, config: EmulatorConfig, clock: Clock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.fault_rng = random.Random(rng.getrandbits(64))
        self._config = config
        self.faults = FaultPlan()
        self.stats = RequestStats(limit=config.request_log_limit)
        self.limiter = RateLimiter()
        self._build()

    def _build(self) -> None:
        cfg = self._config
        doc, tables = seed.participation_doc(
            owner_email=cfg.user_email, owner_name=cfg.user_name, base_url=cfg.public_base_url
        )
        self.doc = doc
        self.tables: dict[str, TableSpec] = {t.id: t for t in tables}
        self.true: dict[str, TableData] = {
            t.id: TableData() for t in tables if t.id == t.base_table_id
        }
        self.visible: dict[str, TableData] = {tid: TableData() for tid in self.true}
        self.people = PeopleDirectory()
        self._changes: deque[_Change] = deque()
        self._queue: deque[Mutation] = deque()
        self._mutations: dict[str, Mutation] = {}
        self._completed: deque[Mutation] = deque()
        self._issued_ids: set[str] = set()
        self._seq = 0
        self._last_apply_at = float("-inf")
        self._commit_at = 0.0
        self._commit_ms = 0
        self.op_version = 700
        self._ctx: ValueContext | None = None
        self._evaluators: dict[tuple[str, str], Evaluator] = {}
        self._render_caches: dict[tuple[Any, ...], dict[str, Any]] = {}

    # ------------------------------------------------------------------ config and time

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    def set_config(self, **changes: Any) -> EmulatorConfig:
        """Change settings at run time (lag, delays, variants ...); returns the new config."""
        self.tick()
        self._config = dataclasses.replace(self._config, **changes)
        self.stats.limit = self._config.request_log_limit
        self._ctx = None
        self._render_caches.clear()
        return self._config

    def now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    def _ms_at(self, monotonic: float) -> int:
        return self.now_ms() - round((self.clock.monotonic() - monotonic) * 1000)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self._config.doc_timezone)

    def today(self) -> date:
        return self.clock.now().astimezone(self.tz).date()

    def tick(self) -> None:
        """Apply due mutations, publish due changes to the snapshot, expire old statuses."""
        now = self.clock.monotonic()
        while self._queue and (self._queue[0].apply_at or 0.0) <= now:
            self._apply(self._queue.popleft())
        lag = self._config.read_lag_seconds
        while (
            self._changes and self._changes[0].commit_at + lag + self._changes[0].extra_lag <= now
        ):
            self._publish(self._changes.popleft())
        retention = self._config.mutation_retention_seconds
        while self._completed and (self._completed[0].applied_at or 0.0) + retention < now:
            self._mutations.pop(self._completed.popleft().request_id, None)

    def _publish(self, change: _Change) -> None:
        data = self.visible[change.table_id]
        if change.row is not None:
            data.put(change.row)
        elif change.deleted_id is not None:
            data.delete(change.deleted_id, at_ms=change.at_ms)
        self.op_version += 1

    def is_stale(self) -> bool:
        """True while the read snapshot is behind the true state."""
        return bool(self._changes)

    # ------------------------------------------------------------------ lookups

    def find_table(self, ref: str) -> TableSpec:
        table = self.tables.get(ref) or next(
            (t for t in self.tables.values() if t.name == ref), None
        )
        if table is None:
            raise ApiError(404, f"Could not find a table or view with ID or name '{ref}'.")
        return table

    def snapshot(self, table: TableSpec) -> TableData:
        return self.visible[table.base_table_id]

    def truth(self, table: TableSpec) -> TableData:
        return self.true[table.base_table_id]

    def value_context(self) -> ValueContext:
        if self._ctx is None:
            self._ctx = ValueContext(
                tz=self.tz,
                people=self.people,
                doc_browser_link=f"{self._config.public_base_url}/d/_d{self.doc.id}",
                unknown_select=self._config.unknown_select_option,
                time_lmt_skew=self._config.time_lmt_skew,
                resolve_row=self._resolve_row,
                row_name=self._row_name,
            )
        return self._ctx

    def render_cache(self, key: tuple[Any, ...]) -> dict[str, Any]:
        """Rendered stored cells per row id for one (table, format ...) key; dropped whenever
        rendering inputs change (config, columns) and when it outgrows the table."""
        cache = self._render_caches.setdefault(key, {})
        if len(cache) > 2 * sum(len(d) for d in self.visible.values()) + 1000:
            cache.clear()
        return cache

    def display_text(self, table: TableSpec, row: RowRecord) -> str:
        """The row's `name`: its display column value as text."""
        col = table.display_column
        value = row.cells.get(col.id)
        if isinstance(value, str):
            return value
        return str(make_renderer(col, "simple", self.value_context())(value))

    def _row_name(self, ref: RowRef) -> str:
        table = self.tables.get(ref.table_id)
        row = self.visible[ref.table_id].get(ref.row_id) if ref.table_id in self.visible else None
        return self.display_text(table, row) if table and row else ref.name

    def _resolve_row(self, table_id: str, text: str) -> RowRef | None:
        table = self.tables.get(table_id)
        data = self.true.get(table_id)
        if table is None or data is None:
            return None
        row = data.get(text)
        if row is None:
            ids = data.lookup(table.display_column_id, text)
            row = min((data.rows[i] for i in ids), key=lambda r: r.seq, default=None)
        return RowRef(table_id, row.id, self.display_text(table, row)) if row else None

    def evaluator(self, table: TableSpec, col: ColumnSpec) -> Evaluator:
        key = (col.id, col.formula or "")
        found = self._evaluators.get(key)
        if found is None:
            names = {c.name: c.id for c in table.columns} | {c.id: c.id for c in table.columns}
            try:
                found = compile_formula(col.formula or "", names)
            except FormulaError:  # e.g. a referenced column was removed: Coda shows an error
                found = _blank
            self._evaluators[key] = found
        return found

    def calculated_values(self, table: TableSpec, row: RowRecord) -> dict[str, Cell]:
        today = self.today()
        return {
            col.id: self.evaluator(table, col)(row.cells.get, today)
            for col in table.columns
            if col.calculated
        }

    # ------------------------------------------------------------------ writes

    def parse_cells(
        self,
        table: TableSpec,
        cells: Iterable[tuple[str, Any]],
        *,
        disable_parsing: bool,
        ui: bool = False,
    ) -> dict[str, Cell]:
        """Resolve and parse written cells; unknown/calculated columns per config (UI: 400)."""
        cfg, ctx = self._config, self.value_context()
        out: dict[str, Cell] = {}
        for ref, raw in cells:
            col = table.column(ref)
            if col is None:
                if ui or cfg.unknown_column == "reject":
                    raise ApiError(400, f"Unknown column '{ref}' in table '{table.id}'.")
                continue
            if col.calculated:
                if ui or cfg.calculated_write == "reject":
                    raise ApiError(
                        400, f"Column '{col.id}' ({col.name}) is calculated and cannot be edited."
                    )
                continue
            if not is_value(raw):
                raise ApiError(400, f"Invalid value for column '{col.id}': {raw!r:.80}")
            value = parse_cell(col, raw, ctx, disable_parsing=disable_parsing)
            if cfg.unknown_select_option == "add_option" and col.type == "select":
                self._add_options(col, value)
            out[col.id] = value
        return out

    def _add_options(self, col: ColumnSpec, value: Cell) -> None:
        items = value if isinstance(value, tuple) else (value,)
        new = [v for v in items if isinstance(v, str) and v not in col.options]
        if new:
            self.replace_column(
                dataclasses.replace(col, options=col.options + tuple(dict.fromkeys(new)))
            )

    def replace_column(self, col: ColumnSpec) -> None:
        """Swap a column's spec in every table that has it (options, formula ...)."""
        for tid, table in self.tables.items():
            if any(c.id == col.id for c in table.columns):
                columns = tuple(col if c.id == col.id else c for c in table.columns)
                self.tables[tid] = dataclasses.replace(table, columns=columns)
        self._render_caches.clear()

    def new_row_id(self) -> str:
        while True:
            bits = self.rng.getrandbits(60)
            row_id = "i-" + "".join(ROW_ID_ALPHABET[(bits >> s) & 63] for s in range(0, 60, 6))
            if row_id not in self._issued_ids:
                self._issued_ids.add(row_id)
                return row_id

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def submit(self, op: Op, *, token_hash: str | None = None, fate: Fate = NORMAL) -> Mutation:
        """Queue an accepted write; it applies `apply_delay_seconds` later, in arrival order."""
        cfg, now = self._config, self.clock.monotonic()
        delay = cfg.apply_delay_seconds if fate.delay_seconds is None else fate.delay_seconds
        if cfg.apply_delay_jitter_seconds > 0:
            delay += self.rng.uniform(0.0, cfg.apply_delay_jitter_seconds)
        request_id = f"mutate:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
        apply_at = None if fate.never_apply else max(now + delay, self._last_apply_at)
        mutation = Mutation(request_id, now, apply_at, op, token_hash, fail=fate.fail)
        self._mutations[request_id] = mutation
        if apply_at is not None:
            self._last_apply_at = apply_at
            self._queue.append(mutation)
        return mutation

    def mutation_status(self, request_id: str) -> dict[str, Any]:
        """{"completed": bool}; 404 while not yet registered and after expiry."""
        mutation = self._mutations.get(request_id)
        now = self.clock.monotonic()
        if mutation is None or now < mutation.received_at + self._config.mutation_404_seconds:
            raise ApiError(404, f"Mutation '{request_id}' not found.")
        return {"completed": mutation.applied_at is not None}

    def _apply(self, mutation: Mutation) -> None:
        at = mutation.apply_at if mutation.apply_at is not None else self.clock.monotonic()
        mutation.changed_row_ids = [] if mutation.fail else self._apply_op(mutation.op, at)
        mutation.applied_at = at
        self._completed.append(mutation)

    def _apply_op(self, op: Op, at: float) -> list[str]:
        self._commit_at, self._commit_ms = at, self._ms_at(at)
        return apply_op(
            op,
            self.true[op.table_id],
            self,
            at_ms=self._commit_ms,
            next_seq=self._next_seq,
            bump_identical=self._config.identical_write_bumps_updated_at,
        )

    def _jitter(self) -> float:
        """Random extra visibility lag per change (FIFO: a change never overtakes another)."""
        spread = self._config.read_lag_jitter_seconds
        return self.rng.uniform(0.0, spread) if spread > 0 else 0.0

    def commit_put(self, table_id: str, row: RowRecord) -> None:
        self.true[table_id].put(row)
        self._changes.append(
            _Change(self._commit_at, self._jitter(), table_id, row, None, self._commit_ms)
        )

    def commit_delete(self, table_id: str, row_id: str) -> None:
        self.true[table_id].delete(row_id, at_ms=self._commit_ms)
        self._changes.append(
            _Change(self._commit_at, self._jitter(), table_id, None, row_id, self._commit_ms)
        )

    # ------------------------------------------------------------------ control

    def load_rows(
        self, table_id: str, rows: Iterable[tuple[int, int, Mapping[str, Cell]]]
    ) -> list[str]:
        """Seed rows straight into both states (history, not edits); returns their ids."""
        records = [
            RowRecord(
                self.new_row_id(),
                self._next_seq(),
                created_ms,
                updated_ms,
                {k: v for k, v in cells.items() if v is not None},
            )
            for created_ms, updated_ms, cells in rows
        ]
        self.true[table_id].load(records)
        self.visible[table_id].load(records)
        return [row.id for row in records]

    def flush(self, *, force: bool = False, visible: bool = False) -> int:
        """Apply what is due; `force` applies every queued mutation now; `visible` also
        publishes every committed change to the read snapshot now. Returns mutations applied."""
        before = len(self._completed)
        self.tick()
        if force:
            now = self.clock.monotonic()
            while self._queue:
                mutation = self._queue.popleft()
                mutation.apply_at = min(mutation.apply_at or now, now)
                self._apply(mutation)
            self._last_apply_at = now
        if visible:
            while self._changes:
                self._publish(self._changes.popleft())
        return len(self._completed) - before

    def reset(self) -> None:
        """Back to an empty doc: rows, queues, faults, counters and rate windows cleared."""
        self.faults = FaultPlan()
        self.stats.reset()
        self.limiter.reset()
        self._build()
