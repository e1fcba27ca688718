"""One canonical form per column type, computed identically from Coda cells and SQL values.

PURE: no I/O, no clock, no logging; must not import httpx, sqlalchemy or anyio.

Both sides of a binding are reduced to `model.Canon` before anything is compared or hashed, so
"changed" means "changed in content", never "rendered differently" (API-FACTS §8):

    type                   canonical                 Coda read forms accepted (simple | rich)
    ---------------------  ------------------------  --------------------------------------------
    every type             None  = empty             ""  (and JSON null)
    text                   str, inner text exact     "x" | "```x```" (one pair of fences stripped)
    number/percent/currency decimal string "1.5"     1.5, "1,234.5", "$12.34", "50%" (-> "0.5"),
                           (no exponent, no "-0")    {"@type": "MonetaryAmount", "amount": ..}
    date                   "YYYY-MM-DD"              "2024-01-05T00:00:00.000+03:00" (first 10
                                                     chars: NEVER converted to UTC), "2024-01-05",
                                                     "1/5/2024" (M/D/YYYY), "05.01.2024" (D.M.Y)
    datetime               "…T…:…:….mmmZ" in UTC    ISO 8601 with offset (naive = UTC)
    time                   "HH:MM:SS"                "1899-12-30T06:52:00.000-08:00" (the wall
                                                     time, see below), "06:52", "6:52 AM"
    checkbox               bool                      true/false/"true"/"false"; "" = unset -> False
                                                     (None if spec.checkbox_unset_is_false is False)
    select/email/link      str, stripped             string | {"name"} / {"email"|"url"} objects
    person                 lower-cased email         "a@b.c" | {"@type": "Person", "email", "name"}
                           (or the name if none)
    lookup                 row id "i-…"              {"@type": "StructuredValue", "rowId"} | name
    multiselect/people/    sorted unique tuple       list (nested one level) | "a,b"
    lookups                of item canonicals

Decisions (NB):
- Identifier-like values (select, person, email, link, lookup and array items) are stripped of
  surrounding whitespace and of one pair of ``` fences on both sides; text keeps its content
  exactly (fences are only stripped on the Coda side, where rich format adds them).
- `simple` is lossy: arrays are comma-joined (items containing "," split apart), people and
  lookups read as display names instead of emails / row ids. The engine reads `rich`.
- A percent is canonical as a fraction: 0.5 and "50%" are both "0.5". Formatted amounts use
  US separators ("1,234.5"); "1.234,5" is refused rather than misread.
- Time: Coda prints a time as a 1899-12-30 datetime; in zones whose 1899 offset was local mean
  time (Moscow +02:30:17) the offset loses its seconds and the wall clock reads a few seconds
  off. With `spec.doc_timezone` set the exact time is recovered from the instant (a sub-minute
  correction only); without it the wall time is taken as read.
- Checkbox: SQL NULL maps like Coda's unset "", so the two never differ only by that.
- Malformed input raises `RowError(reason, column=spec.local)`; the engine quarantines the row.

Speed: `converters_for(spec)` builds four closures per column once (cached); per cell the work
is one call with a type check first and no regular expressions.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import TypeVar
from zoneinfo import ZoneInfo

from daemon.errors import RowError
from daemon.model import Canon, ColumnSpec, ColumnType, Values

CodaValue = str | int | float | bool | list[str]
"""A value as written to Coda in `cells[].value` (Coda parses it as if typed)."""

Reader = Callable[[object], Canon]
Item = Callable[[object], str | None]
W = TypeVar("W")

_T = ColumnType
_CTX = Context(prec=60)  # wider than SQL NUMERIC(38, x): never round silently
_MAX_EXPONENT = 400  # covers every float; refuses "1e999999999" (a 1 GB string)
_SMALL_INT = 10**15
_NUMBER_CHARS = frozenset("0123456789.-")
_FENCE = "```"
_MISSING = object()

_WHAT: Mapping[ColumnType, tuple[str, str]] = {
    _T.TEXT: ("text", "expected a string"),
    _T.NUMBER: ("a number", "expected a number or a numeric string like '1,234.5'"),
    _T.PERCENT: ("a percent", "expected a fraction like 0.5 or a string like '50%'"),
    _T.CURRENCY: ("a currency amount", "expected a number, '$12.34' or a MonetaryAmount"),
    _T.DATE: ("a date", "expected YYYY-MM-DD, M/D/YYYY or DD.MM.YYYY"),
    _T.DATETIME: ("a date and time", "expected ISO 8601 like 2024-01-05T10:00:00.000+03:00"),
    _T.TIME: ("a time", "expected HH:MM, HH:MM:SS, h:mm AM/PM or 1899-12-30THH:MM:SS"),
    _T.CHECKBOX: ("a checkbox", "expected true, false or an empty cell"),
    _T.SELECT: ("a select option", "expected a string or an object with a name"),
    _T.MULTISELECT: ("select options", "expected a list or a comma-separated string"),
    _T.PERSON: ("a person", "expected an email, a name or a Person object"),
    _T.PEOPLE: ("people", "expected a list or a comma-separated string of people"),
    _T.EMAIL: ("an email address", "expected a string"),
    _T.LINK: ("a link", "expected a URL or a WebPage object"),
    _T.LOOKUP: ("a row reference", "expected a row id, a name or a StructuredValue"),
    _T.LOOKUPS: ("row references", "expected a list or a comma-separated string"),
}


class _Unreadable(ValueError):
    """A parser's own reason, used verbatim instead of the generic "cannot read" message."""


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


