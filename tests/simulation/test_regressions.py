"""Engine bugs the simulation found, as shrunk, deterministic scenarios.

Each was an `xfail(strict=True)` test while the bug was open (the way to add a new one:
mark it, and tag its class in `invariants.KNOWN_BUGS`); all of them are fixed now, so each
must run clean. `invariants.FIXED_BUGS` keeps the description of each class.
Run one with `-s` to see the violations it would produce.
"""

from __future__ import annotations

import datetime

import pytest

from tests.simulation.invariants import FIXED_BUGS
from tests.simulation.runner import run_scenario
from tests.simulation.schedule import (
    Advance,
    AppDelete,
    AppEdit,
    AppInsert,
    Concurrent,
    Crash,
    Cycle,
    EmptyFullListing,
    Fault,
    Lag,
    PersonDelete,
    PersonEdit,
    PersonInsert,
    Scenario,
    SimParams,
)

pytestmark = pytest.mark.anyio


async def _assert_clean(scenario: Scenario, tag: str) -> None:
    result = await run_scenario(scenario)
    for v in result.violations:
        print(v)
    assert not result.violations, f"{tag}: {FIXED_BUGS[tag]}"


async def test_push_to_a_row_deleted_in_coda_does_not_blank_the_other_columns() -> None:
    """Seed 6, shrunk: the app edits three columns of a row, a person deletes that row in
    Coda; the engine's keyed upsert of the three columns re-creates the row with only them,
    then the blank columns are pulled over the SQL row (employee, e-mail, role, tags...)."""
    params = SimParams(
        coda_rows=23,
        local_rows=5,
        page_size=10,
        upsert_batch_rows=5,
        apply_delay=3.0,
        apply_jitter=2.0,
        read_lag=1.0,
        skew=-12.0,
        max_delete_share=0.5,
        retry_after_header=True,
    )
    steps = (
        Cycle(dt=1.0),
        AppEdit(
            27218,
            (("hours", 508.5), ("comment", "c6.8"), ("activity_date", datetime.date(2024, 6, 8))),
        ),
        Crash(point="after-local-commit", nth=1),
        Cycle(dt=1.0),
        PersonDelete(950378),
    )
    await _assert_clean(Scenario(6, params, steps), "partial-upsert-recreates-deleted-row")


async def test_intent_resent_after_a_crash_does_not_overwrite_a_later_coda_edit() -> None:
    """The app edits a comment; the engine records the push and crashes before sending it;
    while it is down a person edits the same comment in Coda (later, and visible); after the
    restart the stored upsert is resent as is: the person's edit is gone, no journal entry."""
    params = SimParams(coda_rows=10, local_rows=0, read_lag=1.0, apply_delay=3.0)
    steps = (
        Cycle(dt=5.0),
        AppEdit(3, (("comment", "app, before the crash"),)),
        Crash(point="before-send", nth=1),
        Cycle(dt=30.0),
        PersonEdit(3, (("comment", "person, while the daemon was down"),)),
    )
    await _assert_clean(Scenario(11, params, steps), "stale-intent-replay")


async def test_delete_resent_after_a_crash_does_not_delete_a_later_coda_edit() -> None:
    """Seed 795, shrunk: a delete intent resent after a crash deletes a row a person edited
    in Coda after the app's delete (edit beats delete)."""
    params = SimParams(
        coda_rows=26,
        local_rows=7,
        page_size=10,
        upsert_batch_rows=100,
        apply_delay=20.0,
        read_lag=8.0,
        lag_jitter=2.0,
        skew=1.0,
        tie_break="local",
        full_resync_seconds=900.0,
        max_delete_share=1.0,
    )
    steps = (
        Cycle(dt=30.0),
        Crash(point="before-send", nth=2),
        AppEdit(448882, (("hours", 307.0),)),
        AppDelete(539126),
        Cycle(dt=30.0),
        PersonEdit(277040, (("hours", 107.5),)),
    )
    await _assert_clean(Scenario(795, params, steps), "stale-intent-replay")


