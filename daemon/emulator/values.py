"""Cell values: write parsing "as if typed into the cell", and read rendering per format.

Reads follow API-FACTS §8.2 and the recorded responses: an empty cell reads "" in every format;
text in `rich` is Markdown with plain text fenced in triple backticks; dates read as local
midnight with the doc zone's offset for that date; arrays are comma-joined in `simple`, lists in
`simpleWithArrays`/`rich`; people/links/lookups/currency become JSON-LD objects in `rich`.
Parsing rules for writes are [U] in API-FACTS §8.3; the choices made here are documented per
type in `parse_scalar`. The typed cell model itself lives in `cells` (re-exported here).
Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from daemon.emulator.cells import (
    Cell,
    Link,
    PeopleDirectory,
    Person,
    Raw,
    RowRef,
    Scalar,
    ValueContext,
    cell_to_json,
    freeze,
    is_value,
    iso_utc_ms,
    js_number,
    number_text,
    thaw,
)

__all__ = [
    "VALUE_FORMATS",
    "Cell",
    "Link",
    "PeopleDirectory",
    "Person",
    "Raw",
    "RowRef",
    "Scalar",
    "ValueContext",
    "ValueFormat",
    "cell_to_json",
    "is_value",
    "iso_utc_ms",
    "js_number",
    "make_renderer",
    "parse_cell",
    "parse_scalar",
    "render_cell",
]

if TYPE_CHECKING:
    from daemon.emulator.model import ColumnSpec

ValueFormat = Literal["simple", "simpleWithArrays", "rich"]
VALUE_FORMATS: tuple[ValueFormat, ...] = ("simple", "simpleWithArrays", "rich")
SCHEMA_CONTEXT = "http://schema.org"
NUMERIC_TYPES = frozenset({"number", "percent", "currency", "slider", "scale"})
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "RUB": "₽", "JPY": "¥"}


# --------------------------------------------------------------------------------- parsing

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:,?\s+(.+))?$")
_DOT_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?\s*([AaPp][Mm])?$")
_MD_LINK = re.compile(r"^\[(.*)\]\((\S+)\)$")
_TRUE = frozenset({"true", "yes", "1", "x", "checked", "✓", "✔"})
_FALSE = frozenset({"false", "no", "0", "unchecked"})


def parse_cell(col: ColumnSpec, raw: Any, ctx: ValueContext, *, disable_parsing: bool) -> Cell:
    """A written `Value` -> the typed cell (None = empty). `""`, `[]` and null clear a cell."""
    if raw is None or raw == "" or raw == []:
        return None
    if disable_parsing:
        return raw if isinstance(raw, str) and col.type in ("text", "canvas") else Raw(freeze(raw))
    if col.is_array:
        items = _split_items(raw)
        parsed = tuple(p for p in (parse_scalar(col, item, ctx) for item in items) if p is not None)
        return parsed or None
    if isinstance(raw, list):
        raw = ",".join(str(thaw(v)) for v in _flatten(raw))
    return parse_scalar(col, raw, ctx)


def _flatten(raw: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in raw:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _split_items(raw: Any) -> list[Any]:
    if isinstance(raw, list):
        return _flatten(raw)
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return [raw]


def parse_scalar(col: ColumnSpec, raw: Any, ctx: ValueContext) -> Scalar | None:
    """One typed-in value for one column type.

    text/canvas/email: the string (numbers/booleans as their text). number/percent/currency:
    JSON numbers as is (percent numbers are fractions); strings may carry thousands separators,
    currency symbols, or a trailing "%" (percent strings without "%" are percentages: "50" ->
    0.5). checkbox: booleans, "true"/"false"/"yes"/"no"/"1"/"0". date: "YYYY-MM-DD", "M/D/YYYY",
    "D.M.YYYY" or an ISO timestamp (converted to the doc zone, then its calendar day). dateTime:
    ISO (naive = doc zone) or a date. time: "HH:MM[:SS]", "h:mm AM" or an ISO timestamp. select:
    option name, case-insensitive; unknown names per `ctx.unknown_select`. person: an email
    (resolved via the people directory) or a name. link: a URL or "[name](url)". lookup: the
    referenced row's display value or id. Anything unparseable is stored as `Raw` text.
    """
    kind = col.type
    if kind in ("text", "canvas"):
        return raw.strip("\r") if isinstance(raw, str) else number_text(raw)
    if kind in NUMERIC_TYPES:
        return _parse_number(raw, percent=kind == "percent")
    if kind == "checkbox":
        return _parse_checkbox(raw)
    text = raw.strip() if isinstance(raw, str) else None
    if text is None:
        return Raw(raw)
    if not text:
        return None
    parser = _TEXT_PARSERS.get(kind)
    if parser is None:
        return Raw(text)
    return parser(col, text, ctx)


def _parse_number(raw: Any, *, percent: bool) -> Scalar | None:
    if isinstance(raw, bool):
        return Raw(raw)
    if isinstance(raw, int | float):
        return raw
    text = str(raw).strip().replace("\u00a0", "").replace(" ", "")
    is_percent = text.endswith("%")
    text = text.rstrip("%").lstrip("$€£₽¥")
    if text.startswith("-") and text[1:2] in tuple("$€£₽¥"):
        text = "-" + text[2:]
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    try:
        number: int | float = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        return Raw(str(raw))
    if percent or is_percent:
        return js_number(number / 100)
    return number


def _parse_checkbox(raw: Any) -> Scalar | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return Raw(str(raw))


def _parse_iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1) if " " in text else text)
    except ValueError:
        return None


def _clock(text: str) -> time | None:
    match = _CLOCK.match(text.strip())
    if not match:
        return None
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if match[4]:
        hour = hour % 12 + (12 if match[4].lower() == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


def _calendar(text: str) -> tuple[date, time | None] | None:
    for pattern, order in ((_ISO_DATE, (1, 2, 3)), (_US_DATE, (3, 1, 2)), (_DOT_DATE, (3, 2, 1))):
        match = pattern.match(text)
        if match:
            try:
                day = date(int(match[order[0]]), int(match[order[1]]), int(match[order[2]]))
            except ValueError:
                return None
            rest = match[4] if pattern is _US_DATE else None
            clock = _clock(rest) if rest else None
            if rest and clock is None:
                return None
            return day, clock
    return None


def _parse_date(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    found = _calendar(text)
    if found:
        return found[0]
    moment = _parse_iso(text)
    if moment is None:
        return Raw(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(ctx.tz)
    return moment.date()


def _parse_datetime(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    found = _calendar(text)
    if found:
        day, clock = found
        moment = datetime.combine(day, clock or time(0), tzinfo=ctx.tz)
    else:
        parsed = _parse_iso(text)
        if parsed is None:
            return Raw(text)
        moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=ctx.tz)
    return moment.astimezone(UTC)


def _parse_time(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    clock = _clock(text)
    if clock is not None:
        return clock
    moment = _parse_iso(text)
    if moment is None:
        return Raw(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(ctx.tz)
    return moment.time().replace(microsecond=0)


def _parse_select(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    folded = text.casefold()
    for option in col.options:
        if option.casefold() == folded:
            return option
    return None if ctx.unknown_select == "blank" else text


def _parse_person(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    return ctx.people.resolve(text)


def _parse_email(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    return text


def _parse_link(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    match = _MD_LINK.match(text)
    return Link(url=match[2], name=match[1]) if match else Link(url=text)


def _parse_lookup(col: ColumnSpec, text: str, ctx: ValueContext) -> Scalar | None:
    ref = ctx.resolve_row(col.ref_table_id or "", text) if col.ref_table_id else None
    return ref if ref is not None else Raw(text)


_TEXT_PARSERS: dict[str, Callable[[ColumnSpec, str, ValueContext], Scalar | None]] = {
    "date": _parse_date,
    "dateTime": _parse_datetime,
    "time": _parse_time,
    "select": _parse_select,
    "person": _parse_person,
    "email": _parse_email,
    "link": _parse_link,
    "lookup": _parse_lookup,
}


# --------------------------------------------------------------------------------- rendering

Renderer = Callable[[Cell], Any]


def make_renderer(col: ColumnSpec, fmt: ValueFormat, ctx: ValueContext) -> Renderer:
    """A fast cell -> JSON function for one column and value format."""
    handlers = _scalar_handlers(col, fmt, ctx)
    scalar = _dispatch(handlers)
    simple_scalar = scalar if fmt != "rich" else _dispatch(_scalar_handlers(col, "simple", ctx))
    get = handlers.get

    def render(value: Cell) -> Any:
        if value is None:
            return ""
        handler = get(type(value))
        if handler is not None:
            return handler(value)
        if isinstance(value, tuple):
            if not value:
                return ""
            if fmt == "simple":
                return ",".join(_as_text(simple_scalar(v)) for v in value)
            return [scalar(v) for v in value]
        raise TypeError(f"cannot render {value!r}")

    return render


def _dispatch(handlers: dict[type, Callable[[Any], Any]]) -> Renderer:
    def scalar(value: Any) -> Any:
        handler = handlers.get(type(value))
        if handler is None:
            raise TypeError(f"cannot render {value!r}")
        return handler(value)

    return scalar


def render_cell(col: ColumnSpec, value: Cell, fmt: ValueFormat, ctx: ValueContext) -> Any:
    """One-off rendering (listings build renderers once per column instead)."""
    return make_renderer(col, fmt, ctx)(value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return number_text(value)
    return str(value)


def _scalar_handlers(
    col: ColumnSpec, fmt: ValueFormat, ctx: ValueContext
) -> dict[type, Callable[[Any], Any]]:
    """Renderers by the stored value's exact type (one dict lookup per cell)."""
    rich = fmt == "rich"
    tz, skew = ctx.tz, ctx.time_lmt_skew
    code = col.currency_code
    symbol = CURRENCY_SYMBOLS.get(code, code + " ")
    places = col.precision if col.precision is not None else 2

    def text(value: str) -> Any:
        return value

    def number(value: float) -> Any:
        return js_number(value)

    def money(value: float) -> Any:
        return _money(value, code, symbol, places, rich=rich)

    return {
        str: (lambda v: f"```{v}```") if rich and col.type in ("text", "canvas") else text,
        bool: text,
        int: money if col.type == "currency" else number,
        float: money if col.type == "currency" else number,
        datetime: lambda v: _iso_local(v, tz),
        date: lambda v: _local_midnight(v, tz),
        time: lambda v: _time_1899(v, tz, skew),
        Person: _person if rich else (lambda v: v.name),
        Link: _web_page if rich else (lambda v: v.url),
        RowRef: (lambda v: _row_value(v, ctx)) if rich else ctx.row_name,
        Raw: lambda v: thaw(v.value),
    }