# --- scalar parsers (raise ValueError / ArithmeticError; the column wrapper words the error) ---


def _unfence(s: str) -> str:
    if len(s) >= 6 and s.startswith(_FENCE) and s.endswith(_FENCE):
        return s[3:-3]
    return s


def _ident(s: str) -> str | None:
    return _unfence(s.strip()).strip() or None


def _decimal(d: Decimal) -> str:
    if not d.is_finite():
        raise _Unreadable("not a finite number")
    if abs(d.adjusted()) > _MAX_EXPONENT:
        raise _Unreadable(f"out of range (more than {_MAX_EXPONENT} digits)")
    d = d.normalize(_CTX)
    s = format(d, "f")
    return "0" if s == "-0" else s


def _number_text(s: str) -> str | None:
    s = s.strip()
    if not s:
        return None
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    try:
        d = Decimal(s)
    except InvalidOperation:
        d = Decimal(_loose_number(s))
    return _decimal(d.scaleb(-2, _CTX) if percent else d)


def _loose_number(s: str) -> str:
    """A formatted amount ("-$1,234.50", "RUB 12", "(12.34)") as a plain decimal string.

    Thousands separators must be US-style (",ddd"): "1.234,5" is refused, never misread.
    """
    if s.startswith("(") and s.endswith(")"):  # accounting negative
        s = "-" + s[1:-1]
    for i, ch in enumerate(s):
        if ch == ",":
            group = s[i + 1 : i + 4]
            if len(group) != 3 or not group.isdigit() or s[i + 4 : i + 5].isdigit() or "." in s[:i]:
                raise ValueError(s)
    return "".join(ch for ch in s if ch in _NUMBER_CHARS) or "x"


def _number(raw: object) -> str | None:
    if type(raw) is int:
        return str(raw) if -_SMALL_INT < raw < _SMALL_INT else _decimal(Decimal(raw))
    if type(raw) is float:
        if raw.is_integer():
            if -_SMALL_INT < raw < _SMALL_INT:
                return str(int(raw))
            return _decimal(Decimal(repr(raw)))
        text = repr(raw)  # shortest repr: 0.1 stays "0.1"; already canonical (no trailing
        if "e" in text or "n" in text:  # zeros) unless it has an exponent or is inf/nan
            return _decimal(Decimal(text))
        return text
    if type(raw) is str:
        return _number_text(raw)
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise _Unreadable("a checkbox value is not a number")
    if isinstance(raw, Decimal):
        return _decimal(raw)
    raise ValueError(raw)


def _date_text(s: str) -> str | None:
    s = s.strip()
    if not s:
        return None
    if len(s) >= 10 and s[4] == "-" and s[7] == "-":
        head = s[:10]  # the calendar day in the doc's timezone: never convert to UTC
        if len(s) == 10 or s[10] in "T ":
            date.fromisoformat(head)
            return head
        raise ValueError(s)
    sep = "/" if "/" in s else "."
    parts = s.split(sep)
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(s)
    if len(parts[2]) != 4:
        raise ValueError(s)
    a, b, year = int(parts[0]), int(parts[1]), int(parts[2])
    month, day = (a, b) if sep == "/" else (b, a)  # M/D/YYYY (US) or DD.MM.YYYY
    return date(year, month, day).isoformat()