async def test_deleting_a_just_pushed_row_deletes_it_in_coda() -> None:
    """Seed 74, shrunk: the app deletes a row whose insert the engine pushed one cycle ago;
    with the read snapshot lagging, the key query finds nothing, the key is forgotten, the
    Coda row stays and is pulled back into SQL (resurrection)."""
    params = SimParams(
        coda_rows=19,
        local_rows=4,
        apply_delay=1.0,
        apply_jitter=8.0,
        read_lag=8.0,
        lag_jitter=6.0,
        skew=-3.0,
        tie_break="local",
        full_resync_seconds=300.0,
    )
    steps = (Cycle(dt=30.0), AppDelete(546442), Cycle(dt=5.0))
    await _assert_clean(Scenario(74, params, steps), "stale-find-by-key")


async def test_full_scan_does_not_delete_a_row_it_just_inserted() -> None:
    """Seed 551, shrunk: no edits at all. A local row is pushed; its echo is not visible yet
    (read lag 8 s) when a full scan runs; the key query on the lagging snapshot says "not
    found" and the engine deletes the SQL row (audited), to pull it back a cycle later."""
    params = SimParams(
        coda_rows=24,
        local_rows=1,
        page_size=10,
        upsert_batch_rows=2,
        apply_delay=1.0,
        apply_jitter=2.0,
        read_lag=8.0,
        skew=-4.5,
        tie_break="local",
        max_delete_share=0.2,
    )
    steps = (Cycle(dt=30.0, full=True), Cycle(dt=1.0), Cycle(dt=1.0), Cycle(dt=5.0, full=True))
    await _assert_clean(Scenario(551, params, steps), "stale-find-by-key")


async def test_row_deleted_by_the_engine_is_not_pulled_back_from_a_stale_read() -> None:
    """Seed 24, shrunk: read lag 45 s; the app deletes a row, the engine deletes it in Coda
    and confirms; the next incremental listing (snapshot from before the delete) still shows
    the row and the engine re-inserts it into SQL until the next full scan."""
    params = SimParams(
        coda_rows=19,
        local_rows=2,
        page_size=5,
        upsert_batch_rows=5,
        apply_delay=3.0,
        apply_jitter=8.0,
        read_lag=1.0,
        lag_jitter=2.0,
        max_delete_share=0.2,
        retry_after_header=True,
    )
    steps = (
        Lag(seconds=45.0),
        PersonEdit(469647, (("comment", "c24.1"),)),
        Cycle(dt=30.0),
        AppDelete(94086),
        Cycle(dt=1.0),
        Cycle(dt=30.0),
    )
    await _assert_clean(Scenario(24, params, steps), "own-delete-stale-read")


async def test_empty_full_listing_does_not_overwrite_an_unseen_coda_edit() -> None:
    """Seed 46, shrunk: a person and the app edit the same comment; the next full listing
    comes back empty. The breaker refuses deletes, but the local edit is still pushed over
    the person's (unseen) edit, and nothing is journaled."""
    params = SimParams(
        coda_rows=21,
        local_rows=6,
        page_size=10,
        read_lag=3.0,
        lag_jitter=2.0,
        skew=-12.0,
        tie_break="local",
        max_delete_share=0.2,
    )
    steps = (
        Cycle(dt=30.0),
        Cycle(dt=90.0),
        PersonEdit(384545, (("comment", "c46.1"),)),
        AppEdit(384545, (("comment", "c46.2"),)),
        EmptyFullListing(dt=30.0),
    )
    await _assert_clean(Scenario(46, params, steps), "empty-listing-breaker")


async def test_empty_full_listing_trips_the_breaker_without_delete_candidates() -> None:
    """Seed 737, shrunk: the only known key is still fenced (just pushed) when the full
    listing comes back empty: no delete candidate, so the breaker does not trip at all."""
    params = SimParams(
        coda_rows=8, local_rows=1, read_lag=8.0, skew=-4.5, full_resync_seconds=300.0
    )
    steps = (EmptyFullListing(dt=30.0), EmptyFullListing(dt=30.0))
    await _assert_clean(Scenario(737, params, steps), "empty-listing-breaker")


