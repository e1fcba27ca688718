"""`normalize`: read forms per column type and value format, errors, the row hash, round trips.

Read forms follow API-FACTS §8; the recorded live listing (`rows.test.json`, S17) is read when
present. The round-trip laws use a small test-local model of "what Coda reads back after we
wrote X" per value format. Lossy combinations are skipped on purpose (the engine reads `rich`):
`simple`/`simpleWithArrays` show people and lookups by display name, `simple` comma-joins
arrays, and a text value that itself is wrapped in ``` fences is indistinguishable from rich
plain text when read in `simple`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import normalize
from daemon.errors import RowError
from daemon.model import Canon, ColumnSpec, ColumnType

T = ColumnType
RECORDED = Path(
    os.environ.get("CODA_SYNC_RECORDED_DIR", Path(__file__).parents[3] / "shared/coda/recorded")
)
NEW_YORK, MOSCOW = ZoneInfo("America/New_York"), ZoneInfo("Europe/Moscow")
PERSON = {"@context": "http://schema.org", "@type": "Person"}
ROW_REF = {"@context": "http://schema.org/", "@type": "StructuredValue", "additionalType": "row"}


def spec(t: ColumnType, **kw: Any) -> ColumnSpec:
    return ColumnSpec(local="col", coda="c-col", type=t, **kw)


def sv(row_id: str, name: str = "Row Name") -> dict[str, str]:
    return {**ROW_REF, "name": name, "rowId": row_id, "tableId": "grid-x", "url": "https://…"}


# --- Coda read forms -------------------------------------------------------------------------

CODA_EXAMPLES: list[tuple[ColumnType, object, Canon]] = [
    # every type: "" is an empty cell
    *[(t, "", None) for t in T if t is not T.CHECKBOX],
    *[(t, None, None) for t in T if t is not T.CHECKBOX],
    # text: one pair of fences stripped, inner whitespace kept
    (T.TEXT, "plain", "plain"),
    (T.TEXT, "```This is plain text```", "This is plain text"),
    (T.TEXT, "```  spaced  ```", "  spaced  "),
    (T.TEXT, "```a```b```", "a```b"),
    (T.TEXT, "```", "```"),
    (T.TEXT, "``````", None),
    (T.TEXT, "**bold** and _it_", "**bold** and _it_"),
    (T.TEXT, "line\nbreak ", "line\nbreak "),
    (T.TEXT, 12, "12"),
    # numbers
    (T.NUMBER, 3, "3"),
    (T.NUMBER, 1.5, "1.5"),
    (T.NUMBER, 0.1, "0.1"),
    (T.NUMBER, 2.50, "2.5"),
    (T.NUMBER, -0.0, "0"),
    (T.NUMBER, 1e-05, "0.00001"),
    (T.NUMBER, 1e16, "10000000000000000"),
    (T.NUMBER, 10**30, "1" + "0" * 30),
    (T.NUMBER, "1,234.5", "1234.5"),
    (T.NUMBER, "  7 ", "7"),
    (T.NUMBER, "1e3", "1000"),
    (T.NUMBER, "-0.00", "0"),
    (T.PERCENT, 0.5, "0.5"),
    (T.PERCENT, "50%", "0.5"),
    (T.PERCENT, "12.5%", "0.125"),
    (T.PERCENT, "0%", "0"),
    (T.CURRENCY, "$12.34", "12.34"),
    (T.CURRENCY, "-$1,234.50", "-1234.5"),
    (T.CURRENCY, "€12", "12"),
    (T.CURRENCY, 10, "10"),
    (T.CURRENCY, "₽1,234.00", "1234"),
    (T.CURRENCY, "RUB 1,234,567.50", "1234567.5"),
    (T.CURRENCY, "(12.34)", "-12.34"),
    (
        T.CURRENCY,
        {
            "@context": "http://schema.org",
            "@type": "MonetaryAmount",
            "currency": "USD",
            "amount": 42.42,
        },
        "42.42",
    ),
    (T.CURRENCY, {"@type": "MonetaryAmount", "currency": "EUR", "amount": "42.420"}, "42.42"),
    # dates: the calendar day in the doc's timezone, never converted to UTC
    (T.DATE, "2020-10-21T00:00:00.000-04:00", "2020-10-21"),
    (T.DATE, "2021-01-05T00:00:00.000-05:00", "2021-01-05"),
    (T.DATE, "2024-01-05T00:00:00.000+03:00", "2024-01-05"),
    (T.DATE, "2024-01-05", "2024-01-05"),
    (T.DATE, "2024-01-05 00:00:00", "2024-01-05"),
    (T.DATE, "1/5/2024", "2024-01-05"),
    (T.DATE, "12/31/2024", "2024-12-31"),
    (T.DATE, "05.01.2024", "2024-01-05"),
    # datetimes: UTC with milliseconds
    (T.DATETIME, "2022-07-19T08:43:59.000-07:00", "2022-07-19T15:43:59.000Z"),
    (T.DATETIME, "2024-01-05T00:30:00.000+03:00", "2024-01-04T21:30:00.000Z"),
    (T.DATETIME, "2024-01-05T10:00:00Z", "2024-01-05T10:00:00.000Z"),
    (T.DATETIME, "2024-01-05T10:00:00.123456+00:00", "2024-01-05T10:00:00.123Z"),
    (T.DATETIME, "2024-01-05T10:00:00", "2024-01-05T10:00:00.000Z"),
    # times: wall time of Coda's 1899-12-30 datetime, offset ignored
    (T.TIME, "1899-12-30T06:52:00.000-08:00", "06:52:00"),
    (T.TIME, "1899-12-30T06:52:00.000-07:52:58", "06:52:00"),
    (T.TIME, "1899-12-30T23:05:09.000+02:02:04", "23:05:09"),
    (T.TIME, "06:52", "06:52:00"),
    (T.TIME, "06:52:30.5", "06:52:30"),
    (T.TIME, "6:52 AM", "06:52:00"),
    (T.TIME, "6:52 PM", "18:52:00"),
    (T.TIME, "12:00 AM", "00:00:00"),
    (T.TIME, "12:30 PM", "12:30:00"),
    (T.TIME, "11:59:59 pm", "23:59:59"),
    # checkbox
    (T.CHECKBOX, True, True),
    (T.CHECKBOX, False, False),
    (T.CHECKBOX, "true", True),
    (T.CHECKBOX, "FALSE", False),
    (T.CHECKBOX, "", False),
    (T.CHECKBOX, None, False),
    # select
    (T.SELECT, "Active", "Active"),
    (T.SELECT, " Active ", "Active"),
    (T.SELECT, "```Active```", "Active"),
    (T.SELECT, {"name": "Active"}, "Active"),
    (T.SELECT, 3, "3"),
    # arrays: simple "a,b", simpleWithArrays/rich lists, nested one level
    (T.MULTISELECT, "b,a,b", ("a", "b")),
    (T.MULTISELECT, "a, b", ("a", "b")),
    (T.MULTISELECT, ["b", "a"], ("a", "b")),
    (T.MULTISELECT, [["a"], ["c", "b"]], ("a", "b", "c")),
    (T.MULTISELECT, [], None),
    (T.MULTISELECT, ["", " "], None),
    (T.MULTISELECT, "solo", ("solo",)),
    (T.LOOKUPS, "Sales,Operations ", ("Operations", "Sales")),
    (T.LOOKUPS, [sv("i-2"), sv("i-1")], ("i-1", "i-2")),
    (T.LOOKUPS, [[sv("i-2")], [sv("i-1"), sv("i-2")]], ("i-1", "i-2")),
    (T.LOOKUPS, sv("i-9"), ("i-9",)),
    (
        T.PEOPLE,
        [{**PERSON, "email": "b@x.com"}, {**PERSON, "email": "A@X.com"}],
        ("a@x.com", "b@x.com"),
    ),
    (T.PEOPLE, "B@x.com,a@x.com", ("a@x.com", "b@x.com")),
    (T.PEOPLE, [{**PERSON, "name": "Zed"}, {**PERSON, "email": "a@x.com"}], ("Zed", "a@x.com")),
    # person
    (
        T.PERSON,
        {**PERSON, "name": "Art Vandalay", "email": " Art@Vandelay.com"},
        "art@vandelay.com",
    ),
    (T.PERSON, {**PERSON, "name": "Art Vandalay", "email": "", "userId": 12}, "Art Vandalay"),
    (T.PERSON, {**PERSON, "name": "Art Vandalay"}, "Art Vandalay"),
    (T.PERSON, "Art@Vandelay.COM ", "art@vandelay.com"),
    (T.PERSON, "Art Vandalay", "Art Vandalay"),
    # email, link, lookup
    (T.EMAIL, "rebeccasmith@company.com", "rebeccasmith@company.com"),
    (T.EMAIL, " x@y.z ", "x@y.z"),
    (T.EMAIL, "mailto:x@y.z", "x@y.z"),
    (T.EMAIL, {"@type": "WebPage", "url": "mailto:x@y.z"}, "x@y.z"),
    (T.EMAIL, {"email": "x@y.z"}, "x@y.z"),
    (
        T.LINK,
        {
            "@context": "http://schema.org",
            "@type": "WebPage",
            "name": "Coda",
            "url": "https://coda.io",
        },
        "https://coda.io",
    ),
    (T.LINK, "https://coda.io", "https://coda.io"),
    (T.LINK, "```https://coda.io```", "https://coda.io"),
    (T.LOOKUP, sv("i-abc"), "i-abc"),
    (T.LOOKUP, "Jone Jones", "Jone Jones"),
    (T.LOOKUP, "Jane Marie Doe ", "Jane Marie Doe"),
]


@pytest.mark.parametrize(("t", "raw", "expected"), CODA_EXAMPLES)
def test_canon_from_coda(t: ColumnType, raw: object, expected: Canon) -> None:
    """Each documented read form maps to the one canonical value."""
    assert normalize.canon_from_coda(spec(t), raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [("", None), (None, None), (False, False)])
def test_unset_checkbox_can_stay_none(raw: object, expected: Canon) -> None:
    """With checkbox_unset_is_false=False an unset (greyed) checkbox is None, not False."""
    s = spec(T.CHECKBOX, checkbox_unset_is_false=False)
    assert normalize.canon_from_coda(s, raw) == expected
    assert normalize.canon_from_sql(s, raw if raw != "" else None) == expected


def test_date_is_not_converted_to_utc() -> None:
    """Moscow midnight is the previous day in UTC; the calendar day must not move."""
    assert normalize.canon_from_coda(spec(T.DATE), "2024-01-05T00:00:00.000+03:00") == "2024-01-05"


CODA_ERRORS: list[tuple[ColumnType, object, str]] = [
    (T.DATE, "31/31/2024", "as a date (expected YYYY-MM-DD, M/D/YYYY or DD.MM.YYYY)"),
    (T.DATE, "2024-13-01", "as a date"),
    (T.DATE, "2024-01-05x", "as a date"),
    (T.DATE, "1/5/24", "as a date"),
    (T.DATE, "tomorrow", "as a date"),
    (T.DATE, 20240105, "as a date"),
    (T.NUMBER, True, "a checkbox value is not a number"),
    (T.NUMBER, {"amount": 1}, "as a number (expected"),
    (T.NUMBER, "abc", "as a number"),
    (T.NUMBER, "NaN", "not a finite number"),
    (T.NUMBER, "-Infinity", "not a finite number"),
    (T.NUMBER, float("inf"), "not a finite number"),
    (T.NUMBER, "1e999999999", "out of range"),
    (T.NUMBER, [1], "as a number"),
    (T.PERCENT, "fifty%", "as a percent"),
    (T.CURRENCY, "1.234,5", "as a currency amount"),
    (T.CURRENCY, "12,5", "as a currency amount"),
    (T.NUMBER, "1,2345", "as a number"),
    (T.CURRENCY, {"@type": "MonetaryAmount", "currency": "USD"}, "has no amount"),
    (T.CURRENCY, {"amount": "lots"}, "as a currency amount"),
    (T.CURRENCY, False, "a checkbox value is not a number"),
    (T.DATETIME, "yesterday", "as a date and time"),
    (T.DATETIME, 12, "as a date and time"),
    (T.TIME, "25:00", "as a time"),
    (T.TIME, "6:60 AM", "as a time"),
    (T.TIME, "13:00 PM", "as a time"),
    (T.TIME, "0:30 AM", "as a time"),
    (T.TIME, "noon", "as a time"),
    (T.TIME, "1899-12-30T", "as a time"),
    (T.CHECKBOX, "yes", "as a checkbox"),
    (T.CHECKBOX, 1, "as a checkbox"),
    (T.CHECKBOX, [True], "as a checkbox"),
    (T.TEXT, {"a": 1}, "as text"),
    (T.TEXT, ["x"], "as text"),
    (T.TEXT, True, "a checkbox value"),
    (T.SELECT, {"id": 1}, "as a select option"),
    (T.SELECT, ["a"], "as a select option"),
    (T.MULTISELECT, [[["a"]]], "nested more than one level"),
    (T.MULTISELECT, True, "as select options"),
    (T.PERSON, {**PERSON}, "neither an email nor a name"),
    (T.PEOPLE, [{**PERSON}], "neither an email nor a name"),
    (T.LINK, {"@type": "WebPage", "name": "x"}, "as a link"),
    (T.LOOKUP, {**ROW_REF, "name": "x"}, "as a row reference"),
    (T.LOOKUPS, [{**ROW_REF, "name": "x"}], "as row references"),
    (T.EMAIL, [], "as an email address"),
]


@pytest.mark.parametrize(("t", "raw", "fragment"), CODA_ERRORS)
def test_canon_from_coda_errors(t: ColumnType, raw: object, fragment: str) -> None:
    """Unreadable cells raise RowError naming the column, the value and what was expected."""
    with pytest.raises(RowError) as info:
        normalize.canon_from_coda(spec(t), raw)
    assert info.value.column == "col"
    assert fragment in info.value.reason
    assert info.value.reason.startswith("cannot read ")


def test_error_message_reads_well() -> None:
    """The message a person sees for a bad date."""
    with pytest.raises(RowError) as info:
        normalize.canon_from_coda(spec(T.DATE), "31/31/2024")
    assert str(info.value) == (
        "column 'col': cannot read '31/31/2024' as a date "
        "(expected YYYY-MM-DD, M/D/YYYY or DD.MM.YYYY)"
    )


def test_long_values_are_shortened_in_messages() -> None:
    """A huge bad value does not flood the quarantine reason."""
    with pytest.raises(RowError) as info:
        normalize.canon_from_coda(spec(T.NUMBER), "x" * 10_000)
    assert len(info.value.reason) < 200


@pytest.mark.parametrize(
    ("zone", "raw", "expected"),
    [
        ("Europe/Moscow", "1899-12-30T06:51:43.000+02:30", "06:52:00"),  # LMT +02:30:17
        ("Europe/Moscow", "1899-12-29T23:59:43.000+02:30", "00:00:00"),  # across midnight
        ("Europe/Kiev", "1899-12-30T06:51:56.000+02:02", "06:52:00"),  # +02:02:04
        ("America/Sao_Paulo", "1899-12-30T06:52:28.000-03:06", "06:52:00"),  # -03:06:28
        ("America/New_York", "1899-12-30T06:52:30.000-05:00", "06:52:30"),  # exact offset
        ("Europe/Moscow", "1899-12-30T06:52:00.000-08:00", "06:52:00"),  # wrong zone: as read
        ("Europe/Moscow", "6:52 AM", "06:52:00"),
        ("Europe/Moscow", "", None),
    ],
)
def test_time_with_doc_timezone_undoes_the_lmt_skew(zone: str, raw: str, expected: Canon) -> None:
    """With the doc's zone known, a time is read from the instant (sub-minute fixes only)."""
    assert normalize.canon_from_coda(spec(T.TIME, doc_timezone=zone), raw) == expected