def _utc(dt: datetime) -> str:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.isoformat(timespec="milliseconds")[:-6] + "Z"  # truncates; drops "+00:00"


def _datetime_text(s: str) -> str | None:
    s = s.strip()
    return _utc(datetime.fromisoformat(s)) if s else None


def _clock(h: int, m: int, s: int) -> str:
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
        raise ValueError((h, m, s))
    return f"{h:02d}:{m:02d}:{s:02d}"


def _time_text(s: str) -> str | None:
    s = s.strip()
    if not s:
        return None
    t = s.find("T")
    if t >= 0:  # "1899-12-30T06:52:00.000-08:00": keep the wall time, ignore the offset
        end = t + 1
        while end < len(s) and s[end] in "0123456789:.":
            end += 1
        s = s[t + 1 : end]
    meridiem = s[-2:].upper()
    if meridiem in ("AM", "PM"):
        s = s[:-2].rstrip()
    parts = s.split(":")
    if len(parts) == 3:
        parts[2] = parts[2].split(".", 1)[0]  # fractions of a second are dropped
    if not 2 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(s)
    h, m, sec = int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else 0
    if meridiem in ("AM", "PM"):
        if not 1 <= h <= 12:
            raise ValueError(s)
        h = h % 12 + (12 if meridiem == "PM" else 0)
    return _clock(h, m, sec)


# --- per-type readers: Coda side ---


def _coda_text(raw: object) -> Canon:
    if type(raw) is str:
        return _unfence(raw) or None
    return _number(raw)  # None, or a number Coda typed as such in a text column


def _scalar_ident(raw: object) -> str | None:
    """A string or number as an identifier (select option, email, url, row id...)."""
    if type(raw) is str:
        return _ident(raw)
    return _number(raw)


def _keyed(field: str) -> Item:
    """A string, or `field` of a rich object: select {"name"}, WebPage {"url"}, row {"rowId"}."""

    def read(raw: object) -> str | None:
        if isinstance(raw, dict):
            raw = raw.get(field)
            if not isinstance(raw, str):
                raise ValueError(f"no {field}")
        return _scalar_ident(raw)

    return read


def _person(raw: object) -> str | None:
    if isinstance(raw, dict):
        email = raw.get("email")
        has_email = isinstance(email, str) and email.strip()
        value = _scalar_ident(email if has_email else raw.get("name"))
        if value is None:
            raise _Unreadable("the Person has neither an email nor a name")
    else:
        value = _scalar_ident(raw)
    return value.lower() if value is not None and "@" in value else value


def _email(raw: object) -> str | None:
    if isinstance(raw, dict):
        raw = raw.get("email") or raw.get("url") or raw.get("name")
    value = _scalar_ident(raw)
    if value is not None and value[:7].lower() == "mailto:":
        value = value[7:].strip() or None
    return value


def _collect(item: Item, parts: Sequence[object]) -> tuple[str, ...] | None:
    values = {v for v in map(item, parts) if v is not None}
    return tuple(sorted(values)) or None


def _flatten(raw: Sequence[object]) -> list[object]:
    parts: list[object] = []
    for x in raw:
        if isinstance(x, list | tuple):
            if any(isinstance(y, list | tuple) for y in x):
                raise _Unreadable("arrays nested more than one level deep")
            parts.extend(x)
        else:
            parts.append(x)
    return parts


def _coda_array(item: Item) -> Reader:
    def read(raw: object) -> Canon:
        if type(raw) is str:
            return _collect(item, _unfence(raw).split(","))
        if isinstance(raw, list):
            return _collect(item, _flatten(raw))
        if isinstance(raw, dict | int | float) and not isinstance(raw, bool):
            return _collect(item, (raw,))  # one rich object, or one number-like option
        if raw is None:
            return None
        raise ValueError(raw)

    return read


def _only_str(parse: Callable[[str], Canon]) -> Reader:
    def read(raw: object) -> Canon:
        if type(raw) is str:
            return parse(raw)
        if raw is None:
            return None
        raise ValueError(raw)

    return read


_DATE_STR = _only_str(_date_text)
_DATETIME_STR = _only_str(_datetime_text)
_TIME_STR = _only_str(_time_text)


