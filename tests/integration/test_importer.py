"""`coda-sync import` against the emulator and SQLite (issue: import of exported rows)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from daemon import importer
from daemon.config import Settings
from daemon.emulator import DEFAULT_TOKEN, EmulatorConfig, EmulatorState, create_app
from daemon.errors import LockHeldError
from daemon.importer import ImportInputError, ImportSummary, run_import
from daemon.importer_formats import read_source
from daemon.store.db import open_store
from daemon.store.lock import acquire_lock_for_url
from tests.exports import ExportSet, build_exports, coda_plan, seed_coda
from tests.harness import EXAMPLE_CONFIG, World, world

pytestmark = pytest.mark.anyio

BINDING = "participation"
HINTS = {
    "id": "Ключ синхронизации",
    "employee_email": "Сотрудник",
    "email": "Email",
    "activity": "Мероприятие",
    "activity_date": "Дата",
    "role": "Роль",
    "hours": "Часы",
    "confirmed": "Подтверждено",
    "tags": "Теги",
    "comment": "Комментарий",
    "year": "Год",
}


ONE_ROW = (
    "employee_email,email,activity,activity_date,role,hours,confirmed,tags,comment\n"
    "a@example.com,,Митап,2024-01-05,,,,,\n"
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportSet]:
    """The 5,000-row export set, generated once for the module (in a temp dir)."""
    directory = tmp_path_factory.mktemp("exports")
    yield build_exports(directory)
    shutil.rmtree(directory, ignore_errors=True)


def counts(s: ImportSummary) -> dict[str, int]:
    names = (
        "read",
        "inserted",
        "updated",
        "unchanged",
        "matched",
        "keys_linked",
        "duplicates",
        "skipped",
        "rejected",
    )
    return {n: getattr(s, n) for n in names}


def expected_counts(exports: ExportSet, **kw: Any) -> dict[str, int]:
    e = exports.expected(**kw)
    return {n: getattr(e, n) for n in counts(ImportSummary("x"))}


async def db_figures(w: World) -> dict[str, Any]:
    """Rows, row states, key intents and the newest updated_at of the local side."""
    async with w.store.connect() as conn:

        async def one(sql: str) -> Any:
            return (await conn.execute(sa.text(sql))).scalar_one()

        return {
            "rows": await one("SELECT count(*) FROM participation"),
            "states": await one("SELECT count(*) FROM coda_sync_row_state"),
            "keys": await one("SELECT count(*) FROM coda_sync_mutations WHERE kind = 'key'"),
            "newest": await one("SELECT max(updated_at) FROM participation"),
        }


async def test_online_import_counts_exact_then_idempotent(
    tmp_path: Path, exports: ExportSet
) -> None:
    """5,000 rows with Coda holding some: exact summary, bad rows by line, re-import no-op."""
    plan = coda_plan(exports)
    async with world(tmp_path) as w:
        seed_coda(w.emu, plan)
        out = io.StringIO()
        first = await run_import(
            w.settings,
            BINDING,
            exports.files,
            client=w.client,
            out=out,
            progress=True,
            clock=w.clock,
        )
        assert counts(first) == expected_counts(exports, coda=plan)
        want = exports.expected(coda=plan)
        assert sorted(r.where for r in first.rejections) == sorted(want.rejected_where)
        for r in first.rejections:
            assert want.reasons[r.where] in r.reason, r
        assert first.exit_code == 0 and first.written
        text = out.getvalue()
        assert "checking: 1,000/5,000 rows" in text and "writing: " in text
        assert "'Отдел'" in text  # the unmapped column is reported
        shown = text.split("first 10 rejected row(s):")[1].splitlines()[1:11]
        assert all(line.strip().startswith(str(exports.directory)) for line in shown)
        print(first.render().splitlines()[-1])

        figures = await db_figures(w)
        in_sync = 400 + 100 + 50  # same + keyless + keyed in Coda but not in the file
        assert figures["rows"] == first.inserted
        assert figures["states"] == in_sync
        assert figures["keys"] == first.keys_linked == 100
        local = await w.local_rows()
        by_nk = {
            (v["employee_email"], v["activity"], v["activity_date"]): v for v in local.values()
        }
        for row in want.loaded:
            stored = by_nk[(row.person.email, row.activity, row.day.isoformat())]
            assert {k: stored[k] for k in row.canonical()} == row.canonical()
        for c in plan:  # rows Coda holds under a key are loaded under that key
            if c.key is not None:
                assert local[c.key]["activity"] == c.row.activity

        again = await run_import(
            w.settings, BINDING, exports.files, client=w.client, out=io.StringIO(), clock=w.clock
        )
        assert (again.inserted, again.updated, again.keys_linked) == (0, 0, 0)
        assert again.unchanged == first.inserted
        assert again.matched == first.matched
        assert not again.written
        assert await db_figures(w) == figures


async def test_dry_run_writes_nothing(tmp_path: Path, exports: ExportSet) -> None:
    """--dry-run prints the same summary and writes nothing, not even a new database file."""
    plan = coda_plan(exports)
    async with world(tmp_path) as w:
        seed_coda(w.emu, plan)
        fresh = tmp_path / "never-created.db"
        settings = _with_db(w.settings, f"sqlite+aiosqlite:///{fresh}")
        out = io.StringIO()
        dry = await run_import(
            settings, BINDING, exports.files, client=w.client, out=out, dry_run=True, clock=w.clock
        )
        assert counts(dry) == expected_counts(exports, coda=plan)
        assert not dry.written and "dry run: nothing was written" in out.getvalue()
        assert not fresh.exists()

        before = await db_figures(w)  # an existing database: still untouched
        dry2 = await run_import(
            w.settings,
            BINDING,
            exports.files,
            client=w.client,
            out=io.StringIO(),
            dry_run=True,
            clock=w.clock,
        )
        assert counts(dry2) == counts(dry)
        assert await db_figures(w) == before


async def test_strict_loads_nothing_when_a_row_is_bad(tmp_path: Path, exports: ExportSet) -> None:
    """--strict: any rejected row -> exit code 1 and no row loaded; clean files load."""
    async with world(tmp_path) as w:
        strict = await run_import(
            w.settings,
            BINDING,
            exports.files,
            client=w.client,
            out=io.StringIO(),
            strict=True,
            clock=w.clock,
        )
        assert strict.rejected > 0 and strict.exit_code == 1 and not strict.written
        assert (await db_figures(w))["rows"] == 0

        clean = tmp_path / "clean.csv"
        lines = (exports.files[1]).read_text(encoding="utf-8-sig").splitlines()
        clean.write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
        people = tmp_path / "people.csv"  # names in the CSV resolve through a people file
        people.write_text(
            "name,email\n" + "".join(f"{p.name},{p.email}\n" for p in exports.people),
            encoding="utf-8",
        )
        ok = await run_import(
            w.settings,
            BINDING,
            [clean],
            client=w.client,
            out=io.StringIO(),
            strict=True,
            people_files=[people],
            clock=w.clock,
        )
        assert ok.rejected == 0 and ok.exit_code == 0 and ok.inserted == ok.read


async def test_year_filter_counts_skipped_rows(tmp_path: Path, exports: ExportSet) -> None:
    """--year 2023 keeps rows dated 2023; the others count as skipped, bad dates as rejected."""
    plan = coda_plan(exports)
    async with world(tmp_path) as w:
        seed_coda(w.emu, plan)
        s = await run_import(
            w.settings,
            BINDING,
            exports.files,
            client=w.client,
            out=io.StringIO(),
            year=2023,
            clock=w.clock,
        )
        assert counts(s) == expected_counts(exports, year=2023, coda=plan)
        assert s.skipped > 2000
        async with w.store.connect() as conn:
            years = (
                await conn.execute(
                    sa.text("SELECT DISTINCT substr(activity_date, 1, 4) FROM participation")
                )
            ).scalars()
            assert set(years) == {"2023"}


async def test_offline_import_uses_name_hints_and_links_nothing(
    tmp_path: Path, exports: ExportSet
) -> None:
    """Offline: display names from hints; no Coda, so no states; select options unchecked."""
    async with world(tmp_path) as w:
        s = await run_import(
            w.settings,
            BINDING,
            exports.files,
            client=None,
            out=io.StringIO(),
            column_names=HINTS,
            clock=w.clock,
        )
        assert counts(s) == expected_counts(exports, online=False)
        figures = await db_figures(w)
        assert figures["rows"] == s.inserted and figures["states"] == 0


async def test_offline_without_hints_reports_missing_columns(
    tmp_path: Path, exports: ExportSet
) -> None:
    """A missing mapped column stops the import before anything is touched."""
    async with world(tmp_path) as w:
        with pytest.raises(ImportInputError) as err:
            await run_import(w.settings, BINDING, exports.files, client=None, out=io.StringIO())
        assert "participation-export.csv: mapped column 'activity'" in str(err.value)
        assert (await db_figures(w))["rows"] == 0


async def test_csv_formats_and_physical_line_numbers(tmp_path: Path) -> None:
    """BOM, `;`, blank lines, a two-line cell, local column names as headers; exact lines."""
    path = tmp_path / "hand.csv"
    text = (
        "\ufeffid;employee_email;email;activity;activity_date;role;hours;confirmed;tags;"
        "comment\n"
        "\n"
        ";Anna.Smith@example.com;anna.smith@example.com;Митап;05.01.2024;Спикер;1,5;TRUE;"
        'митап, обучение;"две\nстроки"\n'
        ";b@example.com;b@example.com;Митап;2024-02-30;Участник;1;false;;\n"
        ';c@example.com;c@example.com;Митап;1/5/2024;Участник;2;;;"a;b"\n'
    )
    path.write_text(text, encoding="utf-8")
    async with world(tmp_path) as w:
        s = await run_import(w.settings, BINDING, [path], client=None, out=io.StringIO())
        assert (s.read, s.inserted, s.rejected) == (3, 2, 1)
        assert [r.where for r in s.rejections] == [f"{path}:5"]  # 2 + a two-line cell
        rows = sorted((await w.local_rows()).values(), key=lambda v: str(v["employee_email"]))
        assert rows[0]["employee_email"] == "anna.smith@example.com"
        assert rows[0]["activity_date"] == "2024-01-05"
        assert rows[0]["tags"] == ("митап", "обучение")
        assert rows[0]["comment"] == "две\nстроки" and rows[0]["hours"] == "1.5"
        assert rows[1]["activity_date"] == "2024-01-05" and rows[1]["comment"] == "a;b"
        assert rows[1]["confirmed"] is False


def test_excel_sep_line_tabs_and_stray_cells(tmp_path: Path) -> None:
    """Excel's "sep=" line names the delimiter; tabs are sniffed; extra cells flag the row."""
    path = tmp_path / "excel.csv"
    path.write_text("sep=;\nДата;Мероприятие\n1/5/2024;Митап;лишнее\n", encoding="utf-8")
    src = read_source(path)
    assert (src.delimiter, src.headers) == (";", ["Дата", "Мероприятие"])
    assert src.rows[0].line == 3 and src.rows[0].problem is not None
    tsv = tmp_path / "tabs.tsv"
    tsv.write_text("Дата\tМероприятие\n1/5/2024\tМитап, осень\n", encoding="utf-8")
    src = read_source(tsv)
    assert src.delimiter == "\t" and src.rows[0].cells["Мероприятие"] == "Митап, осень"


