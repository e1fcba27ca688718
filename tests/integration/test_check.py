"""`coda-sync check`: every problem is found and named, online (emulator) and local (SQLite).

Most tests call `daemon.check.run` against an in-process emulator (httpx.ASGITransport); the
acceptance test runs the real command against `coda-sync emulator` over loopback HTTP.
"""

from __future__ import annotations

import copy
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon import check, config
from daemon.emulator import (
    DEFAULT_TOKEN,
    KEY_COLUMN,
    TABLE_ID,
    VIEW_ID,
    EmulatorConfig,
    build_emulator,
    create_app,
)
from tests.harness import example_config_data
from tests.integration.test_cli import ROOT, emulator

BAD_TOKEN = "not-a-valid-token-123456"

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, *, token: str = DEFAULT_TOKEN, **edits: Any) -> config.Settings:
    data = copy.deepcopy(example_config_data(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    binding = data["binding"][0]
    for column, change in edits.get("columns", {}).items():
        binding["columns"][column].update(change)
    binding.update(edits.get("binding", {}))
    data["database"].update(edits.get("database", {}))
    return config.parse(data, source="test.toml", env={"CODA_API_TOKEN": token})


async def _problems(
    settings: config.Settings, *, rows: int = 20, emu_config: EmulatorConfig | None = None,
    state: Any = None,
) -> tuple[list[str], list[str]]:  # fmt: skip
    """(problems as text, notes) of a check against an in-process emulator."""
    emu = state or build_emulator(seed_rows=rows, token=DEFAULT_TOKEN, config=emu_config)
    notes: list[str] = []
    found = await check.run(
        settings, transport=httpx.ASGITransport(app=create_app(emu)), note=notes.append
    )
    return [str(p) for p in found], notes


async def test_the_example_config_is_all_good(tmp_path: Path) -> None:
    """The example config matches the emulator's doc: no problem at all."""
    problems, notes = await _problems(_settings(tmp_path))
    assert problems == []
    assert any("token OK" in n for n in notes)
    assert any("20 rows in Coda, 0 without a sync key" in n for n in notes)
    assert any("created at first start" in n for n in notes)  # no SQLite file yet


async def test_wrong_column_id_and_wrong_type_are_both_reported(tmp_path: Path) -> None:
    """Two column problems in one binding: both reported, each naming binding and column."""
    settings = _settings(
        tmp_path, columns={"hours": {"coda": "c-Nope0001"}, "role": {"type": "date"}}
    )
    problems, _ = await _problems(settings)
    assert len(problems) == 2, problems
    hours = next(p for p in problems if "'hours'" in p)
    assert hours.startswith("binding 'participation', column 'hours' (c-Nope0001): no such column")
    assert "c-Hours0001 'Часы'" in hours  # the columns that do exist are listed
    role = next(p for p in problems if "'role'" in p)
    assert "configured type 'date' does not fit Coda column 'Роль' of type 'select'" in role


async def test_bad_token_is_named_and_local_checks_still_run(tmp_path: Path) -> None:
    """A 401 stops the online checks (all would fail alike) but not the local ones."""
    db = tmp_path / "c.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE participation (id TEXT PRIMARY KEY, updated_at TIMESTAMP)")
    settings = _settings(tmp_path, token=BAD_TOKEN, columns={"hours": {"coda": "c-Nope0001"}})
    problems, _ = await _problems(settings)
    assert problems[0] == (
        "coda (https://coda.io/apis/v1): the API token is invalid (401); online checks skipped"
    )
    local = problems[1:]
    assert local and all(p.startswith("binding 'participation', table 'participation'")
                         for p in local)  # fmt: skip
    assert any("column 'hours': missing" in p for p in local)
    assert BAD_TOKEN not in " ".join(problems)


async def test_view_readonly_and_key_column_problems(tmp_path: Path) -> None:
    """A view instead of the base table, readonly flags that do not match `calculated`, and a
    key column that is not text: each is reported."""
    settings = _settings(
        tmp_path,
        binding={"table_id": VIEW_ID, "coda_key_column": "c-Hours0001"},
        columns={"year": {"readonly": False}, "comment": {"readonly": True},
                 "hours": {"coda": "c-SyncKey01", "type": "text"}},
    )  # fmt: skip
    problems, _ = await _problems(settings)
    text = "\n".join(problems)
    assert "is a view, not a base table" in text
    assert "column 'year' (c-Year00001): Coda column 'Год' is a formula: set readonly" in text
    assert "column 'comment' (c-Comment01): readonly = true, but Coda column" in text
    assert "key column 'c-Hours0001': 'Часы' is a number column" in text


async def test_duplicate_keys_in_coda_are_reported(tmp_path: Path) -> None:
    """Two Coda rows carrying the same sync key (e.g. a row copied by hand) are a problem."""
    state = build_emulator(seed_rows=10, token=DEFAULT_TOKEN)
    rows = state.true_rows(TABLE_ID)
    key = rows[0]["values"][KEY_COLUMN]
    state.ui_update_row(TABLE_ID, rows[1]["id"], {KEY_COLUMN: key})
    state.flush(force=True, visible=True)
    problems, _ = await _problems(_settings(tmp_path), state=state)
    assert len(problems) == 1, problems
    assert problems[0].startswith("binding 'participation', key column 'c-SyncKey01': 1 duplicate")
    assert f"'{key}' x2" in problems[0]


async def test_over_size_limit_and_missing_table(tmp_path: Path) -> None:
    """A doc over the API size limit, and a table id that does not exist."""
    over = EmulatorConfig(over_api_size_limit=True)
    problems, _ = await _problems(_settings(tmp_path), emu_config=over)
    assert problems == [
        "doc 'Hr7-PaRtc1': 'HR: Участие' is over Coda's API size limit: the API cannot read "
        "its rows (make the doc smaller)"
    ]
    problems, _ = await _problems(_settings(tmp_path, binding={"table_id": "grid-Gone"}))
    assert problems == ["binding 'participation': table 'grid-Gone' not found in doc 'Hr7-PaRtc1'"]


async def test_local_table_must_exist_when_not_created(tmp_path: Path) -> None:
    """create_tables = false: a missing table (or a missing database file) is a problem."""
    settings = _settings(tmp_path, database={"create_tables": False})
    problems, _ = await _problems(settings)
    assert problems == [
        f"binding 'participation': table 'participation' does not exist: the SQLite file "
        f"'{tmp_path / 'c.db'}' does not exist yet (and create_table is off)"
    ]
    sqlite3.connect(tmp_path / "c.db").close()
    problems, _ = await _problems(settings)
    assert len(problems) == 1 and "does not exist" in problems[0], problems


def test_check_command_prints_every_problem(tmp_path: Path) -> None:
    """Acceptance: `coda-sync check` on a config with a wrong column id and a wrong column
    type prints both and exits 1; the same config with a bad token prints the 401 problem
    (column checks need a valid token) plus every local problem, never the token."""
    with emulator("--seed-rows", "5") as (url, _):
        text = (ROOT / "config" / "coda-sync.toml").read_text(encoding="utf-8")
        text = text.replace("https://coda.io/apis/v1", url)
        text = text.replace("coda-sync.db", str(tmp_path / "c.db"))
        text = text.replace('"c-Hours0001", type = "number"', '"c-Hours9999", type = "number"')
        text = text.replace('"c-Role00001", type = "select"', '"c-Role00001", type = "checkbox"')
        path = tmp_path / "coda-sync.toml"
        path.write_text(text, encoding="utf-8")
        with sqlite3.connect(tmp_path / "c.db") as conn:
            conn.execute("CREATE TABLE participation (id TEXT PRIMARY KEY, updated_at TIMESTAMP)")

        good = _run_check(path, DEFAULT_TOKEN)
        assert good.returncode == 1, good.stderr
        fails = [line for line in good.stdout.splitlines() if line.startswith("FAIL")]
        assert any("column 'hours' (c-Hours9999): no such column" in f for f in fails)
        assert any("column 'role' (c-Role00001): configured type 'checkbox'" in f for f in fails)
        assert any("table 'participation': column 'activity': missing" in f for f in fails)
        assert f"{len(fails)} problem(s) found" in good.stderr

        bad = _run_check(path, BAD_TOKEN)
        assert bad.returncode == 1
        assert "FAIL  coda (" in bad.stdout
        assert "the API token is invalid (401)" in bad.stdout
        assert "column 'activity': missing" in bad.stdout
        assert BAD_TOKEN not in bad.stdout + bad.stderr


def test_check_command_all_good(tmp_path: Path) -> None:
    """No problem: exit 0 and a short "all good" summary."""
    with emulator("--seed-rows", "5", "--keyless-rows", "1") as (url, _):
        text = (ROOT / "config" / "coda-sync.toml").read_text(encoding="utf-8")
        path = tmp_path / "coda-sync.toml"
        path.write_text(text.replace("https://coda.io/apis/v1", url).replace(
            "coda-sync.db", str(tmp_path / "c.db")), encoding="utf-8")  # fmt: skip
        done = _run_check(path, DEFAULT_TOKEN)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "6 rows in Coda, 1 without a sync key yet" in done.stdout
        assert done.stdout.splitlines()[-1].startswith("all good: ")


def _run_check(path: Path, token: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODA_")}
    env["CODA_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "daemon", "check", "--config", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _no_real_coda_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may pick up a real token from the developer's environment."""
    monkeypatch.delenv("CODA_API_TOKEN", raising=False)
