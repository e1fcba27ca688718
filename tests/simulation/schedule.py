"""Random schedules for the deterministic simulation: one seed -> (parameters, steps).

A schedule is plain data (frozen dataclasses with readable reprs), so a failing seed prints as a
list of steps that can be pasted into a regression test. Steps never name rows by id: they hold
a `pick` index resolved when the step runs against the sorted keys of the side it acts on, so
dropping steps while shrinking never makes a later step invalid.

Everything random comes from `random.Random(seed)`; the same seed always gives the same
schedule.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

CRASH_POINTS: tuple[str, ...] = (
    "after-remote-list",
    "after-local-list",
    "after-plan",
    "inside-local-transaction",
    "after-local-commit",
    "after-intent-commit",
    "before-send",
    "after-202",
    "after-mark-sent",
    "after-confirm",
    "before-save-token",
)

# local column -> Coda column id, for the columns people and the app edit
EDITABLE: dict[str, str] = {
    "comment": "c-Comment01",
    "activity": "c-Activity1",
    "hours": "c-Hours0001",
    "role": "c-Role00001",
    "confirmed": "c-Confirm01",
    "activity_date": "c-ActDate01",
    "tags": "c-Tags00001",
}
ROLES = ("Участник", "Спикер", "Организатор", "Волонтёр")
TAGS = ("обучение", "конференция", "митап", "спорт")
PEOPLE = (
    "ivan.petrov@example.com",
    "maria.smirnova@example.com",
    "olga.popova@example.com",
    "john.smith@example.com",
)

# Emulator faults (FaultRule kwargs) the generator draws from, by class label.
FAULTS: dict[str, dict[str, Any]] = {
    "http_500": {"kind": "http_error", "status": 500},
    "http_502": {"kind": "http_error", "status": 502},
    "http_503": {"kind": "http_error", "status": 503},
    "html_504": {"kind": "html_error", "status": 504},
    "rate_limit": {"kind": "rate_limit"},
    "rate_limit_retry_after": {"kind": "rate_limit", "retry_after_seconds": 3.0},
    "slow": {"kind": "delay", "delay_seconds": 5.0},
    "malformed_json": {"kind": "malformed_json"},
    "lost_response": {"kind": "lost_response", "access": "write"},
    "never_apply": {"kind": "never_apply", "access": "write"},
    "slow_apply": {"kind": "slow_apply", "access": "write", "delay_seconds": 90.0},
}
TRANSPORT_FAULTS = ("lost_request", "lost_response_timeout")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class SimParams:
    """Per-seed knobs of the world (not shrunk)."""

    coda_rows: int = 12
    local_rows: int = 3
    page_size: int = 500
    upsert_batch_rows: int = 100
    apply_delay: float = 3.0
    apply_jitter: float = 0.0
    read_lag: float = 1.0
    lag_jitter: float = 0.0
    skew: float = 0.0
    """Local updated_at = true time + skew (the database's clock vs Coda's)."""
    skew_band: float = 5.0
    tie_break: str = "remote"
    full_resync_seconds: float = 3600.0
    max_delete_share: float = 0.5
    retry_after_header: bool = False
    interval: float = 30.0
    overlap: float = 300.0
    mutation_timeout: float = 120.0

    @property
    def skew_within_band(self) -> bool:
        return abs(self.skew) <= self.skew_band


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Cycle:
    dt: float
    full: bool = False


@dataclass(frozen=True)
class Advance:
    dt: float


@dataclass(frozen=True)
class PersonEdit:
    pick: int
    cells: tuple[tuple[str, Any], ...]
    """(local column, Coda value)."""


@dataclass(frozen=True)
class PersonInsert:
    cells: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class PersonDelete:
    pick: int


@dataclass(frozen=True)
class AppEdit:
    pick: int
    values: tuple[tuple[str, Any], ...]
    backdate: float = 0.0
    """Seconds the transaction's updated_at lies in the past (a long transaction)."""


@dataclass(frozen=True)
class AppInsert:
    key: str
    values: tuple[tuple[str, Any], ...]
    backdate: float = 0.0


@dataclass(frozen=True)
class AppDelete:
    pick: int


@dataclass(frozen=True)
class Fault:
    label: str
    count: int = 1


@dataclass(frozen=True)
class EmptyFullListing:
    """A full-scan cycle whose first listing page comes back empty (items [], no next page).

    Only full listings: an empty incremental page is normal, and one whose sync token moved
    would drop changes no client can detect (reported separately)."""

    dt: float = 30.0


@dataclass(frozen=True)
class TransportFault:
    kind: str
    """lost_request (never reaches Coda) | lost_response_timeout (applied, answer lost)."""
    method: str | None = None
    count: int = 1


@dataclass(frozen=True)
class RandomFaults:
    rate: float
    kinds: tuple[str, ...] = ("http_500", "http_503", "rate_limit")


@dataclass(frozen=True)
class Lag:
    seconds: float
    jitter: float = 0.0