def test_json_shapes_are_read(tmp_path: Path) -> None:
    """A list of pages, one page, a list of rows and one row all read; rows keep their ids."""
    row = {"id": "i-1", "values": {"c-Activity1": "x"}}
    shapes: list[Any] = [[{"items": [row]}, {"items": [row]}], {"items": [row]}, [row, row], row]
    for n, shape in enumerate(shapes):
        path = tmp_path / f"s{n}.json"
        path.write_text(json.dumps(shape), encoding="utf-8")
        src = read_source(path)
        assert src.headers == ["c-Activity1"] and src.rows[0].row_id == "i-1"
        assert src.rows[-1].where == f"{path} row {len(src.rows)} (id i-1)"
    bad = tmp_path / "bad.json"
    bad.write_text('{"items": [', encoding="utf-8")
    with pytest.raises(ImportInputError, match="not valid JSON"):
        read_source(bad)


# --------------------------------------------------------------------------- the CLI


def _with_db(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, database=settings.database.model_copy(update={"url": url}))


def _cli(tmp_path: Path, *argv: str, emu: EmulatorState) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="coda-sync")
    importer.add_import_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import", *argv])
    out = io.StringIO()
    transport = httpx.ASGITransport(app=create_app(emu))
    code = args.func(args, out=out, transport=transport)
    return code, out.getvalue()


