"""The `coda-sync` command line: parsing, exit codes, and the commands as real processes.

Process tests start `python -m daemon emulator --port 0` (real HTTP on loopback) and parse its
first stdout line, `emulator listening on http://127.0.0.1:PORT/apis/v1`, as any other test
or tool would; the daemon runs as `python -m daemon run` against it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon import cli, config
from daemon.emulator import DEFAULT_TOKEN, DOC_ID, KEY_COLUMN, TABLE_ID

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "coda-sync.toml"
TRIGGER = "trigger-token-for-tests-0123456789"
LISTENING = "emulator listening on "
ROWS = f"/docs/{DOC_ID}/tables/{TABLE_ID}/rows"


# --------------------------------------------------------------------------- helpers


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _coda_sync(*args: str, env: dict[str, str] | None = None,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _line_reader(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """A queue fed with `proc`'s stdout lines by a daemon thread (no select on buffered
    pipes: a second line may already sit in Python's buffer)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_line(lines: queue.Queue[str], timeout: float = 60.0) -> str:
    """The next stdout line, or fail after `timeout` seconds."""
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no output within {timeout} s") from None


def _stop(proc: subprocess.Popen[str], *, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the process did not stop on SIGTERM") from None


@contextmanager
def emulator(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`coda-sync emulator --port 0 ...` as a process; yields (base URL, process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "emulator", "--port", "0", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = _line_reader(proc)
        first = _read_line(lines)
        assert first.startswith(LISTENING), first
        assert _read_line(lines) == f"token: {DEFAULT_TOKEN}"
        yield first.removeprefix(LISTENING), proc
    finally:
        assert _stop(proc) == 0


def write_config(tmp_path: Path, api: str, *, port: int = 0, interval: float = 2.0) -> Path:
    """The example config, pointed at `api`, SQLite in `tmp_path` and a trigger token."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("https://coda.io/apis/v1", api)
    text = text.replace(
        '"sqlite+aiosqlite:///coda-sync.db"', f'"sqlite+aiosqlite:///{tmp_path}/t.db"'
    )
    text = text.replace("interval_seconds = 30", f"interval_seconds = {interval}")
    text = text.replace("port = 8787", f"port = {port}")
    text = text.replace('# trigger_token_env = "CODA_SYNC_TRIGGER_TOKEN"',
                        'trigger_token_env = "CODA_SYNC_TRIGGER_TOKEN"')  # fmt: skip
    path = tmp_path / "coda-sync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, token: str = DEFAULT_TOKEN, **params: Any) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, params=params, timeout=10)


# --------------------------------------------------------------------------- parsing


def test_every_command_parses_with_its_defaults() -> None:
    """Each subcommand parses; defaults are the documented ones."""
    parser = cli.build_parser()
    run = parser.parse_args(["run", "--config", "x.toml"])
    assert (run.command, run.config, run.log_level, run.debug) == ("run", "x.toml", None, False)
    once = parser.parse_args(["once", "-c", "x.toml", "--binding", "p", "--full", "--dry-run"])
    assert (once.binding, once.full, once.dry_run) == ("p", True, True)
    emu = parser.parse_args(["emulator"])
    assert (emu.host, emu.port, emu.seed_rows, emu.token) == ("127.0.0.1", 8080, 200, None)
    assert (emu.tz, emu.keyless_rows, emu.no_rate_limit) == ("Europe/Moscow", 0, False)
    demo = parser.parse_args(["demo"])
    assert (demo.rows, demo.speed, demo.keep) == (60, 1.0, None)
    trig = parser.parse_args(["trigger", "--url", "http://h:1", "--wait", "--log-level", "debug"])
    assert (trig.url, trig.config, trig.wait, trig.log_level) == ("http://h:1", None, True, "DEBUG")
    status = parser.parse_args(["status", "--json"])
    assert status.json and status.url is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["status", "--config", "a.toml", "--url", "http://x"],
        ["demo", "--speed", "0"],
        ["emulator", "--apply-delay", "-1"],
        ["run", "--log-level", "LOUD"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors are argparse's: exit 2 with a message on stderr."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_config_defaults_to_the_env_var_then_etc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config: $CODA_SYNC_CONFIG, else /etc/coda-sync/coda-sync.toml; the help
    texts name the real defaults."""
    monkeypatch.setenv("CODA_SYNC_CONFIG", str(tmp_path / "from-env.toml"))
    assert cli.main(["check"]) == 78
    assert "from-env.toml: cannot read the config file" in capsys.readouterr().err
    assert cli.DEFAULT_CONFIG_PATH_TEXT == config.DEFAULT_CONFIG_PATH
    assert cli.DEFAULT_EMULATOR_TOKEN_TEXT == DEFAULT_TOKEN


# --------------------------------------------------------------------------- config errors


BROKEN = """\
[coda]
token_env = "CODA_API_TOKEN"
read_limt = 90

[sync]
interval_seconds = -5
tie_break = "coin"

[[binding]]
name = "participation"
doc_id = "d"
table_id = "t"
local_table = "participation"
coda_key_column = "c-Key"

[binding.columns]
hours = { coda = "c-Hours", type = "float" }
"""


@pytest.mark.parametrize("command", ["run", "once", "check"])
def test_config_error_exits_78_listing_every_problem(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken config: exit 78 (EX_CONFIG), every problem named, no traceback."""
    path = tmp_path / "bad.toml"
    path.write_text(BROKEN, encoding="utf-8")
    assert cli.main([command, "--config", str(path)]) == 78
    err = capsys.readouterr().err
    for key in ("coda.read_limt", "sync.interval_seconds", "sync.tie_break",
                "binding[0].columns.hours.type"):  # fmt: skip
        assert key in err, err
    assert "4 problem(s)" in err
    assert "Traceback" not in err


def test_missing_token_and_missing_file_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset token variable and a missing config file are config errors too."""
    monkeypatch.delenv("CODA_API_TOKEN", raising=False)
    assert cli.main(["check", "--config", str(EXAMPLE)]) == 78
    assert "CODA_API_TOKEN is not set" in capsys.readouterr().err
    assert cli.main(["once", "--config", str(tmp_path / "nope.toml")]) == 78
    assert "cannot read the config file" in capsys.readouterr().err


def test_unknown_binding_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`once --binding` with a name that is not configured lists the configured ones."""
    monkeypatch.setenv("CODA_API_TOKEN", "x" * 20)
    assert cli.main(["once", "--config", str(EXAMPLE), "--binding", "nope"]) == 78
    assert "configured: participation" in capsys.readouterr().err


# --------------------------------------------------------------------------- emulator


def test_emulator_prints_its_url_and_serves_coda_with_auth() -> None:
    """`emulator` prints the listening line; the right token lists rows, a wrong one gets
    Coda's 401 JSON body; SIGTERM stops it with exit 0 (checked by the context manager)."""
    with emulator("--seed-rows", "7", "--keyless-rows", "2") as (url, _):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/apis/v1")
        ok = _get(url + ROWS, limit="100")
        assert ok.status_code == 200
        items = ok.json()["items"]
        assert len(items) == 9
        assert sum(1 for row in items if not row["values"][KEY_COLUMN]) == 2
        bad = _get(url + ROWS, token="wrong-token")
        assert bad.status_code == 401
        assert bad.json() == {
            "statusCode": 401,
            "statusMessage": "Unauthorized",
            "message": "The API token is invalid or has expired.",
        }
        assert httpx.get(url + ROWS, timeout=10).status_code == 401  # no token at all


# --------------------------------------------------------------------------- once


def test_once_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    """`once --dry-run` lists every planned action and sends no write to Coda nor
    writes a row locally; a real `once` then does what was planned."""
    with emulator("--seed-rows", "12", "--keyless-rows", "3", "--no-rate-limit") as (url, _):
        config = write_config(tmp_path, url)
        env = _env(CODA_API_TOKEN=DEFAULT_TOKEN, CODA_SYNC_TRIGGER_TOKEN=TRIGGER)
        root = url.removesuffix("/apis/v1")
        before = httpx.get(root + f"/_emulator/tables/{TABLE_ID}/rows", timeout=10).json()

        dry = _coda_sync("once", "--config", str(config), "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        lines = dry.stdout.splitlines()
        assert lines[0].startswith("DRY RUN participation: full scan; pulled +15 ")
        assert sum(1 for line in lines if "  pull  |  insert locally: " in line) == 15
        assert lines[-1] == "dry run: nothing was written to Coda or to the database"

        counters = httpx.get(root + "/_emulator/counters", timeout=10).json()["items"]
        assert {c["method"] for c in counters} == {"GET"}
        after = httpx.get(root + f"/_emulator/tables/{TABLE_ID}/rows", timeout=10).json()
        assert after == before
        with sqlite3.connect(tmp_path / "t.db") as db:
            assert db.execute("SELECT count(*) FROM participation").fetchone() == (0,)

        real = _coda_sync("once", "--config", str(config), env=env)
        assert real.returncode == 0, real.stderr
        assert real.stdout.startswith("participation: full scan; pulled +15 ")
        with sqlite3.connect(tmp_path / "t.db") as db:
            assert db.execute("SELECT count(*) FROM participation").fetchone() == (15,)


# --------------------------------------------------------------------------- run, status, trigger


@pytest.mark.slow
def test_run_status_trigger_and_clean_stop(tmp_path: Path) -> None:
    """The daemon as a process: status, trigger (--wait, wrong token, unknown binding),
    a second instance refused with 69, SIGTERM -> exit 0."""
    with emulator("--seed-rows", "10", "--apply-delay", "0.2", "--read-lag", "0.1") as (url, _):
        port = _free_port()
        config = write_config(tmp_path, url, port=port)
        env = _env(CODA_API_TOKEN=DEFAULT_TOKEN, CODA_SYNC_TRIGGER_TOKEN=TRIGGER)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait_ready(f"http://127.0.0.1:{port}")
            status = _coda_sync("status", "--config", str(config), "--json", env=env)
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["bindings"]["participation"]["cycles"] >= 1
            table = _coda_sync("status", "--url", f"http://127.0.0.1:{port}", env=env)
            assert "binding participation" in table.stdout

            waited = _coda_sync("trigger", "--config", str(config), "--wait", env=env)
            assert waited.returncode == 0, waited.stderr
            run_id = waited.stdout.splitlines()[0].split()[2]
            assert run_id.startswith("r-")
            assert f"run {run_id} (all bindings) succeeded: " in waited.stdout

            wrong = _coda_sync("trigger", "--config", str(config),
                               env=_env(CODA_SYNC_TRIGGER_TOKEN="not-the-right-token"))  # fmt: skip
            assert wrong.returncode == 1
            assert "401" in wrong.stderr and "not-the-right-token" not in wrong.stderr
            unknown = _coda_sync("trigger", "--config", str(config), "--binding", "x", env=env)
            assert unknown.returncode == 1
            assert "unknown binding (configured: participation)" in unknown.stderr

            second = _coda_sync("run", "--config", str(config), env=env)
            assert second.returncode == 69, second.stderr
            assert "holds" in second.stderr
        finally:
            code = _stop(daemon)
            assert daemon.stderr is not None
            log = daemon.stderr.read()
        assert code == 0, log
        assert TRIGGER not in log and DEFAULT_TOKEN not in log
        assert "Logging error" not in log

    gone = _coda_sync("trigger", "--url", f"http://127.0.0.1:{port}", env=_env())
    assert gone.returncode == 69
    assert "cannot reach the daemon" in gone.stderr


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the daemon at {url} did not become ready within {timeout} s")


# --------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_tells_the_whole_story_and_stops_cleanly(tmp_path: Path) -> None:
    """`coda-sync demo` (what `make demo` runs): every step arrives, no "!!" line, and
    Ctrl-C stops the daemon with exit 0, the emulator, and removes nothing kept."""
    keep = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "demo", "--speed", "3", "--keep", str(keep)],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = _line_reader(proc)
    seen: list[str] = []
    try:
        while not any("The story is over" in line for line in seen):
            seen.append(_read_line(lines, timeout=120))
        seen.append(_read_line(lines, timeout=60))  # the first status line of a cycle
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    while not lines.empty():
        seen.append(lines.get())
    text = "\n".join(seen)
    assert code == 0, text
    assert "!!" not in text
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"] {step} " in text, step
    assert "last writer wins" in text and "last-writer-wins" in text
    assert "coda_sync_api_requests_total" in text and "coda_sync_cycles_total" in text
    assert "daemon stopped with exit code 0 (clean stop)" in text
    assert (keep / "demo.db").is_file() and (keep / "coda-sync.toml").is_file()
    assert "Logging error" not in (keep / "daemon.log").read_text(encoding="utf-8")