@dataclass(frozen=True)
class ApplyDelay:
    seconds: float
    jitter: float = 0.0


@dataclass(frozen=True)
class Crash:
    point: str
    nth: int = 1


@dataclass(frozen=True)
class Concurrent:
    """A person acts just before the `at`-th Coda request of the coming cycles."""

    at: int
    action: PersonEdit | PersonDelete | PersonInsert


Step = (
    Cycle
    | Advance
    | PersonEdit
    | PersonInsert
    | PersonDelete
    | AppEdit
    | AppInsert
    | AppDelete
    | Fault
    | EmptyFullListing
    | TransportFault
    | RandomFaults
    | Lag
    | ApplyDelay
    | Crash
    | Concurrent
)


@dataclass(frozen=True)
class Scenario:
    seed: int
    params: SimParams
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {self.params}"]
        lines += [f"  {n:2d}. {step!r}" for n, step in enumerate(self.steps)]
        return "\n".join(lines)

    def as_code(self) -> str:
        """Python source that rebuilds this scenario (for a regression test)."""
        steps = "".join(f"        {step!r},\n" for step in self.steps)
        head = f"Scenario(\n    seed={self.seed},\n    params={self.params!r},\n"
        return f"{head}    steps=(\n{steps}    ),\n)"


# --------------------------------------------------------------------------- generation


class _Values:
    """Unique-where-possible values, so the checker can tell every write apart."""

    def __init__(self, seed: int, rng: random.Random) -> None:
        self.seed = seed
        self.rng = rng
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def one(self, column: str) -> tuple[Any, Any]:
        """(Coda cell value, local value) for one column."""
        n = self._next()
        rng = self.rng
        if column == "comment":
            text = f"c{self.seed}.{n}"
            return text, text
        if column == "activity":
            text = f"act {self.seed}.{n}"
            return text, text
        if column == "hours":
            value = float(n % 97) + 0.5 * rng.randrange(1, 4) + rng.randrange(1, 9) * 100
            return value, value
        if column == "role":
            role = rng.choice(ROLES)
            return role, role
        if column == "confirmed":
            flag = rng.random() < 0.5
            return flag, flag
        if column == "activity_date":
            day = date(2024, 1, 1) + timedelta(days=(self.seed * 7 + n * 13) % 700)
            return day.isoformat(), day
        if column == "tags":
            tags = sorted(rng.sample(TAGS, rng.randrange(1, 3)))
            return list(tags), list(tags)
        raise AssertionError(column)

    def columns(self, k: int) -> list[str]:
        weights = {
            "comment": 5,
            "hours": 3,
            "activity": 2,
            "role": 1,
            "confirmed": 1,
            "activity_date": 1,
            "tags": 1,
        }
        names = list(weights)
        chosen: list[str] = []
        while len(chosen) < k:
            c = self.rng.choices(names, [weights[x] for x in names])[0]
            if c not in chosen:
                chosen.append(c)
        return chosen

    def row(self) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]:
        """A full new row: (Coda cells by local column, local values)."""
        email = self.rng.choice(PEOPLE)
        coda: list[tuple[str, Any]] = [("employee_email", email), ("email", email)]
        local: list[tuple[str, Any]] = [("employee_email", email), ("email", email)]
        for column in EDITABLE:
            cv, lv = self.one(column)
            coda.append((column, cv))
            local.append((column, lv))
        return tuple(coda), tuple(local)


def params_for(seed: int, rng: random.Random) -> SimParams:
    return SimParams(
        coda_rows=rng.randrange(8, 31),
        local_rows=rng.randrange(0, 8),
        page_size=rng.choice((5, 10, 10, 25, 500)),
        upsert_batch_rows=rng.choice((2, 5, 100, 100)),
        apply_delay=rng.choice((0.0, 1.0, 3.0, 3.0, 10.0, 20.0)),
        apply_jitter=rng.choice((0.0, 0.0, 2.0, 8.0)),
        read_lag=rng.choice((0.0, 0.0, 1.0, 1.0, 3.0, 8.0)),
        lag_jitter=rng.choice((0.0, 0.0, 0.0, 2.0, 6.0)),
        skew=rng.choice((0.0, 0.0, 1.0, -1.0, 3.0, -3.0, 4.5, -4.5, 12.0, -12.0)),
        tie_break=rng.choice(("remote", "local")),
        full_resync_seconds=rng.choice((300.0, 300.0, 900.0, 3600.0, 3600.0)),
        max_delete_share=rng.choice((0.2, 0.5, 1.0)),
        retry_after_header=rng.random() < 0.5,
    )