def test_unknown_doc_timezone_is_a_row_error() -> None:
    """A misspelt zone is reported against the column, not as a crash."""
    with pytest.raises(RowError, match="unknown doc_timezone 'Mars/Olympus'"):
        normalize.canon_from_coda(spec(T.TIME, doc_timezone="Mars/Olympus"), "06:52")


def test_time_without_doc_timezone_takes_the_wall_time() -> None:
    """Without the zone the printed wall time is the value (the skew stays visible)."""
    raw = "1899-12-30T06:51:43.000+02:30"
    assert normalize.canon_from_coda(spec(T.TIME), raw) == "06:51:43"


# --- the recorded live listing (S17) ----------------------------------------------------------

RECORDED_TYPES = {
    "Name": T.TEXT,
    "Role": T.TEXT,
    "Start Date": T.DATE,
    "End Date": T.DATE,
    "DOB": T.DATE,
    "Work Email": T.EMAIL,
    "Personal Email": T.EMAIL,
    "Departments": T.LOOKUPS,
    "ID": T.NUMBER,
    "Manager": T.LOOKUP,
    "Teams": T.LOOKUPS,
    "People": T.PERSON,
    "Work Phone": T.TEXT,
    "Years": T.NUMBER,
    "Expertise": T.LOOKUPS,
    "Bio": T.TEXT,
    "Short Bio": T.TEXT,
    "Status": T.TEXT,
}