async def test_edit_of_a_row_whose_echo_was_not_read_is_not_a_blind_partial_push() -> None:
    """Seed 20212, shrunk: a local row is pushed (insert) and, before its echo is read, the
    app edits it while a person deletes it in Coda. A partial upsert re-created the row with
    three columns under an id we could not compare (we never read the first one), and the
    blanks were pulled into SQL. Now the key is read by key (latest) before such a push: the
    row is gone, so the local edit re-inserts it whole (edit beats delete, journaled)."""
    params = SimParams(
        coda_rows=12,
        local_rows=7,
        page_size=10,
        upsert_batch_rows=100,
        apply_delay=0.0,
        apply_jitter=0.0,
        read_lag=1.0,
        lag_jitter=2.0,
        skew=1.0,
        tie_break="local",
        full_resync_seconds=300.0,
        max_delete_share=1.0,
    )
    steps = (
        Cycle(dt=30.0),
        AppEdit(
            377637,
            (("hours", 108.5), ("activity", "act 20212.9"), ("tags", ["конференция"])),
            backdate=220.74,
        ),
        Concurrent(at=2, action=PersonDelete(690852)),
        Lag(seconds=0.0, jitter=0.0),
        Cycle(dt=30.0),
    )
    await _assert_clean(Scenario(20212, params, steps), "partial-upsert-recreates-deleted-row")