def _money(value: float | int, code: str, symbol: str, places: int, *, rich: bool) -> Any:
    if rich:
        return {
            "@context": SCHEMA_CONTEXT,
            "@type": "MonetaryAmount",
            "currency": code,
            "amount": js_number(value),
        }
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{abs(value):,.{places}f}"


@functools.lru_cache(maxsize=65_536)
def _local_midnight(day: date, tz: ZoneInfo) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=tz).isoformat(timespec="milliseconds")


def _iso_local(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).isoformat(timespec="milliseconds")


def _time_1899(clock: time, tz: ZoneInfo, lmt_skew: bool) -> str:
    local = datetime(1899, 12, 30, clock.hour, clock.minute, clock.second, tzinfo=tz)
    offset = local.utcoffset() or timedelta(0)
    if lmt_skew and offset.total_seconds() % 60:
        minutes = int(offset.total_seconds() / 60)
        local = local.astimezone(timezone(timedelta(minutes=minutes)))
    return local.isoformat(timespec="milliseconds")


def _person(person: Person) -> dict[str, Any]:
    out: dict[str, Any] = {"@context": SCHEMA_CONTEXT, "@type": "Person", "name": person.name}
    if person.email:
        out["email"] = person.email
    if person.user_id is not None:
        out["userId"] = person.user_id
    return out


def _web_page(link: Link) -> dict[str, Any]:
    return {
        "@context": SCHEMA_CONTEXT,
        "@type": "WebPage",
        "name": link.name or link.url,
        "url": link.url,
    }


def _row_value(ref: RowRef, ctx: ValueContext) -> dict[str, Any]:
    table_url = f"{ctx.doc_browser_link}#_tu{ref.table_id}"
    return {
        "@context": SCHEMA_CONTEXT,
        "@type": "StructuredValue",
        "additionalType": "row",
        "name": ctx.row_name(ref),
        "url": f"{table_url}/_ru{ref.row_id}",
        "tableId": ref.table_id,
        "rowId": ref.row_id,
        "tableUrl": table_url,
    }
