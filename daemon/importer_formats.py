"""Import files -> rows of raw cells: Coda CSV exports and saved API row listings (JSON).

Owns the formats people actually have, and nothing about what the rows mean:

    CSV   a table exported from Coda: a header row of column DISPLAY names, values as Coda
          prints them; UTF-8 with or without BOM; the delimiter (`,` `;` or tab) is taken from
          the header line (or from Excel's "sep=;" first line). Each row remembers the
          physical line it starts on (a quoted cell may span lines), so a bad row is
          reported where an editor shows it.
    JSON  what the API's row listing returned, saved to a file: a list of pages
          ``[{"items": [...]}, ...]``, one page ``{"items": [...]}``, a list of rows, or one row;
          any valueFormat (simple, simpleWithArrays, rich); `values` keyed by column id or by
          name (useColumnNames). Rows are numbered from 1 in file order and keep their row id.

It also maps a file's headers onto a binding's columns (`map_headers`), holds the name ->
email `PeopleDirectory` that turns people printed as display names back into emails, reads
decimal commas ("1,5"), and renders what the importer prints (`Progress`, `ImportSummary`).
Reads only the files it is given: no database, no HTTP. Canonicalising values is the job of
`daemon.normalize` (the importer calls it exactly as the engine does).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from daemon.config import Binding
from daemon.errors import CodaSyncError
from daemon.model import Canon, ColumnSpec

KEY_TARGET = "<sync key>"
"""What a header mapped to the binding's sync key column maps to (instead of a ColumnSpec)."""
DELIMITERS = (",", ";", "\t")
PROGRESS_EVERY_ROWS = 1000
"""Plain progress lines (not a terminal): one per this many rows."""
SHOW_REASONS = 10
"""Rejected rows listed in the summary."""
JSON_SUFFIXES = frozenset({".json"})
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})


class ImportInputError(CodaSyncError):
    """Raised when an import file cannot be read, or lacks a mapped column (exit code 2)."""


# --------------------------------------------------------------------------- rows and files


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One data row of an import file, its cells still as written there."""

    file: str
    """The file as named on the command line."""
    line: int
    """CSV: the physical line the record starts on (the header is line 1 or later).
    JSON: the row's 1-based position in the file (pages concatenated)."""
    cells: dict[str, object]
    """Cell values by header (CSV) or by `values` key (JSON)."""
    row_id: str | None = None
    """JSON: the Coda row id (`i-…`) when the listing carried it."""
    json: bool = False
    problem: str | None = None
    """A structural defect (e.g. more cells than headers): the row is rejected with it."""

    @property
    def where(self) -> str:
        """`file:line` for CSV; `file row N (id i-…)` for JSON."""
        if not self.json:
            return f"{self.file}:{self.line}"
        rid = f" (id {self.row_id})" if self.row_id else ""
        return f"{self.file} row {self.line}{rid}"


@dataclass(slots=True)
class SourceFile:
    """One parsed import file."""

    name: str
    kind: str
    """"csv" or "json"."""
    headers: list[str]
    """CSV: the header cells; JSON: every `values` key, in order of first appearance."""
    rows: list[SourceRow]
    delimiter: str | None = None