def _coda_time(zone: ZoneInfo) -> Reader:
    """Time cells read through the doc's zone: the instant is exact, the printed wall is not."""

    def read(raw: object) -> Canon:
        wall = _TIME_STR(raw)
        if type(raw) is not str or not isinstance(wall, str) or "T" not in raw:
            return wall
        moment = datetime.fromisoformat(raw.strip())
        if moment.tzinfo is None:
            return wall
        local = moment.astimezone(zone)
        exact = _clock(local.hour, local.minute, local.second)
        drift = (_seconds(exact) - _seconds(wall)) % 86400
        # NB: only a sub-minute correction; a wrong zone must never move a time by hours.
        return exact if drift < 60 or drift > 86400 - 60 else wall

    return read


def _seconds(clock: str) -> int:
    return int(clock[:2]) * 3600 + int(clock[3:5]) * 60 + int(clock[6:8])


def _currency(raw: object) -> Canon:
    if isinstance(raw, dict):
        if "amount" not in raw:
            raise _Unreadable("the MonetaryAmount has no amount")
        raw = raw["amount"]
    return _number(raw)


def _checkbox(unset: bool | None, *, sql: bool) -> Reader:
    words = {"true": True, "false": False, "": unset}
    if sql:
        words |= {"1": True, "0": False, "t": True, "f": False}

    def read(raw: object) -> Canon:
        if raw is True or raw is False:
            return raw
        if raw is None:
            return unset
        if type(raw) is str:
            try:
                return words[raw.strip().lower()]
            except KeyError:
                raise ValueError(raw) from None
        if sql and type(raw) is int and raw in (0, 1):
            return raw == 1
        raise ValueError(raw)

    return read


# --- per-type readers: SQL side ---


def _sql_text(raw: object) -> Canon:
    if type(raw) is str:
        return raw or None
    return _number(raw)


def _sql_date(raw: object) -> Canon:
    if isinstance(raw, datetime):
        return raw.date().isoformat()
    if isinstance(raw, date):
        return raw.isoformat()
    return _DATE_STR(raw)


def _sql_datetime(raw: object) -> Canon:
    if isinstance(raw, datetime):
        return _utc(raw)
    if isinstance(raw, date):
        return _utc(datetime(raw.year, raw.month, raw.day))
    return _DATETIME_STR(raw)