def _recorded_rows() -> list[dict[str, object]]:
    path = RECORDED / "rows.test.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    data = json.loads(path.read_text(encoding="utf-8"))
    (listing,) = data["api"]["get"].values()
    rows: list[dict[str, object]] = [item["values"] for item in listing["response"]["items"]]
    return rows


def test_recorded_rows_canonicalise() -> None:
    """Every recorded simple-format cell of the mapped columns reads without error."""
    rows = _recorded_rows()
    columns = tuple(
        ColumnSpec(n.lower().replace(" ", "_"), n, t) for n, t in RECORDED_TYPES.items()
    )
    starts = set()
    for raw in rows:
        values, errors = normalize.canon_row_from_coda(columns, raw)
        assert errors == []
        for name, t in RECORDED_TYPES.items():
            cell, value = raw[name], values[name.lower().replace(" ", "_")]
            if cell == "":
                assert value is None
            elif t is T.DATE:
                assert isinstance(cell, str) and value == cell[:10]
                starts.add(value)
    assert "2020-10-21" in starts  # "2020-10-21T00:00:00.000-04:00", not the UTC day
    departments = {normalize.canon_from_coda(spec(T.LOOKUPS), r["Departments"]) for r in rows}
    assert ("Operations", "Sales") in departments  # "Sales,Operations " (whitespace kept by Coda)