def _config(tmp_path: Path) -> Path:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    text = text.replace(
        'url = "sqlite+aiosqlite:///coda-sync.db"',
        f'url = "sqlite+aiosqlite:///{tmp_path / "cli.db"}"',
    )
    path = tmp_path / "coda-sync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_exit_codes(
    tmp_path: Path, exports: ExportSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0 ok (with rejects), 1 --strict with rejects, 2 missing column, 78 config error."""
    import random

    from daemon.clock import FakeClock

    monkeypatch.setenv("CODA_API_TOKEN", DEFAULT_TOKEN)
    emu = EmulatorState(EmulatorConfig(), FakeClock(), random.Random(1))
    cfg = str(_config(tmp_path))
    csv_file = str(exports.files[1])

    code, text = _cli(tmp_path, "--config", cfg, "--strict", "--no-progress", csv_file, emu=emu)
    assert code == 1 and "nothing was loaded" in text
    code, text = _cli(
        tmp_path, "--config", cfg, "--binding", BINDING, "--no-progress", csv_file, emu=emu
    )
    assert code == 0 and "rejected" in text

    lacking = tmp_path / "lacking.csv"
    lacking.write_text("Сотрудник,Дата\nAnna,1/5/2024\n", encoding="utf-8")
    code, text = _cli(tmp_path, "--config", cfg, str(lacking), emu=emu)
    assert code == 2 and "is missing from the file" in text and "nothing was imported" in text
    code, text = _cli(tmp_path, "--config", cfg, str(tmp_path / "absent.csv"), emu=emu)
    assert code == 2 and "cannot read the file" in text

    code, text = _cli(tmp_path, "--config", cfg, "--binding", "nope", csv_file, emu=emu)
    assert code == 78 and "unknown binding" in text
    code, text = _cli(tmp_path, "--config", str(tmp_path / "none.toml"), csv_file, emu=emu)
    assert code == 78
    code, text = _cli(
        tmp_path, "--config", cfg, "--year", "2023", "--date-column", "hours", csv_file, emu=emu
    )
    assert code == 78 and "--date-column" in text


async def test_refuses_to_write_while_the_daemon_holds_the_lock(tmp_path: Path) -> None:
    """A running coda-sync holds the database's process lock: the import refuses to write."""
    async with world(tmp_path) as w:
        path = tmp_path / "one.csv"
        path.write_text(ONE_ROW, encoding="utf-8")
        with acquire_lock_for_url(w.settings.database.url):
            with pytest.raises(LockHeldError):
                await run_import(w.settings, BINDING, [path], client=None, out=io.StringIO())
            dry = await run_import(
                w.settings, BINDING, [path], client=None, out=io.StringIO(), dry_run=True
            )
            assert dry.inserted == 1  # a dry run only reads
        assert (await db_figures(w))["rows"] == 0


async def test_store_is_reopened_cleanly(tmp_path: Path) -> None:
    """The importer opens (and closes) its own store when none is given."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
    async with world(tmp_path, db_url=url) as w:
        path = tmp_path / "one.csv"
        path.write_text(ONE_ROW, encoding="utf-8")
        s = await run_import(w.settings, BINDING, [path], client=w.client, out=io.StringIO())
        assert s.inserted == 1
    store = await open_store(url)
    try:
        async with store.connect() as conn:
            n = (await conn.execute(sa.text("SELECT count(*) FROM participation"))).scalar_one()
        assert n == 1
    finally:
        await store.close()