def _sql_time(raw: object) -> Canon:
    if isinstance(raw, datetime):
        raw = raw.time()
    if isinstance(raw, time):
        return _clock(raw.hour, raw.minute, raw.second)
    if isinstance(raw, timedelta):  # MySQL TIME
        secs = int(raw.total_seconds())
        if not 0 <= secs < 86400:
            raise ValueError(raw)
        return _clock(secs // 3600, secs // 60 % 60, secs % 60)
    return _TIME_STR(raw)


def _no_dict(item: Item) -> Item:
    def read(raw: object) -> str | None:
        if isinstance(raw, dict | list | tuple):
            raise ValueError(raw)
        return item(raw)

    return read


def _sql_array(item: Item) -> Reader:
    def read(raw: object) -> Canon:
        if type(raw) is str:
            if raw.lstrip().startswith("["):  # a JSON array stored as text
                raw = json.loads(raw)
                if not isinstance(raw, list):
                    raise ValueError(raw)
                return _collect(item, _flatten(raw))
            return _collect(item, raw.split(","))
        if isinstance(raw, list | tuple):
            return _collect(item, _flatten(raw))
        if raw is None:
            return None
        raise ValueError(raw)

    return read


_SELECT, _LINK, _LOOKUP = _keyed("name"), _keyed("url"), _keyed("rowId")
_ITEMS: Mapping[ColumnType, Item] = {
    _T.SELECT: _SELECT,
    _T.MULTISELECT: _SELECT,
    _T.PERSON: _person,
    _T.PEOPLE: _person,
    _T.EMAIL: _email,
    _T.LINK: _LINK,
    _T.LOOKUP: _LOOKUP,
    _T.LOOKUPS: _LOOKUP,
}

_CODA_READERS: Mapping[ColumnType, Reader] = {
    _T.TEXT: _coda_text,
    _T.NUMBER: _number,
    _T.PERCENT: _number,
    _T.CURRENCY: _currency,
    _T.DATE: _DATE_STR,
    _T.DATETIME: _DATETIME_STR,
    _T.TIME: _TIME_STR,
    **{t: (_coda_array(f) if t.is_array else f) for t, f in _ITEMS.items()},
}

_SQL_READERS: Mapping[ColumnType, Reader] = {
    _T.TEXT: _sql_text,
    _T.NUMBER: _number,
    _T.PERCENT: _number,
    _T.CURRENCY: _number,
    _T.DATE: _sql_date,
    _T.DATETIME: _sql_datetime,
    _T.TIME: _sql_time,
    **{t: (_sql_array(_no_dict(f)) if t.is_array else _no_dict(f)) for t, f in _ITEMS.items()},
}


# --- writers ---


def _need_str(c: Canon) -> str:
    if type(c) is not str:
        raise ValueError(c)
    return c


def _coda_writer(spec: ColumnSpec) -> Callable[[Canon], CodaValue]:
    t = spec.type
    if t is _T.CHECKBOX:
        unset: CodaValue = False if spec.checkbox_unset_is_false else ""
        return lambda c: unset if c is None else bool(c) if isinstance(c, bool) else _fail(c)
    if t in (_T.NUMBER, _T.PERCENT, _T.CURRENCY):

        def number(c: Canon) -> CodaValue:
            if c is None:
                return ""
            d = Decimal(_need_str(c))
            return int(d) if d == d.to_integral_value() else float(d)

        return number
    if t.is_array:
        return lambda c: "" if c is None else list(c) if isinstance(c, tuple) else _fail(c)
    return lambda c: "" if c is None else _need_str(c)


def _sql_writer(spec: ColumnSpec) -> Callable[[Canon], object]:
    parsers: dict[ColumnType, Callable[[str], object]] = {
        _T.NUMBER: float,
        _T.PERCENT: float,
        _T.CURRENCY: Decimal,
        _T.DATE: date.fromisoformat,
        _T.DATETIME: datetime.fromisoformat,  # "…Z" -> aware UTC
        _T.TIME: time.fromisoformat,
    }
    parse = parsers.get(spec.type, str)
    if spec.type is _T.CHECKBOX:
        return lambda c: c if c is None or isinstance(c, bool) else _fail(c)
    if spec.type.is_array:
        return lambda c: None if c is None else list(c) if isinstance(c, tuple) else _fail(c)
    return lambda c: None if c is None else parse(_need_str(c))


def _fail(c: Canon) -> CodaValue:
    raise ValueError(c)


# --- per-column converters ---


@dataclass(frozen=True, slots=True)
class Converters:
    """The four conversions of one column, each raising `RowError` naming the column."""

    from_coda: Callable[[object], Canon]
    from_sql: Callable[[object], Canon]
    to_coda: Callable[[Canon], CodaValue]
    to_sql: Callable[[Canon], object]


def _reading(read: Reader, spec: ColumnSpec) -> Reader:
    noun, expected = _WHAT[spec.type]

    def convert(raw: object) -> Canon:
        try:
            return read(raw)
        except _Unreadable as exc:
            reason = f"{noun}: {exc}"
        except (ValueError, ArithmeticError, TypeError, KeyError):
            reason = f"{noun} ({expected})"
        raise RowError(f"cannot read {_show(raw)} as {reason}", column=spec.local)

    return convert


def _writing(write: Callable[[Canon], W], spec: ColumnSpec) -> Callable[[Canon], W]:
    def convert(c: Canon) -> W:
        try:
            return write(c)
        except (ValueError, ArithmeticError, TypeError) as exc:
            msg = f"{_show(c)} is not a canonical {spec.type.value} value"
            raise RowError(msg, column=spec.local) from exc

    return convert


@functools.cache
def converters_for(spec: ColumnSpec) -> Converters:
    """Build (once per spec) the column's converters."""
    unset = False if spec.checkbox_unset_is_false else None
    coda, sql = _CODA_READERS.get(spec.type), _SQL_READERS.get(spec.type)
    if spec.type is _T.CHECKBOX:
        coda, sql = _checkbox(unset, sql=False), _checkbox(unset, sql=True)
    elif spec.type is _T.TIME and spec.doc_timezone:
        try:
            coda = _coda_time(ZoneInfo(spec.doc_timezone))
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise RowError(
                f"unknown doc_timezone {spec.doc_timezone!r}", column=spec.local
            ) from None
    assert coda is not None and sql is not None
    return Converters(
        from_coda=_reading(coda, spec),
        from_sql=_reading(sql, spec),
        to_coda=_writing(_coda_writer(spec), spec),
        to_sql=_writing(_sql_writer(spec), spec),
    )


def canon_from_coda(spec: ColumnSpec, raw: object) -> Canon:
    """A Coda cell (simple, simpleWithArrays or rich) -> canonical; `RowError` if unreadable."""
    return converters_for(spec).from_coda(raw)


def canon_from_sql(spec: ColumnSpec, value: object) -> Canon:
    """A value as SQLAlchemy returns it -> canonical value; `RowError` if of the wrong type."""
    return converters_for(spec).from_sql(value)


def to_coda(spec: ColumnSpec, canon: Canon) -> CodaValue:
    """The value to write to Coda for a canonical value ("" clears the cell)."""
    return converters_for(spec).to_coda(canon)


def to_sql(spec: ColumnSpec, canon: Canon) -> object:
    """The Python value to store in the local column for a canonical value."""
    return converters_for(spec).to_sql(canon)


def canon_key(raw: object) -> str | None:
    """The sync key read from Coda's key column: fences and whitespace stripped; "" -> None."""
    if type(raw) is str:
        return _ident(raw)
    if raw is None:
        return None
    if type(raw) is int:
        return str(raw)
    raise RowError(f"cannot read {_show(raw)} as a sync key (expected text)")


# --- rows ---

_RowPlan = tuple[tuple[str, str, Reader], ...]
_BY_ID: dict[int, tuple[tuple[ColumnSpec, ...], tuple[_RowPlan, _RowPlan]]] = {}


@functools.lru_cache(maxsize=256)
def _plans_for(columns: tuple[ColumnSpec, ...]) -> tuple[_RowPlan, _RowPlan]:
    convs = [(c, converters_for(c)) for c in columns]
    coda = tuple((c.local, c.coda, v.from_coda) for c, v in convs)
    sql = tuple((c.local, c.local, v.from_sql) for c, v in convs)
    return coda, sql


def _row_plans(columns: Sequence[ColumnSpec]) -> tuple[_RowPlan, _RowPlan]:
    """Per-row column plans. NB: a binding's tuple is memoised by identity, which skips
    hashing ten ColumnSpecs per row (the entry holds the tuple, so its id stays unique)."""
    if type(columns) is not tuple:
        return _plans_for(tuple(columns))
    hit = _BY_ID.get(id(columns))
    if hit is not None and hit[0] is columns:
        return hit[1]
    if len(_BY_ID) > 256:
        _BY_ID.clear()
    plans = _plans_for(columns)
    _BY_ID[id(columns)] = (columns, plans)
    return plans


def _canon_row(
    plan: _RowPlan, raw: Mapping[str, object], missing: str
) -> tuple[dict[str, Canon], list[RowError]]:
    values: dict[str, Canon] = {}
    errors: list[RowError] = []
    for local, source, read in plan:
        cell = raw.get(source, _MISSING)
        if cell is _MISSING:
            errors.append(RowError(missing.format(source), column=local))
            continue
        try:
            values[local] = read(cell)
        except RowError as exc:
            errors.append(exc)
    return values, errors


def canon_row_from_coda(
    columns: Sequence[ColumnSpec], raw_values: Mapping[str, object]
) -> tuple[dict[str, Canon], list[RowError]]:
    """A Coda row's `values` (keyed by column id) -> (canonical values by local name, errors).

    Columns that failed are missing from the values; any error means "quarantine the row".
    """
    missing = "column {} missing from the Coda row (removed or renamed?)"
    return _canon_row(_row_plans(columns)[0], raw_values, missing)


def canon_row_from_sql(
    columns: Sequence[ColumnSpec], row: Mapping[str, object]
) -> tuple[dict[str, Canon], list[RowError]]:
    """A local row (keyed by column name) -> (canonical values, errors), like the Coda side."""
    return _canon_row(_row_plans(columns)[1], row, "column {} missing from the local row")


def row_hash(values: Values, *, exclude: frozenset[str] = frozenset()) -> str:
    """sha256 hex of the canonical JSON of `values` minus `exclude`; stable across processes."""
    payload = {k: v for k, v in values.items() if k not in exclude}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