# --- SQL values ---------------------------------------------------------------------------------

SQL_EXAMPLES: list[tuple[ColumnType, object, Canon]] = [
    *[(t, "", None) for t in T if t is not T.CHECKBOX],
    *[(t, None, None) for t in T if t is not T.CHECKBOX],
    (T.TEXT, "```kept```", "```kept```"),
    (T.TEXT, " x ", " x "),
    (T.NUMBER, 1.5, "1.5"),
    (T.NUMBER, 0.1, "0.1"),
    (T.NUMBER, 2.0, "2"),
    (T.NUMBER, 7, "7"),
    (T.NUMBER, Decimal("12.3400"), "12.34"),
    (T.NUMBER, Decimal("1E+3"), "1000"),
    (T.NUMBER, "12.50", "12.5"),
    (T.PERCENT, 0.25, "0.25"),
    (T.CURRENCY, Decimal("19.90"), "19.9"),
    (T.DATE, date(2024, 1, 5), "2024-01-05"),
    (T.DATE, datetime(2024, 1, 5, 23, 0), "2024-01-05"),
    (T.DATE, "2024-01-05", "2024-01-05"),
    (T.DATETIME, datetime(2024, 1, 5, 10, 0, 0, 123999), "2024-01-05T10:00:00.123Z"),
    (
        T.DATETIME,
        datetime(2024, 1, 5, 10, tzinfo=timezone(timedelta(hours=3))),
        "2024-01-05T07:00:00.000Z",
    ),
    (T.DATETIME, date(2024, 1, 5), "2024-01-05T00:00:00.000Z"),
    (T.DATETIME, "2024-01-05T10:00:00.000Z", "2024-01-05T10:00:00.000Z"),
    (T.TIME, time(6, 52, 0, 500), "06:52:00"),
    (T.TIME, timedelta(hours=6, minutes=52, seconds=1), "06:52:01"),
    (T.TIME, datetime(2024, 1, 5, 6, 52), "06:52:00"),
    (T.TIME, "06:52", "06:52:00"),
    (T.CHECKBOX, True, True),
    (T.CHECKBOX, 0, False),
    (T.CHECKBOX, 1, True),
    (T.CHECKBOX, "t", True),
    (T.CHECKBOX, None, False),
    (T.SELECT, " Active ", "Active"),
    (T.PERSON, "A@X.com", "a@x.com"),
    (T.MULTISELECT, ["b", "a", "b"], ("a", "b")),
    (T.MULTISELECT, ("b", "a"), ("a", "b")),
    (T.MULTISELECT, "b,a", ("a", "b")),
    (T.MULTISELECT, '["b,c", "a"]', ("a", "b,c")),
    (T.MULTISELECT, [], None),
    (T.PEOPLE, ["B@x.com", "a@x.com"], ("a@x.com", "b@x.com")),
    (T.LOOKUPS, ["i-2", "i-1"], ("i-1", "i-2")),
]