def read_source(path: str | Path) -> SourceFile:
    """Read one import file (CSV or JSON, chosen by suffix, else by the first character)."""
    p = Path(path)
    name = str(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImportInputError(f"{name}: cannot read the file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportInputError(
            f"{name}: not UTF-8 text (byte {exc.start}); export or save the file as UTF-8"
        ) from None
    suffix = p.suffix.lower()
    if suffix in JSON_SUFFIXES or (suffix not in CSV_SUFFIXES and text.lstrip()[:1] in "[{"):
        return read_json_text(name, text)
    return read_csv_text(name, text)


# --------------------------------------------------------------------------- CSV


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a CSV file, from its header line: the most frequent of `,` `;` tab.

    NB: not `csv.Sniffer`, which guesses from letters in Cyrillic headers now and then; a
    header of column names rarely contains any of the three, so counting is reliable.
    """
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def read_csv_text(name: str, text: str) -> SourceFile:
    """Parse a Coda CSV export (see the module docstring)."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    excel_sep = first.strip().lower().startswith("sep=") and len(first.strip()) == 5
    delimiter = first.strip()[4] if excel_sep else sniff_delimiter(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    headers: list[str] | None = None
    rows: list[SourceRow] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            if not any(cell.strip() for cell in record):
                continue  # blank lines (and rows of empty cells) are not data
            if excel_sep and headers is None and record[0].strip().lower().startswith("sep="):
                excel_sep = False  # Excel's "sep=;" line names the delimiter: not a header
                continue
            if headers is None:
                headers = [cell.strip() for cell in record]
                _check_headers(name, headers)
                continue
            rows.append(_csv_row(name, start, headers, record))
    except csv.Error as exc:
        raise ImportInputError(f"{name}:{reader.line_num}: not valid CSV: {exc}") from None
    if headers is None:
        raise ImportInputError(f"{name}: the file is empty (no header row)")
    return SourceFile(name, "csv", [h for h in headers if h], rows, delimiter)


def _check_headers(name: str, headers: Sequence[str]) -> None:
    seen: set[str] = set()
    for h in headers:
        if h and h in seen:
            raise ImportInputError(f"{name}: the header row names column {h!r} twice")
        seen.add(h)


def _csv_row(name: str, line: int, headers: Sequence[str], record: Sequence[str]) -> SourceRow:
    problem = None
    if len(record) > len(headers) and any(c.strip() for c in record[len(headers) :]):
        problem = f"{len(record)} cells but {len(headers)} headers (a stray delimiter or quote?)"
    cells: dict[str, object] = {}
    for i, h in enumerate(headers):
        if h:
            cells[h] = record[i] if i < len(record) else ""  # Excel drops trailing empties
    return SourceRow(name, line, cells, problem=problem)


# --------------------------------------------------------------------------- JSON


def read_json_text(name: str, text: str) -> SourceFile:
    """Parse a saved API row listing (see the module docstring)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportInputError(
            f"{name}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None
    rows: list[SourceRow] = []
    headers: dict[str, None] = {}
    for n, raw in enumerate(_json_rows(name, data), start=1):
        if not isinstance(raw, Mapping):
            raise ImportInputError(f"{name} row {n}: a row must be an object with 'values'")
        values = raw.get("values")
        if not isinstance(values, Mapping):
            raise ImportInputError(f"{name} row {n}: the row has no 'values' object")
        rid = raw.get("id")
        headers.update(dict.fromkeys(str(k) for k in values))
        rows.append(
            SourceRow(
                name,
                n,
                {str(k): v for k, v in values.items()},
                row_id=rid if isinstance(rid, str) and rid else None,
                json=True,
            )
        )
    return SourceFile(name, "json", list(headers), rows)


def _json_rows(name: str, data: object) -> Iterator[object]:
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise ImportInputError(f"{name}: expected a row listing (an object or a list)")
    for n, item in enumerate(data, start=1):
        if isinstance(item, Mapping) and "items" in item:
            items = item["items"]
            if not isinstance(items, list):
                raise ImportInputError(f"{name}: page {n} has no 'items' array")
            yield from items
        elif isinstance(item, Mapping) and "values" in item:
            yield item
        else:
            raise ImportInputError(
                f"{name}: element {n} is neither a page ({{'items': [...]}}) nor a row "
                "({'id': ..., 'values': {...}})"
            )


# --------------------------------------------------------------------------- header mapping


def label(text: str) -> str:
    """A header as compared: whitespace collapsed, case folded ("Дата " == "дата")."""
    return " ".join(text.split()).casefold()


@dataclass(slots=True)
class HeaderMap:
    """How one file's headers map onto a binding."""

    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    """header -> mapped column."""
    key_header: str | None = None
    """The header holding the sync key, if the file has one."""
    unmapped: list[str] = field(default_factory=list)
    missing: list[ColumnSpec] = field(default_factory=list)
    """Mapped columns the file lacks (only readonly ones may be missing)."""
    errors: list[str] = field(default_factory=list)


def map_headers(
    headers: Sequence[str], binding: Binding, names: Mapping[str, Sequence[str]]
) -> HeaderMap:
    """Map headers to columns by Coda column id, else display name, else local column name.

    `names` is Coda column id -> display names (from Coda's column list and the hints). The
    sync key column maps by its id, its display name, or the binding's `local_key`.
    """
    tiers: list[dict[str, ColumnSpec | str]] = [{}, {}, {}]  # id, display name, local name
    for spec in binding.columns:
        tiers[0].setdefault(label(spec.coda), spec)
        for name in names.get(spec.coda, ()):
            tiers[1].setdefault(label(name), spec)
        tiers[2].setdefault(label(spec.local), spec)
    tiers[0].setdefault(label(binding.coda_key_column), KEY_TARGET)
    for name in names.get(binding.coda_key_column, ()):
        tiers[1].setdefault(label(name), KEY_TARGET)
    tiers[2].setdefault(label(binding.local_key), KEY_TARGET)
    out = HeaderMap()
    taken: dict[str, str] = {}
    for header in headers:
        found = next((t[label(header)] for t in tiers if label(header) in t), None)
        if found is None:
            out.unmapped.append(header)
            continue
        ident = found if isinstance(found, str) else found.local
        if ident in taken:
            out.errors.append(f"columns {taken[ident]!r} and {header!r} both map to {ident!r}")
            continue
        taken[ident] = header
        if isinstance(found, str):
            out.key_header = header
        else:
            out.columns[header] = found
    mapped = {spec.local for spec in out.columns.values()}
    out.missing = [spec for spec in binding.columns if spec.local not in mapped]
    for spec in out.missing:
        if not spec.readonly:
            shown = names.get(spec.coda, ())
            also = f" / {shown[0]!r}" if shown else ""
            out.errors.append(
                f"mapped column {spec.local!r} ({spec.coda}{also}) is missing from the file"
            )
    return out


# --------------------------------------------------------------------------- people


def people_in(value: object) -> Iterator[tuple[str, str]]:
    """(name, email) of every Person object in a rich cell value (lists searched too)."""
    if isinstance(value, Mapping):
        name, email = value.get("name"), value.get("email")
        if isinstance(name, str) and isinstance(email, str) and name.strip() and "@" in email:
            yield name, email
    elif isinstance(value, list):
        for item in value:
            yield from people_in(item)


class PeopleDirectory:
    """Display name -> email(s), to turn people printed as names back into emails.

    Fed from rich Person objects (Coda's rows, rich JSON import files) and from an optional
    people file. Names compare like headers (`label`). A name held by two people (namesakes)
    resolves only if exactly one of their emails appears elsewhere in the same row (e.g. in
    an Email column); otherwise the row is rejected as ambiguous.
    """

    def __init__(self) -> None:
        self._emails: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._emails)

    def add(self, name: str, email: str) -> None:
        key = label(name)
        if key and "@" in email:
            self._emails.setdefault(key, set()).add(email.strip().lower())

    def add_all(self, pairs: Iterable[tuple[str, str]]) -> None:
        for name, email in pairs:
            self.add(name, email)

    def resolve(self, name: str, row_emails: Iterable[str] = ()) -> str:
        """The email of `name`; raises LookupError with a reason when unknown or ambiguous."""
        emails = self._emails.get(label(name))
        if not emails:
            raise LookupError(
                f"person {name!r} is not a known name (no Coda row, rich JSON row or people "
                "file names them): give the email instead"
            )
        if len(emails) == 1:
            return next(iter(emails))
        hinted = emails & {e.lower() for e in row_emails}
        if len(hinted) == 1:
            return next(iter(hinted))
        listed = ", ".join(sorted(emails))
        raise LookupError(f"person {name!r} is ambiguous ({listed}): give the email instead")


def read_people_file(path: str | Path) -> list[tuple[str, str]]:
    """A CSV of name and email per line (either order; a header line is skipped)."""
    source = read_source(path)
    if source.kind != "csv":
        raise ImportInputError(f"{path}: a people file must be CSV (name, email)")
    pairs: list[tuple[str, str]] = []
    rows = [source.headers] + [[str(v) for v in r.cells.values()] for r in source.rows]
    for cells in rows:
        emails = [c.strip() for c in cells if "@" in c]
        names = [c.strip() for c in cells if c.strip() and "@" not in c]
        if len(emails) == 1 and names:
            pairs.append((names[0], emails[0]))
    return pairs


def as_text(value: Any) -> str:
    """A cell for messages: short and on one line."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def decimal_comma(read: Callable[[object], Canon]) -> Callable[[object], Canon]:
    """A number reader that takes "1,5" (a decimal comma, as Russian Excel writes it) as 1.5.

    NB: `normalize` drops commas as thousands separators, which would make "1,5" 15. Only a
    single comma followed by other than three digits is taken as decimal: "1,500" stays 1500.
    """

    def read_number(raw: object) -> Canon:
        if isinstance(raw, str):
            head, sep, tail = raw.strip().partition(",")
            digits = head.removeprefix("-")
            if sep and digits.isdigit() and tail.isdigit() and len(tail) != 3:
                raw = f"{head}.{tail}"
        return read(raw)

    return read_number


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Rejection:
    """One row not loaded, and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(slots=True)
class ImportSummary:
    """What an import read, loaded and refused. `read` = inserted + updated + unchanged +
    duplicates + skipped + rejected; `matched` counts loaded rows that exist in Coda."""

    binding: str
    dry_run: bool = False
    strict: bool = False
    online: bool = False
    year: int | None = None
    files: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    matched: int = 0
    keys_linked: int = 0
    """Matched Coda rows without a sync key: the next cycle writes their new key into Coda."""
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_notes: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    written: bool = False
    """True when rows or states were committed to the database."""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """1 with --strict when rows were rejected (nothing was loaded), else 0."""
        return 1 if self.strict and self.rejected else 0

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        """The end-of-run report (plain text)."""
        if self.dry_run:
            outcome = "dry run: nothing was written"
        elif self.strict and self.rejected:
            outcome = "--strict: rows were rejected, nothing was loaded"
        else:
            outcome = "loaded" if self.written else "nothing to write"
        mode = "online" if self.online else "offline (Coda not consulted)"
        lines = [
            f"import into {self.binding!r}: {self.read:,} rows read from {self.files} file(s), "
            f"{mode}; {outcome}",
            f"  inserted          {self.inserted:>8,}",
            f"  updated           {self.updated:>8,}",
            f"  unchanged         {self.unchanged:>8,}",
            f"  matched to Coda   {self.matched:>8,}   (of the above; {self.keys_linked:,} get "
            "their sync key written back)",
            f"  duplicates        {self.duplicates:>8,}",
            f"  skipped (year)    {self.skipped:>8,}{f'   (not {self.year})' if self.year else ''}",
            f"  rejected          {self.rejected:>8,}",
        ]
        if self.rejections:
            shown = self.rejections[:SHOW_REASONS]
            lines.append(f"first {len(shown)} rejected row(s):")
            lines.extend(f"  {r}" for r in shown)
        if self.duplicate_notes:
            lines.append("first duplicate(s):")
            lines.extend(f"  {r}" for r in self.duplicate_notes[:3])
        lines.extend(f"warning: {w}" for w in self.warnings)
        lines.append(f"{self.seconds:.2f} s, {self.rows_per_second:,.0f} rows/s")
        return "\n".join(lines)


# --------------------------------------------------------------------------- progress


class Progress:
    """A bar on a terminal, a plain line every `PROGRESS_EVERY_ROWS` rows otherwise."""

    def __init__(self, out: TextIO, *, enabled: bool, total: int, what: str) -> None:
        self.out, self.enabled, self.total, self.what = out, enabled and total > 0, total, what
        self.tty = self.enabled and _isatty(out)
        self.started = time.monotonic()
        self._shown = -1.0
        self._shown_done = -1
        self._next_line = PROGRESS_EVERY_ROWS

    def update(self, done: int) -> None:
        """`done` of `total` rows are through."""
        if not self.enabled:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._shown < 0.1 and done < self.total:
                return
            self._shown, self._shown_done = now, done
            width = 30
            filled = width * done // self.total
            rate = done / max(now - self.started, 1e-6)
            self.out.write(
                f"\r{self.what} [{'#' * filled}{'.' * (width - filled)}] "
                f"{done:,}/{self.total:,} rows, {rate:,.0f} rows/s"
            )
            self.out.flush()
        elif done >= self._next_line:
            self.out.write(f"{self.what}: {done:,}/{self.total:,} rows\n")
            self._next_line = (done // PROGRESS_EVERY_ROWS + 1) * PROGRESS_EVERY_ROWS

    def finish(self) -> None:
        """End the bar's line (terminal) or write the last count (plain lines)."""
        if not self.enabled:
            return
        if self.tty:
            if self._shown_done != self.total:
                self.update(self.total)
            self.out.write("\n")
        elif self.total % PROGRESS_EVERY_ROWS:
            self.out.write(f"{self.what}: {self.total:,}/{self.total:,} rows\n")
        self.out.flush()


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
