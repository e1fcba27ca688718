"""Unit tests of the emulator's cell model: write parsing, read rendering, formulas, tokens."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daemon.emulator import tokens
from daemon.emulator.formulas import FormulaError, compile_formula
from daemon.emulator.model import ColumnSpec
from daemon.emulator.values import (
    VALUE_FORMATS,
    Cell,
    Link,
    PeopleDirectory,
    Person,
    Raw,
    RowRef,
    ValueContext,
    cell_to_json,
    is_value,
    iso_utc_ms,
    parse_cell,
    render_cell,
)

MOSCOW = ZoneInfo("Europe/Moscow")
NEW_YORK = ZoneInfo("America/New_York")


def ctx(tz: ZoneInfo = MOSCOW, **kw: Any) -> ValueContext:
    people = PeopleDirectory()
    people.add("ivan.petrov@example.com", "Иван Петров")
    return ValueContext(tz=tz, people=people, doc_browser_link="https://coda.io/d/_dDOC", **kw)


def col(kind: Any, **kw: Any) -> ColumnSpec:
    return ColumnSpec(id="c-x", name="X", type=kind, **kw)


TEXT = col("text")
NUMBER = col("number")
PERCENT = col("percent")
CURRENCY = col("currency", format_extra={"currencyCode": "USD", "precision": 2})
CHECKBOX = col("checkbox")
DATE = col("date")
DATETIME = col("dateTime")
TIME = col("time")
SELECT = col("select", options=("Участник", "Спикер"))
TAGS = col("select", is_array=True, options=("обучение", "спорт", "митап"))
PERSON = col("person")
EMAIL = col("email")
LINK = col("link")
LOOKUP = col("lookup", ref_table_id="grid-T")
ALL_TYPES = [TEXT, NUMBER, PERCENT, CURRENCY, CHECKBOX, DATE, DATETIME, TIME, SELECT, TAGS]
ALL_TYPES += [PERSON, EMAIL, LINK, LOOKUP]


def parse(column: ColumnSpec, raw: Any, context: ValueContext | None = None, **kw: Any) -> Any:
    return parse_cell(column, raw, context or ctx(), disable_parsing=kw.get("disable", False))


def render(
    column: ColumnSpec, value: Any, fmt: Any = "simple", context: ValueContext | None = None
) -> Any:
    return render_cell(column, value, fmt, context or ctx())


@pytest.mark.parametrize("column", ALL_TYPES, ids=lambda c: f"{c.type}{'[]' if c.is_array else ''}")
@pytest.mark.parametrize("fmt", VALUE_FORMATS)
def test_empty_cells_read_empty_string_in_every_format(column: ColumnSpec, fmt: Any) -> None:
    """An empty cell of any type reads "" (S17), whatever the value format."""
    assert render(column, None, fmt) == ""
    assert parse(column, "") is None
    assert parse(column, []) is None


def test_text_is_fenced_markdown_only_in_rich() -> None:
    """Plain text is wrapped in triple backticks in rich, bare in simple formats."""
    value = parse(TEXT, "Митап Python")
    assert render(TEXT, value, "simple") == "Митап Python"
    assert render(TEXT, value, "simpleWithArrays") == "Митап Python"
    assert render(TEXT, value, "rich") == "```Митап Python```"
    assert parse(TEXT, 12.0) == "12"
    assert parse(TEXT, True) == "true"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(12.5, 12.5), ("12.5", 12.5), ("1,234.5", 1234.5), (" 7 ", 7), (2, 2), ("abc", Raw("abc"))],
)
def test_numbers_parse_like_typed_input(raw: Any, expected: Any) -> None:
    """Numbers written as strings parse; unparseable text is kept as text."""
    assert parse(NUMBER, raw) == expected


def test_numbers_render_as_json_numbers_without_trailing_zero() -> None:
    """Integral values render as integers, as a JavaScript server prints them."""
    assert render(NUMBER, 2.0) == 2 and isinstance(render(NUMBER, 2.0), int)
    assert render(NUMBER, 1.5, "rich") == 1.5
    assert render(NUMBER, Raw("abc")) == "abc"


def test_percent_is_a_fraction() -> None:
    """Percent cells hold fractions: 0.5 stays 0.5; "50%" and "50" parse to 0.5."""
    assert parse(PERCENT, 0.5) == 0.5
    assert parse(PERCENT, "50%") == 0.5
    assert parse(PERCENT, "50") == 0.5
    assert render(PERCENT, 0.5, "rich") == 0.5


def test_currency_simple_is_formatted_rich_is_monetary_amount() -> None:
    """Currency reads "$12.34" in simple and a MonetaryAmount object in rich."""
    assert parse(CURRENCY, "$1,234.5") == 1234.5
    assert render(CURRENCY, 12.34) == "$12.34"
    assert render(CURRENCY, 1234.5) == "$1,234.50"
    assert render(CURRENCY, -3) == "-$3.00"
    assert render(CURRENCY, 42.42, "rich") == {
        "@context": "http://schema.org",
        "@type": "MonetaryAmount",
        "currency": "USD",
        "amount": 42.42,
    }


def test_checkbox_unset_reads_empty_written_false_reads_false() -> None:
    """An untouched checkbox reads ""; a written false reads false."""
    assert render(CHECKBOX, None) == ""
    assert render(CHECKBOX, parse(CHECKBOX, False)) is False
    assert render(CHECKBOX, parse(CHECKBOX, "true"), "rich") is True
    assert parse(CHECKBOX, "no") is False


@pytest.mark.parametrize(
    "raw", ["2024-01-05", "1/5/2024", "05.01.2024", "2024-01-05T00:00:00.000+03:00"]
)
def test_dates_parse_from_common_forms(raw: str) -> None:
    """ISO dates, M/D/YYYY, D.M.YYYY and doc-zone ISO timestamps all land on the same day."""
    assert parse(DATE, raw) == date(2024, 1, 5)


def test_dates_read_as_local_midnight_with_the_offset_of_that_date() -> None:
    """Date cells read as local midnight with the doc zone's DST-aware offset (S17)."""
    assert render(DATE, date(2024, 1, 5)) == "2024-01-05T00:00:00.000+03:00"
    ny = ctx(NEW_YORK)
    assert render(DATE, date(2024, 1, 5), "rich", ny) == "2024-01-05T00:00:00.000-05:00"
    assert render(DATE, date(2024, 7, 4), "simple", ny) == "2024-07-04T00:00:00.000-04:00"