@pytest.mark.parametrize(("t", "value", "expected"), SQL_EXAMPLES)
def test_canon_from_sql(t: ColumnType, value: object, expected: Canon) -> None:
    """Each SQLAlchemy value type maps to the canonical value (naive datetimes are UTC)."""
    assert normalize.canon_from_sql(spec(t), value) == expected


SQL_ERRORS: list[tuple[ColumnType, object]] = [
    (T.NUMBER, date(2024, 1, 1)),
    (T.NUMBER, True),
    (T.NUMBER, Decimal("NaN")),
    (T.CURRENCY, float("nan")),
    (T.TEXT, b"bytes"),
    (T.TEXT, date(2024, 1, 1)),
    (T.DATE, 20240101),
    (T.DATE, time(1, 2)),
    (T.DATETIME, time(1, 2)),
    (T.DATETIME, "not a timestamp"),
    (T.TIME, "x"),
    (T.TIME, timedelta(days=1)),
    (T.TIME, date(2024, 1, 1)),
    (T.CHECKBOX, 2),
    (T.CHECKBOX, "maybe"),
    (T.SELECT, ["a"]),
    (T.SELECT, {"name": "a"}),
    (T.PERSON, {"email": "a@x.com"}),
    (T.MULTISELECT, {"a": 1}),
    (T.MULTISELECT, '["a", {"b": 1}]'),
    (T.MULTISELECT, "[1, 2"),
    (T.MULTISELECT, '[["a", ["b"]]]'),
    (T.LOOKUPS, 3.5j),
]


@pytest.mark.parametrize(("t", "value"), SQL_ERRORS)
def test_canon_from_sql_errors(t: ColumnType, value: object) -> None:
    """Values of the wrong type raise RowError naming the column."""
    with pytest.raises(RowError) as info:
        normalize.canon_from_sql(spec(t), value)
    assert info.value.column == "col"


# --- writing ------------------------------------------------------------------------------------

TO_CODA: list[tuple[ColumnType, Canon, object]] = [
    *[(t, None, "") for t in T if t is not T.CHECKBOX],
    (T.TEXT, "x", "x"),
    (T.NUMBER, "2", 2),
    (T.NUMBER, "1000", 1000),
    (T.NUMBER, "1.5", 1.5),
    (T.PERCENT, "0.5", 0.5),
    (T.CURRENCY, "12.34", 12.34),
    (T.DATE, "2024-01-05", "2024-01-05"),
    (T.DATETIME, "2024-01-05T10:00:00.000Z", "2024-01-05T10:00:00.000Z"),
    (T.TIME, "06:52:00", "06:52:00"),
    (T.CHECKBOX, True, True),
    (T.CHECKBOX, None, False),
    (T.SELECT, "Active", "Active"),
    (T.MULTISELECT, ("a", "b"), ["a", "b"]),
    (T.PERSON, "a@x.com", "a@x.com"),
    (T.LOOKUPS, ("i-1",), ["i-1"]),
]


@pytest.mark.parametrize(("t", "canon", "expected"), TO_CODA)
def test_to_coda(t: ColumnType, canon: Canon, expected: object) -> None:
    """What we write: numbers as JSON numbers, arrays as lists, "" clears a cell."""
    written = normalize.to_coda(spec(t), canon)
    assert written == expected and type(written) is type(expected)