def generate(seed: int, *, min_steps: int = 5, max_steps: int = 30) -> Scenario:
    """The scenario of `seed` (deterministic)."""
    rng = random.Random(f"coda-sync schedule {seed}")  # not Random(seed): the emulator's seed
    params = params_for(seed, rng)
    values = _Values(seed, rng)
    n_steps = rng.randrange(min_steps, max_steps + 1)
    delete_budget = max(1, int(params.max_delete_share * params.coda_rows * 0.6))
    steps: list[Step] = []

    def pick() -> int:
        return rng.randrange(1_000_000)

    def person_edit() -> PersonEdit:
        cols = values.columns(rng.choice((1, 1, 1, 2, 3)))
        return PersonEdit(pick(), tuple((c, values.one(c)[0]) for c in cols))

    def app_edit(backdate: float = 0.0) -> AppEdit:
        cols = values.columns(rng.choice((1, 1, 1, 2, 3)))
        return AppEdit(pick(), tuple((c, values.one(c)[1]) for c in cols), backdate)

    def backdate() -> float:
        return rng.choice((0.0, 0.0, 0.0, rng.uniform(5, params.overlap * 0.8)))

    kinds = {
        "cycle": 30,
        "person_edit": 12,
        "app_edit": 12,
        "conflict": 6,
        "person_insert": 3,
        "app_insert": 3,
        "person_delete": 3,
        "app_delete": 3,
        "fault": 10,
        "transport_fault": 3,
        "random_faults": 2,
        "lag": 2,
        "apply_delay": 2,
        "crash": 8,
        "concurrent": 6,
        "page_drift": 4,
    }
    names = list(kinds)
    weights = [kinds[k] for k in names]
    while len(steps) < n_steps:
        kind = rng.choices(names, weights)[0]
        if kind == "cycle":
            dt = rng.choice((1.0, 5.0, params.interval, params.interval, 90.0))
            steps.append(Cycle(dt, full=rng.random() < 0.1))
        elif kind == "person_edit":
            steps.append(person_edit())
        elif kind == "app_edit":
            steps.append(app_edit(backdate()))
        elif kind == "conflict":
            # both sides edit the same field of the same key, close together in time
            p = pick()
            column = values.columns(1)[0]
            person = PersonEdit(p, ((column, values.one(column)[0]),))
            app = AppEdit(p, ((column, values.one(column)[1]),))
            gap = Advance(rng.choice((0.2, 1.0, 2.0, 4.0, 8.0, 20.0)))
            steps.extend((person, gap, app) if rng.random() < 0.5 else (app, gap, person))
        elif kind == "person_insert":
            steps.append(PersonInsert(values.row()[0]))
        elif kind == "app_insert":
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            steps.append(AppInsert(key, values.row()[1], backdate()))
        elif kind in ("person_delete", "app_delete"):
            if delete_budget <= 0:
                continue
            delete_budget -= 1
            steps.append(PersonDelete(pick()) if kind == "person_delete" else AppDelete(pick()))
        elif kind == "fault":
            if rng.random() < 0.2:
                steps.append(EmptyFullListing(params.interval))
                continue
            label = rng.choice(tuple(FAULTS))
            steps.append(Fault(label, count=rng.choice((1, 1, 2, 3))))
        elif kind == "transport_fault":
            steps.append(
                TransportFault(
                    rng.choice(TRANSPORT_FAULTS),
                    method=rng.choice((None, "POST", "GET", "DELETE", "PUT")),
                    count=rng.choice((1, 1, 2)),
                )
            )
        elif kind == "random_faults":
            steps.append(
                RandomFaults(
                    rng.choice((0.05, 0.1, 0.2)),
                    kinds=tuple(
                        rng.sample(
                            ("http_500", "http_503", "rate_limit", "rate_limit_retry_after"),
                            rng.randrange(1, 4),
                        )
                    ),
                )
            )
            steps.append(Cycle(params.interval))
            steps.append(RandomFaults(0.0))
        elif kind == "lag":
            steps.append(Lag(rng.choice((0.0, 1.0, 5.0, 20.0, 45.0)), rng.choice((0.0, 5.0))))
        elif kind == "apply_delay":
            steps.append(ApplyDelay(rng.choice((0.0, 2.0, 10.0, 40.0)), rng.choice((0.0, 10.0))))
        elif kind == "crash":
            steps.append(Crash(rng.choice(CRASH_POINTS), nth=rng.choice((1, 1, 1, 2, 3))))
        elif kind == "page_drift":
            # a person edits between two pages of a full listing: offset paging drifts
            # (with the read lag off for it, or the edit would not show before the next page)
            steps.append(Lag(0.0))
            steps.append(Concurrent(rng.choice((2, 2, 3)), person_edit()))
            steps.append(Cycle(params.interval, full=True))
            steps.append(Lag(params.read_lag, params.lag_jitter))
        elif kind == "concurrent":
            roll = rng.random()
            action: PersonEdit | PersonDelete | PersonInsert
            if roll < 0.75:
                action = person_edit()
            elif roll < 0.9 or delete_budget <= 0:
                action = PersonInsert(values.row()[0])
            else:
                delete_budget -= 1
                action = PersonDelete(pick())
            steps.append(Concurrent(rng.choice((1, 2, 2, 3, 3, 4, 5, 7)), action))
    steps.append(Cycle(params.interval))
    return Scenario(seed, params, tuple(steps))