async def test_delete_after_a_journaled_conflict_is_not_an_unseen_edit() -> None:
    """Seed 20494, shrunk (an oracle fix, no engine change): the app and a person edit the
    same comment within the skew band; the tie goes to the app and the person's value is
    journaled; then the app deletes the row while our write is still in flight. The person's
    edit lost a conflict before the delete, so the delete need not yield to it."""
    params = SimParams(
        coda_rows=14,
        local_rows=1,
        page_size=500,
        upsert_batch_rows=2,
        apply_delay=1.0,
        apply_jitter=2.0,
        read_lag=1.0,
        lag_jitter=0.0,
        skew=4.5,
        tie_break="local",
        full_resync_seconds=300.0,
        max_delete_share=1.0,
        retry_after_header=True,
    )
    steps = (
        PersonDelete(964852),
        Cycle(dt=30.0),
        AppEdit(177438, (("comment", "c20494.8"),)),
        Advance(dt=4.0),
        PersonEdit(177438, (("comment", "c20494.7"),)),
        Cycle(dt=30.0),
        AppDelete(553674),
    )
    result = await run_scenario(Scenario(20494, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_retry_after_holds_back_the_next_call_after_a_give_up() -> None:
    """Seed 30375, shrunk: three 503s spend most of a call's retry budget, then 429s with
    Retry-After 3 make it give up; the cycle's next request went out at once. Retry-After
    binds every request of the token, so the next one waits."""
    params = SimParams(
        coda_rows=15,
        local_rows=3,
        page_size=500,
        upsert_batch_rows=100,
        apply_delay=10.0,
        read_lag=3.0,
        skew=-1.0,
        tie_break="local",
        full_resync_seconds=900.0,
        max_delete_share=0.5,
    )
    steps = (
        Cycle(dt=90.0),
        Fault(label="http_503", count=3),
        Fault(label="rate_limit_retry_after", count=3),
        Cycle(dt=30.0),
    )
    result = await run_scenario(Scenario(30375, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_key_decided_in_the_remote_phase_is_not_rechecked_and_queued_again() -> None:
    """Seed 30757, shrunk: a key carrying a recheck flag is decided by the full scan's
    listing and queued for Coda; the recheck phase, which runs before the flush, still saw
    the flag and queued it again: one upsert held the key twice (I8), and the second row hid
    the first's columns from the race analysis."""
    person = (
        ("employee_email", "olga.popova@example.com"),
        ("email", "olga.popova@example.com"),
        ("comment", "c30757.19"),
        ("activity", "act 30757.20"),
        ("hours", 721.5),
        ("role", "Спикер"),
        ("confirmed", False),
        ("activity_date", "2024-01-12"),
        ("tags", ["конференция", "обучение"]),
    )
    params = SimParams(
        coda_rows=11,
        local_rows=7,
        page_size=10,
        upsert_batch_rows=5,
        apply_delay=20.0,
        read_lag=3.0,
        lag_jitter=2.0,
        skew=-12.0,
        tie_break="remote",
        full_resync_seconds=3600.0,
        max_delete_share=1.0,
    )
    steps = (
        Cycle(dt=1.0),
        PersonInsert(tuple((c, v) for c, v in person if c != "comment") + (("comment", "c2"),)),
        AppInsert(
            key="600e7d89-d5bf-48e3-b28a-197720b3ebba",
            values=tuple((c, v) for c, v in person if c != "activity_date")
            + (("activity_date", datetime.date(2025, 8, 4)),),
        ),
        PersonDelete(402329),
        Crash(point="before-save-token", nth=1),
        PersonInsert(person),
        Cycle(dt=1.0),
        AppDelete(863859),
        Cycle(dt=5.0),
        AppEdit(66845, (("hours", 527.5), ("comment", "c30757.27"))),
        Cycle(dt=5.0),
        PersonDelete(679873),
        Crash(point="inside-local-transaction", nth=1),
        Cycle(dt=90.0),
        Lag(seconds=0.0, jitter=0.0),
        Concurrent(at=2, action=PersonEdit(424859, (("comment", "c30757.28"),))),
        Cycle(dt=30.0, full=True),
    )
    result = await run_scenario(Scenario(30757, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_row_listed_twice_by_offset_paging_is_decided_once() -> None:
    """Seed 123, shrunk: a person deletes a row while a full scan pages through the table
    (5 rows a page); offset paging shifts and the next page repeats a row the previous one
    had. It was decided twice, so one upsert carried its key twice (I8)."""
    params = SimParams(
        coda_rows=9,
        local_rows=3,
        page_size=5,
        upsert_batch_rows=100,
        apply_delay=1.0,
        read_lag=0.0,
        skew=1.0,
        tie_break="remote",
        full_resync_seconds=3600.0,
        max_delete_share=0.5,
        retry_after_header=True,
    )
    steps = (
        Cycle(dt=30.0),
        AppEdit(223218, (("comment", "c123.6"),)),
        Cycle(dt=30.0),
        PersonEdit(741442, (("activity_date", "2024-09-09"),)),
        PersonEdit(322341, (("hours", 609.0),)),
        Cycle(dt=1.0),
        Concurrent(at=1, action=PersonDelete(209960)),
        AppEdit(746414, (("comment", "c123.11"), ("activity", "act 123.12"))),
        Concurrent(at=2, action=PersonEdit(351088, (("hours", 214.0),))),
        Cycle(dt=30.0, full=True),
        Cycle(dt=30.0),
    )
    result = await run_scenario(Scenario(123, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_few_unconfirmed_deletes_never_slip_under_the_guard() -> None:
    """Seed 3268 of the 10,000-seed soak, shrunk (a regression of releasing intents): after a
    crash three never-sent inserts are released, so a full scan sees them as unlisted keys,
    next to one row that a person's edit moved past the offset paging. Four candidates were
    "too many to confirm", so the unchanged one went in as deleted unconfirmed, and being
    one delete it passed the guard: a phantom delete of a live row."""
    params = SimParams(
        coda_rows=14,
        local_rows=3,
        page_size=5,
        upsert_batch_rows=5,
        apply_delay=3.0,
        apply_jitter=2.0,
        read_lag=0.0,
        skew=0.0,
        tie_break="remote",
        full_resync_seconds=900.0,
        max_delete_share=0.2,
        retry_after_header=True,
    )
    steps = (
        Crash(point="after-intent-commit", nth=1),
        Cycle(dt=5.0),
        Fault(label="http_503", count=1),
        Concurrent(at=3, action=PersonEdit(687775, (("activity", "act 3268.21"),))),
        Cycle(dt=30.0, full=True),
    )
    result = await run_scenario(Scenario(3268, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_an_app_edit_stamped_at_the_instant_of_our_pull_is_pushed() -> None:
    """Seed 6941 of the soak, shrunk: the app's clock runs 4.5 s behind ours, and the app edits
    a row 4.5 s after our pull wrote it, so the edit carries exactly our pull's `updated_at`.
    The engine took it for its own write (same stamp as the state's) and never compared it:
    the edit reached Coda only at the next full scan. Our stamps now end in a microsecond no
    coarse clock produces (`clock.own_stamp`)."""
    params = SimParams(
        coda_rows=8,
        local_rows=6,
        page_size=10,
        upsert_batch_rows=100,
        apply_delay=10.0,
        apply_jitter=2.0,
        read_lag=0.0,
        skew=-4.5,
        tie_break="remote",
        max_delete_share=0.2,
        retry_after_header=True,
    )
    steps = (
        Cycle(dt=90.0),
        PersonEdit(410988, (("hours", 802.0),)),
        Advance(dt=4.0),
        AppEdit(410988, (("hours", 503.0),)),
    )
    result = await run_scenario(Scenario(6941, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_an_app_delete_does_not_delete_a_coda_edit_waiting_for_a_recheck() -> None:
    """Seed 1665 of the soak, shrunk: the app deletes a row while our push to it is in flight;
    a person edits the row in Coda after that delete. The listing shows the edit while the
    snapshot is stale, so the key is marked for recheck; the next cycle's delete phase took
    the key's Coda side as unchanged and deleted the person's edit. Keys marked for recheck
    are now left to the recheck phase, which reads Coda first (edit beats delete)."""
    params = SimParams(
        coda_rows=11,
        local_rows=0,
        page_size=500,
        upsert_batch_rows=100,
        apply_delay=0.0,
        apply_jitter=2.0,
        read_lag=0.0,
        skew=-4.5,
        tie_break="remote",
        full_resync_seconds=300.0,
        max_delete_share=0.5,
        retry_after_header=False,
    )
    steps = (
        Cycle(dt=30.0),
        Lag(seconds=20.0, jitter=5.0),
        AppEdit(534972, (("comment", "c1665.5"),)),
        Cycle(dt=5.0, full=True),
        Concurrent(at=3, action=PersonEdit(912839, (("comment", "c1665.15"),))),
        AppDelete(174601),
        Advance(dt=4.0),
        PersonEdit(213145, (("comment", "c1665.16"),)),
        Cycle(dt=30.0),
    )
    result = await run_scenario(Scenario(1665, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_released_write_keeps_the_values_it_pulled_as_the_base() -> None:
    """Seed 6802 of the soak, shrunk: a cycle merges a person's edit (role pulled into SQL)
    with an app edit (pushed), records the push and crashes before sending it. The released
    key went back to its old base, so when the person then set the role back to that old
    value, Coda looked unchanged and the pulled role was pushed over the person's edit. The
    columns the write did not carry are now the base (they were on both sides)."""
    params = SimParams(
        coda_rows=10,
        local_rows=0,
        page_size=10,
        upsert_batch_rows=100,
        apply_delay=20.0,
        apply_jitter=0.0,
        read_lag=0.0,
        skew=-12.0,
        tie_break="remote",
        max_delete_share=1.0,
        retry_after_header=False,
    )
    steps = (
        Crash(point="before-send", nth=1),
        Cycle(dt=30.0),
        AppEdit(729816, (("comment", "c6802.7"), ("confirmed", True))),
        PersonEdit(888176, (("comment", "c6802.11"), ("role", "Спикер"))),
        Cycle(dt=30.0),
        PersonEdit(308806, (("hours", 423.5), ("role", "Организатор"))),
    )
    result = await run_scenario(Scenario(6802, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_crash_while_applying_a_recheck_keeps_the_key_marked() -> None:
    """Seed 8447 of the soak, shrunk: a listing shows a person's edit while the snapshot is
    stale, so the key is marked for recheck (the sync token moves past the edit). The recheck
    phase cleared the mark in its own transaction, then crashed inside the one applying the
    decision: the edit was forgotten, and the app's edit pushed over it unjournaled. The mark
    is now cleared in the decision's own transaction."""
    params = SimParams(
        coda_rows=14,
        local_rows=1,
        page_size=5,
        upsert_batch_rows=5,
        apply_delay=10.0,
        apply_jitter=0.0,
        read_lag=1.0,
        lag_jitter=2.0,
        skew=4.5,
        tie_break="remote",
        full_resync_seconds=900.0,
        max_delete_share=0.2,
        retry_after_header=True,
    )
    steps = (
        EmptyFullListing(dt=30.0),
        EmptyFullListing(dt=30.0),
        AppEdit(382386, (("comment", "c8447.2"),)),
        Cycle(dt=5.0),
        Cycle(dt=5.0),
        AppEdit(536454, (("comment", "c8447.4"),)),
        Advance(dt=8.0),
        PersonEdit(536454, (("comment", "c8447.3"),)),
        Crash(point="inside-local-transaction", nth=2),
        Concurrent(at=3, action=PersonDelete(503942)),
        PersonEdit(307986, (("comment", "c8447.5"),)),
        Cycle(dt=90.0),
        Cycle(dt=30.0),
    )
    result = await run_scenario(Scenario(8447, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_row_recreated_while_the_snapshot_was_stale_is_restored_without_a_full_scan() -> (
    None
):
    """Seed 1107 of the soak, shrunk: a person deletes a row, the app edits it, and our
    partial upsert re-creates it with just the comment. The listing that shows the key on its
    new row could not read the old one (stale snapshot), and the sync token never lists the
    row again: the blanked columns waited for the next full scan. The key is now marked for
    recheck; the recheck phase reads the old row (404), finds the key's new row and restores
    the other columns (edit beats delete, journaled)."""
    params = SimParams(
        coda_rows=19,
        local_rows=6,
        page_size=500,
        upsert_batch_rows=100,
        apply_delay=0.0,
        apply_jitter=0.0,
        read_lag=0.0,
        lag_jitter=6.0,
        skew=0.0,
        tie_break="remote",
        full_resync_seconds=300.0,
        max_delete_share=1.0,
        retry_after_header=True,
    )
    steps = (
        EmptyFullListing(dt=30.0),
        Cycle(dt=30.0),
        PersonInsert(
            (
                ("employee_email", "john.smith@example.com"),
                ("email", "john.smith@example.com"),
                ("comment", "c1107.4"),
                ("activity", "act 1107.5"),
                ("hours", 407.0),
                ("role", "Волонтёр"),
                ("confirmed", True),
                ("activity_date", "2024-06-15"),
                ("tags", ["спорт"]),
            )
        ),
        PersonDelete(125238),
        AppDelete(786384),
        AppEdit(571194, (("comment", "c1107.14"),)),
        Cycle(dt=90.0),
        PersonInsert(
            (
                ("employee_email", "maria.smirnova@example.com"),
                ("email", "maria.smirnova@example.com"),
                ("comment", "c1107.15"),
                ("activity", "act 1107.16"),
                ("hours", 318.5),
                ("role", "Спикер"),
                ("confirmed", False),
                ("activity_date", "2024-11-05"),
                ("tags", ["обучение"]),
            )
        ),
    )
    result = await run_scenario(Scenario(1107, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_an_app_write_of_the_value_a_field_already_holds_is_not_an_edit() -> None:
    """Seed 1535 of the soak, shrunk (the oracle, not the engine): the app writes a row's tags
    with the value they already hold, then a person deletes the row. The oracle counted that
    write as an edit the deleting side had not seen ("edit must beat delete"), but it changes
    no content, so a content-hash sync rightly sees no edit. It no longer counts."""
    params = SimParams(
        coda_rows=29,
        local_rows=6,
        page_size=5,
        upsert_batch_rows=100,
        apply_delay=20.0,
        apply_jitter=8.0,
        read_lag=3.0,
        skew=-12.0,
        tie_break="remote",
        full_resync_seconds=300.0,
        max_delete_share=1.0,
        retry_after_header=False,
    )
    steps = (
        Cycle(dt=30.0),
        Cycle(dt=30.0),
        PersonEdit(780213, (("tags", ["митап"]),)),
        AppEdit(780213, (("tags", ["конференция"]),)),
        PersonDelete(178948),
    )
    result = await run_scenario(Scenario(1535, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_a_keyless_row_deleted_after_we_gave_it_a_key_is_a_coda_delete() -> None:
    """Seed 1066 of the soak, shrunk (the oracle, not the engine): a person inserts a row
    without a key and deletes it; a lagging listing still shows it, so the engine pulls it and
    gives it a key (whose write-back finds no row). The oracle knew the deleted row only by
    its id, so it reported the pulled row as "a local insert never pushed". Only a full scan
    may conclude a Coda delete; the oracle now resolves the row id through the engine's state."""
    params = SimParams(
        coda_rows=10,
        local_rows=6,
        page_size=500,
        upsert_batch_rows=100,
        apply_delay=0.0,
        apply_jitter=0.0,
        read_lag=0.0,
        lag_jitter=6.0,
        skew=-3.0,
        tie_break="local",
        max_delete_share=0.5,
        retry_after_header=False,
    )
    steps = (
        Lag(seconds=0.0, jitter=0.0),
        Cycle(dt=30.0, full=True),
        Lag(seconds=45.0, jitter=5.0),
        AppEdit(711216, (("comment", "c1066.7"), ("confirmed", False))),
        Cycle(dt=30.0),
        AppEdit(258915, (("comment", "c1066.9"),)),
        Cycle(dt=1.0),
        PersonEdit(531222, (("activity", "act 1066.14"),)),
        PersonInsert(
            (
                ("employee_email", "john.smith@example.com"),
                ("email", "john.smith@example.com"),
                ("comment", "c1066.15"),
                ("activity", "act 1066.16"),
                ("hours", 417.5),
                ("role", "Спикер"),
                ("confirmed", False),
                ("activity_date", "2024-01-23"),
                ("tags", ["конференция", "митап"]),
            )
        ),
        PersonInsert(
            (
                ("employee_email", "ivan.petrov@example.com"),
                ("email", "ivan.petrov@example.com"),
                ("comment", "c1066.22"),
                ("activity", "act 1066.23"),
                ("hours", 625.0),
                ("role", "Организатор"),
                ("confirmed", False),
                ("activity_date", "2024-04-23"),
                ("tags", ["митап", "обучение"]),
            )
        ),
        Cycle(dt=30.0, full=True),
        PersonDelete(119860),
        Cycle(dt=30.0),
    )
    result = await run_scenario(Scenario(1066, params, steps))
    assert not result.violations, [str(v) for v in result.violations]


async def test_an_unlisted_row_the_snapshot_cannot_confirm_gets_no_partial_push() -> None:
    """Seed 8161 of the 10,000-seed soak, shrunk: a person deletes a row, the app edits it;
    the engine re-inserts it whole (edit beats delete), but Coda never applies the insert, and
    the write is released. The next full scan does not list the key, and its confirming read
    answered 400 (stale snapshot): taken as "still there, unchanged", the app's edit went
    out as a partial upsert, which re-created the row with just that column, and the blank
    columns were pulled over SQL (data loss). Such a key is now marked for recheck, which
    reads Coda (latest) before anything is pushed."""
    params = SimParams(
        coda_rows=17,
        local_rows=1,
        page_size=5,
        upsert_batch_rows=5,
        apply_delay=0.0,
        apply_jitter=0.0,
        read_lag=1.0,
        lag_jitter=6.0,
        skew=1.0,
        tie_break="local",
        full_resync_seconds=300.0,
        max_delete_share=0.5,
        retry_after_header=False,
    )
    steps = (
        PersonDelete(308241),
        Cycle(dt=1.0),
        AppEdit(611096, (("hours", 411.5),)),
        Fault(label="never_apply", count=3),
        Cycle(dt=30.0, full=True),
        Concurrent(
            at=3,
            action=PersonInsert(
                (
                    ("employee_email", "john.smith@example.com"),
                    ("email", "john.smith@example.com"),
                    ("comment", "c8161.16"),
                    ("activity", "act 8161.17"),
                    ("hours", 519.0),
                    ("role", "Организатор"),
                    ("confirmed", False),
                    ("activity_date", "2024-01-01"),
                    ("tags", ["конференция"]),
                )
            ),
        ),
        Fault(label="rate_limit_retry_after", count=1),
        Cycle(dt=90.0),
        Cycle(dt=30.0),
    )
    await _assert_clean(Scenario(8161, params, steps), "partial-upsert-recreates-deleted-row")