def test_to_sql_refuses_malformed_canonical_strings() -> None:
    """to_sql parses dates and times, so a malformed canonical string is a RowError."""
    for t in (T.DATE, T.DATETIME, T.TIME):
        with pytest.raises(RowError, match="not a canonical"):
            normalize.to_sql(spec(t), "not a date")


def test_to_coda_clears_unset_checkbox() -> None:
    """A None checkbox is written as "" (unset) when unset is not False."""
    assert normalize.to_coda(spec(T.CHECKBOX, checkbox_unset_is_false=False), None) == ""


TO_SQL: list[tuple[ColumnType, Canon, object]] = [
    *[(t, None, None) for t in T if t is not T.CHECKBOX],
    (T.TEXT, "x", "x"),
    (T.NUMBER, "1.5", 1.5),
    (T.PERCENT, "0.5", 0.5),
    (T.CURRENCY, "12.30", Decimal("12.30")),
    (T.DATE, "2024-01-05", date(2024, 1, 5)),
    (T.DATETIME, "2024-01-05T10:00:00.123Z", datetime(2024, 1, 5, 10, 0, 0, 123000, tzinfo=UTC)),
    (T.TIME, "06:52:00", time(6, 52)),
    (T.CHECKBOX, False, False),
    (T.CHECKBOX, None, None),
    (T.MULTISELECT, ("a", "b"), ["a", "b"]),
    (T.EMAIL, "x@y.z", "x@y.z"),
]


@pytest.mark.parametrize(("t", "canon", "expected"), TO_SQL)
def test_to_sql(t: ColumnType, canon: Canon, expected: object) -> None:
    """What we store locally: float, Decimal, date, aware UTC datetime, time, bool, list."""
    value = normalize.to_sql(spec(t), canon)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, datetime):
        assert value.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("t", "canon"),
    [
        (T.NUMBER, True),
        (T.NUMBER, "many"),
        (T.DATE, 20240105),
        (T.TEXT, ("a",)),
        (T.MULTISELECT, "a"),
        (T.CHECKBOX, "true"),
    ],
)
def test_writers_refuse_non_canonical_values(t: ColumnType, canon: Canon) -> None:
    """A value that is not canonical for the column is a RowError on both writers."""
    for write in (normalize.to_coda, normalize.to_sql):
        with pytest.raises(RowError, match="not a canonical"):
            write(spec(t), canon)


# --- keys, rows, hash ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc", "abc"),
        ("```k-1```", "k-1"),
        (" ```k-1``` ", "k-1"),
        ("  ", None),
        ("", None),
        (None, None),
        (42, "42"),
    ],
)
def test_canon_key(raw: object, expected: str | None) -> None:
    """The sync key: text, fences and whitespace stripped, empty is None."""
    assert normalize.canon_key(raw) == expected


@pytest.mark.parametrize("raw", [{"a": 1}, True, 1.5, ["k"]])
def test_canon_key_errors(raw: object) -> None:
    """A key cell that is not text is a RowError."""
    with pytest.raises(RowError, match="sync key"):
        normalize.canon_key(raw)


COLUMNS = (
    ColumnSpec("name", "c-name", T.TEXT),
    ColumnSpec("qty", "c-qty", T.NUMBER),
    ColumnSpec("start", "c-start", T.DATE),
    ColumnSpec("calc", "c-calc", T.NUMBER, readonly=True),
)


def test_canon_row_from_coda_collects_errors() -> None:
    """Values are keyed by local name; a bad or missing cell is an error for that column."""
    raw = {"c-name": "```Ann```", "c-qty": True, "c-calc": 3}
    values, errors = normalize.canon_row_from_coda(COLUMNS, raw)
    assert values == {"name": "Ann", "calc": "3"}
    assert [e.column for e in errors] == ["qty", "start"]
    assert errors[1].reason == "column c-start missing from the Coda row (removed or renamed?)"


def test_canon_row_from_sql() -> None:
    """The local row is keyed by local column names."""
    row = {"name": "Ann", "qty": 2.0, "start": date(2024, 1, 5), "calc": None, "extra": 1}
    values, errors = normalize.canon_row_from_sql(COLUMNS, row)
    assert errors == []
    assert values == {"name": "Ann", "qty": "2", "start": "2024-01-05", "calc": None}
    values, errors = normalize.canon_row_from_sql(list(COLUMNS), {"name": "Ann"})
    assert [e.column for e in errors] == ["qty", "start", "calc"]


def test_row_plans_follow_the_columns() -> None:
    """Rows read with different column tuples (or lists) use their own columns."""
    a = (ColumnSpec("x", "c-1", T.NUMBER),)
    b = (ColumnSpec("x", "c-1", T.TEXT),)
    for _ in range(2):
        assert normalize.canon_row_from_coda(a, {"c-1": 1.0})[0] == {"x": "1"}
        assert normalize.canon_row_from_coda(b, {"c-1": "1.0"})[0] == {"x": "1.0"}
        assert normalize.canon_row_from_coda(list(b), {"c-1": "1.0"})[0] == {"x": "1.0"}