def test_utc_timestamp_written_into_a_western_doc_lands_on_the_previous_day() -> None:
    """An ISO timestamp is converted to the doc zone before taking its calendar day."""
    assert parse(DATE, "2024-01-05T00:00:00Z", ctx(NEW_YORK)) == date(2024, 1, 4)


def test_datetimes_render_in_doc_zone_with_milliseconds() -> None:
    """dateTime cells read as ISO with ms and the doc-zone offset; naive input is local."""
    la = ctx(ZoneInfo("America/Los_Angeles"))
    value = parse(DATETIME, "2022-07-19T08:43:59", la)
    assert value == datetime(2022, 7, 19, 15, 43, 59, tzinfo=UTC)
    assert render(DATETIME, value, "simple", la) == "2022-07-19T08:43:59.000-07:00"


def test_times_read_as_1899_datetimes() -> None:
    """Time cells read as 1899-12-30 datetimes; LMT offsets with seconds give a skew (S9)."""
    la = ctx(ZoneInfo("America/Los_Angeles"))
    assert parse(TIME, "6:52 AM") == time(6, 52)
    assert render(TIME, time(6, 52), "simple", la) == "1899-12-30T06:52:00.000-08:00"
    assert render(TIME, time(6, 52)) == "1899-12-30T06:51:43.000+02:30"
    assert (
        render(TIME, time(6, 52), "simple", ctx(time_lmt_skew=False))
        == "1899-12-30T06:52:00.000+02:30:17"
    )
    assert parse(TIME, "1899-12-30T06:51:43.000+02:30") == time(6, 52)


def test_select_matches_options_case_insensitively() -> None:
    """Select values resolve to the option's spelling; unknown ones per config."""
    assert parse(SELECT, "спикер") == "Спикер"
    assert render(SELECT, "Спикер", "rich") == "Спикер"
    assert parse(SELECT, "Гость") == "Гость"
    assert parse(SELECT, "Гость", ctx(unknown_select="blank")) is None


@pytest.mark.parametrize("raw", [["спорт", "обучение"], "спорт, обучение", "спорт,обучение"])
def test_multi_select_written_as_array_or_comma_string(raw: Any) -> None:
    """isArray columns accept a JSON array or a comma-separated string."""
    value = parse(TAGS, raw)
    assert value == ("спорт", "обучение")
    assert render(TAGS, value, "simple") == "спорт,обучение"
    assert render(TAGS, value, "simpleWithArrays") == ["спорт", "обучение"]
    assert render(TAGS, value, "rich") == ["спорт", "обучение"]