HASH_ROW: dict[str, Canon] = {
    "qty": "1.5",
    "name": "Zoë",
    "tags": ("a", "b"),
    "done": True,
    "none": None,
    "calc": "7",
}
HASH_TEXT = '{"done":true,"name":"Zoë","none":null,"qty":"1.5","tags":["a","b"]}'
HASH_LITERAL = "e8850f51ce1158385dc850065b851d5d7f4e76ffe746815d52084a0cd197e801"


def test_row_hash_is_stable() -> None:
    """A fixed row has a fixed hash: sorted keys, tuples as lists, compact UTF-8 JSON."""
    assert normalize.row_hash(HASH_ROW, exclude=frozenset({"calc"})) == HASH_LITERAL
    assert HASH_LITERAL == hashlib.sha256(HASH_TEXT.encode()).hexdigest()


def test_row_hash_ignores_order_and_excluded_columns() -> None:
    """Key order does not matter; excluded (readonly) columns do not count; values do."""
    reordered = dict(reversed(list(HASH_ROW.items())))
    ro = frozenset({"calc"})
    assert normalize.row_hash(reordered, exclude=ro) == normalize.row_hash(HASH_ROW, exclude=ro)
    assert normalize.row_hash({**HASH_ROW, "calc": "8"}, exclude=ro) == HASH_LITERAL
    assert normalize.row_hash(HASH_ROW) != HASH_LITERAL
    assert normalize.row_hash({**HASH_ROW, "qty": "1.50"}, exclude=ro) != HASH_LITERAL
    assert normalize.row_hash({"x": None}) != normalize.row_hash({})
    assert normalize.row_hash({"x": "\ud800"})  # a lone surrogate from JSON does not crash


# --- round trips (hypothesis) -------------------------------------------------------------------

FORMATS = ("simple", "simpleWithArrays", "rich")
ROUND_TRIP = settings(max_examples=40, deadline=None)


def FENCED(s: str) -> bool:
    return len(s) >= 6 and s.startswith("```") and s.endswith("```")


def _ident(extra: Callable[[str], bool] = lambda s: True) -> st.SearchStrategy[str]:
    return (
        st.text(min_size=1, max_size=12)
        .map(str.strip)
        .filter(lambda s: bool(s) and not FENCED(s) and extra(s))
    )


def _utc_text(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _floats() -> st.SearchStrategy[Canon]:
    floats = st.floats(allow_nan=False, allow_infinity=False)
    return floats.map(lambda f: normalize.canon_from_sql(spec(T.NUMBER), f))


def _canon(t: ColumnType, fmt: str) -> st.SearchStrategy[Canon]:
    """Canonical values of one type (restricted where `fmt` is lossy)."""
    no_comma = (lambda s: "," not in s) if fmt == "simple" else (lambda s: True)
    person = st.emails().map(str.lower) | _ident(lambda s: "@" not in s)
    row_id = st.from_regex(r"i-[A-Za-z0-9_-]{4,10}", fullmatch=True)
    money = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False)
    strategies: dict[ColumnType, st.SearchStrategy[Any]] = {
        T.TEXT: st.text(min_size=1).filter(lambda s: fmt == "rich" or not FENCED(s)),
        T.NUMBER: _floats(),
        T.PERCENT: _floats(),
        T.CURRENCY: money.map(lambda d: normalize.canon_from_sql(spec(T.CURRENCY), d)),
        T.DATE: st.dates(date(1000, 1, 1), date(9998, 12, 31)).map(date.isoformat),
        T.DATETIME: st.datetimes(datetime(1901, 1, 1), datetime(2200, 1, 1)).map(
            lambda d: _utc_text(d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))
        ),
        T.TIME: st.times().map(lambda x: x.strftime("%H:%M:%S")),
        T.CHECKBOX: st.booleans(),
        T.SELECT: _ident(),
        T.MULTISELECT: st.sets(_ident(no_comma), min_size=1, max_size=4),
        T.PERSON: person,
        T.PEOPLE: st.sets(person.filter(no_comma), min_size=1, max_size=4),
        T.EMAIL: _ident(lambda s: not s.lower().startswith("mailto:")),
        T.LINK: _ident(),
        T.LOOKUP: row_id,
        T.LOOKUPS: st.sets(row_id, min_size=1, max_size=4),
    }
    values = strategies[t].map(lambda v: tuple(sorted(v)) if isinstance(v, set) else v)
    return st.none() | values


def _coda_reads(t: ColumnType, written: object, fmt: str, tz: ZoneInfo) -> object:
    """Test model of the cell Coda returns after we wrote `written` (API-FACTS §8.2)."""
    if written == "" and not isinstance(written, bool):
        return ""  # cleared cell
    rich = fmt == "rich"
    if isinstance(written, list):
        if t is T.PEOPLE:
            return [_coda_reads(T.PERSON, w, fmt, tz) for w in written]
        if t is T.LOOKUPS:
            return [[sv(w)] for w in written]  # rich arrays may nest
        return ",".join(written) if fmt == "simple" else list(written)
    if t is T.TEXT:
        return f"```{written}```" if rich else written
    if t is T.CURRENCY:
        if rich:
            return {"@context": "http://schema.org", "@type": "MonetaryAmount", "amount": written}
        amount = Decimal(str(written))
        return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"
    if t is T.PERCENT and fmt == "simple":
        return f"{Decimal(str(written)) * 100}%"
    if t is T.DATE:
        assert isinstance(written, str)
        midnight = datetime.combine(date.fromisoformat(written), time(0), tzinfo=tz)
        return midnight.isoformat(timespec="milliseconds")
    if t is T.DATETIME:
        assert isinstance(written, str)
        return datetime.fromisoformat(written).astimezone(tz).isoformat(timespec="milliseconds")
    if t is T.TIME:
        assert isinstance(written, str)
        if fmt == "simple":
            wall = time.fromisoformat(written)
            return wall.strftime("%I:%M:%S %p").lstrip("0")  # "6:52:00 AM"
        odd = datetime.combine(date(1899, 12, 30), time.fromisoformat(written), tzinfo=tz)
        return odd.isoformat(timespec="milliseconds")  # LMT offsets like -04:56:02
    if t is T.PERSON and rich:
        assert isinstance(written, str)
        return (
            {**PERSON, "name": "Someone", "email": written}
            if "@" in written
            else {**PERSON, "name": written}
        )
    if t is T.LINK and rich:
        return {"@context": "http://schema.org", "@type": "WebPage", "url": written}
    if t is T.LOOKUP and rich:
        assert isinstance(written, str)
        return sv(written)
    return written


LOSSY = {T.PERSON, T.PEOPLE, T.LOOKUP, T.LOOKUPS}  # display names unless rich


@pytest.mark.parametrize(
    ("t", "fmt"), [(t, f) for t in T for f in FORMATS if f == "rich" or t not in LOSSY]
)
@ROUND_TRIP
@given(data=st.data())
def test_round_trip_through_coda(t: ColumnType, fmt: str, data: st.DataObject) -> None:
    """canon_from_coda(what Coda reads back after to_coda(c)) == c, per value format."""
    for unset_is_false in (True, False) if t is T.CHECKBOX else (True,):
        s = spec(t, checkbox_unset_is_false=unset_is_false)
        canon = data.draw(_canon(t, fmt))
        if t is T.CHECKBOX and canon is None and unset_is_false:
            canon = False
        tz = data.draw(st.sampled_from([NEW_YORK, MOSCOW]))
        read_back = _coda_reads(t, normalize.to_coda(s, canon), fmt, tz)
        assert normalize.canon_from_coda(s, read_back) == canon, read_back


@pytest.mark.parametrize("t", list(T))
@ROUND_TRIP
@given(data=st.data())
def test_round_trip_through_sql(t: ColumnType, data: st.DataObject) -> None:
    """canon_from_sql(to_sql(c)) == c for every canonical value."""
    for unset_is_false in (True, False) if t is T.CHECKBOX else (True,):
        s = spec(t, checkbox_unset_is_false=unset_is_false)
        canon = data.draw(_canon(t, "rich"))
        if t is T.CHECKBOX and canon is None and unset_is_false:
            canon = False
        assert normalize.canon_from_sql(s, normalize.to_sql(s, canon)) == canon


def test_dst_aware_offsets_read_as_the_same_day() -> None:
    """New York midnight is -05:00 in winter and -04:00 in summer; both read as the written day."""
    for day in ("2024-01-05", "2024-07-05"):
        read = _coda_reads(T.DATE, day, "rich", NEW_YORK)
        assert isinstance(read, str) and read.startswith(day + "T00:00:00.000-0")
        assert normalize.canon_from_coda(spec(T.DATE), read) == day


LMT_ZONES = [
    "Europe/Moscow",
    "Europe/Kiev",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "America/New_York",
]


def _skewed_1899(clock: time, zone: ZoneInfo) -> str:
    """Coda's reported bug (S9), as the emulator models it: the offset cut to whole minutes."""
    local = datetime.combine(date(1899, 12, 30), clock, tzinfo=zone)
    offset = local.utcoffset() or timedelta(0)
    cut = timezone(timedelta(minutes=int(offset.total_seconds() / 60)))
    return local.astimezone(cut).isoformat(timespec="milliseconds")


@ROUND_TRIP
@given(clock=st.times().map(lambda c: c.replace(microsecond=0)), zone=st.sampled_from(LMT_ZONES))
def test_round_trip_time_through_a_skewed_zone(clock: time, zone: str) -> None:
    """With doc_timezone set, a time written to an LMT-zone doc reads back exactly."""
    s = spec(T.TIME, doc_timezone=zone)
    canon = normalize.canon_from_sql(s, clock)
    written = normalize.to_coda(s, canon)
    assert isinstance(written, str)
    read_back = _skewed_1899(time.fromisoformat(written), ZoneInfo(zone))
    assert normalize.canon_from_coda(s, read_back) == canon, read_back