def test_person_resolves_email_through_directory() -> None:
    """A person written by email gets the directory's name; rich is a Person object."""
    value = parse(PERSON, "Ivan.Petrov@example.com")
    assert isinstance(value, Person) and value.name == "Иван Петров"
    assert render(PERSON, value) == "Иван Петров"
    rich = render(PERSON, value, "rich")
    assert rich["@type"] == "Person" and rich["email"] == "ivan.petrov@example.com"
    assert isinstance(rich["userId"], int)


def test_unknown_person_email_gets_local_part_as_name() -> None:
    """An email outside the directory becomes a person named after its local part."""
    value = parse(PERSON, "anna.smirnova@example.com")
    assert value == Person("anna.smirnova", "anna.smirnova@example.com")
    assert "userId" not in render(PERSON, value, "rich")
    assert parse(PERSON, "Иван Петров") == parse(PERSON, "ivan.petrov@example.com")


def test_email_link_and_lookup_forms() -> None:
    """Email reads plain; link simple=url, rich=WebPage; lookup simple=name, rich=row."""
    assert render(EMAIL, parse(EMAIL, " a@b.c "), "rich") == "a@b.c"
    link = parse(LINK, "https://coda.io")
    assert render(LINK, link) == "https://coda.io"
    assert render(LINK, link, "rich")["@type"] == "WebPage"
    assert parse(LINK, "[Coda](https://coda.io)") == Link("https://coda.io", "Coda")
    ref = RowRef("grid-T", "i-abc", "Отдел кадров")
    lookups = ctx(
        resolve_row=lambda table, text: ref if text in ("Отдел кадров", "i-abc") else None
    )
    assert parse(LOOKUP, "Отдел кадров", lookups) == ref
    assert parse(LOOKUP, "nope", lookups) == Raw("nope")
    assert render(LOOKUP, ref, "simple", lookups) == "Отдел кадров"
    rich = render(LOOKUP, ref, "rich", lookups)
    assert (
        rich["additionalType"] == "row" and rich["rowId"] == "i-abc" and rich["tableId"] == "grid-T"
    )


def test_disable_parsing_stores_values_raw() -> None:
    """With disableParsing the written value is kept and read back as given."""
    assert parse(DATE, "2024-01-05", disable=True) == Raw("2024-01-05")
    assert render(DATE, Raw("2024-01-05")) == "2024-01-05"
    assert parse(TEXT, "x", disable=True) == "x"


def test_value_schema_check() -> None:
    """Only scalars and arrays nested one level are valid write values."""
    assert is_value("a") and is_value([1, ["a", True]])
    assert not is_value({"a": 1}) and not is_value([[["deep"]]]) and not is_value(None)


def test_control_json_and_timestamps() -> None:
    """Typed cells have a plain JSON form; timestamps are UTC ISO with ms and Z."""
    assert cell_to_json((date(2024, 1, 5), Person("A", "a@x"))) == [
        "2024-01-05",
        {"name": "A", "email": "a@x", "userId": None},
    ]
    assert iso_utc_ms(1782212315359) == "2026-06-23T10:58:35.359Z"


def test_formulas_year_and_today() -> None:
    """Year(thisRow.Дата) and Today()-based formulas evaluate; bad formulas are refused."""
    names = {"Дата": "c-d"}
    year = compile_formula("Year(thisRow.Дата)", names)
    cells: dict[str, Cell] = {"c-d": date(2024, 3, 1)}
    empty: dict[str, Cell] = {}
    assert year(cells.get, date(2026, 1, 1)) == 2024
    assert year(empty.get, date(2026, 1, 1)) is None
    age = compile_formula("Year(Today()) - Year(thisRow.[Дата])", names)
    assert age(cells.get, date(2026, 1, 1)) == 2
    assert age(cells.get, date(2027, 1, 1)) == 3
    assert compile_formula("Floor(7 / 2)", names)(empty.get, date(2026, 1, 1)) == 3
    with pytest.raises(FormulaError):
        compile_formula("Sum(thisRow.Нет)", names)


def test_tokens_are_unpadded_base64url_of_sorted_compact_json() -> None:
    """Tokens encode like the recorded ones: sorted keys, no spaces, no '=' padding."""
    token = tokens.encode({"sortBy": "createdAt", "limit": 5, "offset": 5})
    assert "=" not in token and "+" not in token and "/" not in token
    assert tokens.decode(token) == {"limit": 5, "offset": 5, "sortBy": "createdAt"}
    assert tokens.decode("not a token!") is None
    assert tokens.start_at(1782212315359) == 1782212315.359
    assert tokens.start_at(1782212315000) == 1782212315
    assert tokens.start_at_ms(1782212315.359) == 1782212315359
