"""`coda-sync`, the command line: argument parsing, exit codes, and calling the parts.

    coda-sync run      --config F                      the daemon (systemd ExecStart)
    coda-sync once     --config F [--binding B] [--full] [--dry-run]
    coda-sync check    --config F                      config + Coda + database pre-flight
    coda-sync status   [--config F | --url U] [--json] GET /status of a running daemon
    coda-sync trigger  [--config F | --url U] [--binding B] [--full] [--wait]
    coda-sync import   ...                             (daemon/importer.py, when present)
    coda-sync emulator [--port 0] ...                  the bundled Coda API emulator
    coda-sync demo     [--rows 60] [--speed 1] [--keep DIR]

Exit codes (sysexits.h where one fits; the systemd unit relies on 78):

    0   success / clean stop            69  EX_UNAVAILABLE: lock held, daemon unreachable
    1   failure (problems found, ...)   78  EX_CONFIG: the configuration is invalid
    2   bad command-line arguments      130 interrupted (Ctrl-C)

Errors go to stderr as ONE line (`coda-sync: error: ...`), with a traceback only under
`--debug`; known secrets are masked in anything printed. This module owns no sync logic:
it calls `service`, `check`, `demo` and the emulator; heavy modules are imported lazily so
`coda-sync status` and `coda-sync emulator` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from daemon import __version__
from daemon.errors import CodaAuthError, CodaSyncError, ConfigError, LockHeldError

if TYPE_CHECKING:
    from anyio import CancelScope

    from daemon.config import Settings
    from daemon.engine import CycleResult
    from daemon.model import KeyPlan

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_CONFIG = 78
EX_INTERRUPTED = 130

CONFIG_ENV = "CODA_SYNC_CONFIG"
"""Default of --config when set (then /etc/coda-sync/coda-sync.toml)."""
TRIGGER_TOKEN_ENV = "CODA_SYNC_TRIGGER_TOKEN"
"""Fallback for `trigger` when the config names no trigger token (or no config is given)."""
DEFAULT_CONTROL_URL = "http://127.0.0.1:8787"
#: For help texts only (the values live in daemon.config / daemon.emulator.config, which are
#: slow to import; tests check that these agree).
DEFAULT_CONFIG_PATH_TEXT = "/etc/coda-sync/coda-sync.toml"
DEFAULT_EMULATOR_TOKEN_TEXT = "coda-emulator-token"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FINISHED_STATES = frozenset({"succeeded", "failed"})


class CliError(Exception):
    """Raised for a failure the CLI reports as one line; carries the exit code."""

    def __init__(self, message: str, code: int = EX_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- helpers


MIN_SECRET_CHARS = 8
"""Shorter "secrets" are not masked: they would garble ordinary words in messages."""


class _Masker:
    """Replaces every known secret with *** in text the CLI prints (errors, tables)."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, *values: str | None) -> None:
        self.secrets.update(v for v in values if v and len(v) >= MIN_SECRET_CHARS)

    def __call__(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


_mask = _Masker()


def _err(message: str) -> None:
    print(f"coda-sync: {_mask(message)}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> Settings:
    """Load and validate the config named by --config (ConfigError lists every problem)."""
    from daemon import config

    settings = config.load(args.config or _default_config())
    trigger = settings.trigger_token
    _mask.add(settings.coda_token.get(), trigger.get() if trigger else None)
    return settings


def _setup_logging(
    args: argparse.Namespace,
    settings: Settings | None = None,
    *,
    default: str = "WARNING",
    config_level: bool = True,
) -> None:
    """Logging to stderr: --log-level wins, then the config's [log] level (unless
    `config_level` is off), then `default`. Registered secrets are masked in every line."""
    from daemon import logs

    level = args.log_level or (settings.log.level if settings and config_level else default)
    fmt = settings.log.format if settings else "auto"
    secrets: list[str] = []
    if settings is not None:
        secrets.append(settings.coda_token.get())
        if settings.trigger_token is not None:
            secrets.append(settings.trigger_token.get())
    logs.setup(level=level, fmt=fmt, secrets=secrets)


# --------------------------------------------------------------------------- run / once


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon: runs until SIGTERM/SIGINT; 0 on a clean stop."""
    settings = _load(args)
    _setup_logging(args, settings)
    from daemon import service

    return int(anyio.run(service.run, settings))


def cmd_once(args: argparse.Namespace) -> int:
    """One cycle per binding (or --binding); prints what it did, or the plan with --dry-run."""
    settings = _load(args)
    if args.binding:
        settings.binding(args.binding)  # ConfigError naming the configured bindings
    _setup_logging(args, settings)
    from daemon import service

    run_once = partial(
        service.run_once, settings, binding=args.binding, full=args.full, dry_run=args.dry_run
    )
    results: list[CycleResult] = anyio.run(run_once)
    failed = False
    for result in results:
        print(("DRY RUN " if args.dry_run else "") + result.summary())
        if args.dry_run:
            _print_plan(result.planned)
        failed = failed or result.guard is not None
    if args.dry_run:
        print("dry run: nothing was written to Coda or to the database")
    return EX_FAILURE if failed else EX_OK


def _short(value: object, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fields(values: Mapping[str, object] | None) -> str:
    if not values:
        return ""
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items())


def _print_plan(planned: Iterable[KeyPlan]) -> None:
    """One line per planned action: key, action, what goes where, and the conflicts."""
    count = 0
    for plan in planned:
        count += 1
        parts = [f"  {plan.key}  {plan.action.value}"]
        if plan.local_delete:
            parts.append("delete the local row")
        if plan.soft_delete:
            parts.append("mark the local row deleted")
        if plan.remote_delete:
            parts.append("delete the Coda row")
        if plan.local_write is not None:
            verb = "insert locally" if plan.local_insert else "write locally"
            parts.append(f"{verb}: {_fields(plan.local_write)}")
        if plan.remote_write is not None:
            verb = "insert in Coda" if plan.remote_insert else "write to Coda"
            parts.append(f"{verb}: {_fields(plan.remote_write)}")
        parts.extend(
            f"CONFLICT {c.column or '(row)'}: local={_short(c.local_value)} "
            f"remote={_short(c.remote_value)} -> {c.winner.value} wins ({c.rule.value})"
            for c in plan.conflicts
        )
        print("  |  ".join(parts))
    if count == 0:
        print("  (nothing to do)")


# --------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, then Coda and the database; print every problem."""
    settings = _load(args)
    print(f"config: {settings.source} OK ({len(settings.bindings)} binding(s))")
    _setup_logging(args, settings, config_level=False)  # the daemon's INFO is noise here
    from daemon import check

    problems = anyio.run(partial(check.run, settings, note=lambda line: print(f"ok    {line}")))
    for problem in problems:
        print(f"FAIL  {_mask(str(problem))}")
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return EX_FAILURE
    names = ", ".join(b.name for b in settings.bindings)
    print(f"all good: config, Coda and the database are ready for {names}")
    return EX_OK


# --------------------------------------------------------------------------- status / trigger


@dataclass(frozen=True, slots=True)
class _Control:
    url: str
    token: str | None
    bindings: tuple[str, ...] = ()


def _expand(value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise ConfigError(f"${{{m.group(1)}}} is not set in the environment")
        return os.environ[m.group(1)]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, value)


def _control_target(args: argparse.Namespace, *, need_token: bool) -> _Control:
    """Where the control port is and its token, without needing the Coda token.

    The config is validated (every problem reported) but secrets other than the trigger token
    are not read: `status` and `trigger` must work for an operator who has no Coda token.
    """
    env_token = os.environ.get(TRIGGER_TOKEN_ENV, "").strip() or None
    config_path = args.config
    if config_path is None and args.url is None and Path(_default_config()).is_file():
        config_path = _default_config()
    if config_path is None:
        return _Control((args.url or DEFAULT_CONTROL_URL).rstrip("/"), env_token)
    from pydantic import ValidationError

    from daemon import config

    try:
        data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        model = config.SettingsModel.model_validate(data)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file: {exc.strerror}", source=config_path
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=config_path) from None
    except ValidationError:
        config.parse(data, source=config_path, env={})  # raises the formatted ConfigError
        raise
    control = model.control
    host = control.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = (args.url or f"http://{host}:{control.port}").rstrip("/")
    token = env_token
    if need_token and control.trigger_token_env:
        token = os.environ.get(control.trigger_token_env, "").strip() or env_token
    elif need_token and control.trigger_token_file:
        path = Path(_expand(control.trigger_token_file))
        try:
            token = path.read_text(encoding="utf-8").strip() or env_token
        except OSError as exc:
            if env_token is None:
                raise CliError(
                    f"cannot read the trigger token from {path}: {exc.strerror}"
                ) from None
    _mask.add(token)
    return _Control(url, token, tuple(b.name for b in model.binding))


def _http(method: str, url: str, *, token: str | None = None, body: Any = None) -> Any:
    """One request to the control port; returns (status, decoded JSON or None)."""
    import httpx

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.request(method, url, headers=headers, json=body, timeout=15.0)
    except httpx.ConnectError:
        raise CliError(
            f"cannot reach the daemon at {url} (is it running? `systemctl status coda-sync`)",
            EX_UNAVAILABLE,
        ) from None
    except httpx.HTTPError as exc:
        raise CliError(f"request to {url} failed: {type(exc).__name__}", EX_UNAVAILABLE) from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    return response.status_code, payload


def _explain(status: int, payload: Any, control: _Control, *, what: str) -> CliError:
    """A one-line CliError for a non-2xx answer of the control port."""
    data = payload if isinstance(payload, dict) else {}
    message = str(data.get("message") or data.get("error") or "")
    if status == 401:
        hint = (
            "no trigger token was sent: set [control] trigger_token_env/_file in the config "
            f"or {TRIGGER_TOKEN_ENV}"
            if not control.token
            else "the daemon does not accept the trigger token that was sent"
        )
        return CliError(f"{what}: the daemon answered 401 Unauthorized ({hint})")
    if status == 404 and data.get("error") == "unknown_binding":
        known = ", ".join(data.get("bindings") or control.bindings) or "?"
        return CliError(f"{what}: unknown binding (configured: {known})")
    if status in (429, 503) and data.get("error") == "busy":
        return CliError(f"{what}: the daemon is busy: {message or 'try again shortly'}")
    return CliError(f"{what}: HTTP {status}" + (f": {message}" if message else ""))


def cmd_status(args: argparse.Namespace) -> int:
    """GET /status and print it as a table (or the raw JSON)."""
    control = _control_target(args, need_token=False)
    status, payload = _http("GET", control.url + "/status", token=control.token)
    if status != 200 or payload is None:
        raise _explain(status, payload, control, what=f"GET {control.url}/status")
    if args.json:
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print(_mask(render_status(payload)))
    return EX_OK


def _value(value: object) -> str:
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _pairs(items: Mapping[str, Any], indent: str = "") -> list[str]:
    width = max((len(k) for k in items), default=0)
    return [f"{indent}{k.ljust(width)}  {_value(v)}" for k, v in items.items()]


def render_status(payload: Mapping[str, Any]) -> str:
    """A readable view of the /status document: the service, then one block per binding."""
    top = {k: v for k, v in payload.items() if k != "bindings"}
    lines = _pairs(top)
    bindings = payload.get("bindings")
    if isinstance(bindings, list):  # tolerate a list of {"name": ...} objects too
        bindings = {str(b.get("name", i)): b for i, b in enumerate(bindings)}
    if isinstance(bindings, dict):
        for name, info in bindings.items():
            lines += ["", f"binding {name}"]
            lines += _pairs(info if isinstance(info, dict) else {"status": info}, "  ")
    return "\n".join(lines)


def describe_run(run: Mapping[str, Any]) -> str:
    """`r-… succeeded: 3 pulled, 1 pushed, ...` from a GET /runs/{id} document."""
    state = str(run.get("state", "?"))
    text = f"run {run.get('run_id', '?')} ({run.get('binding') or 'all bindings'}"
    text += ", full)" if run.get("full") else ")"
    text += f" {state}"
    result = run.get("result")
    if isinstance(result, dict) and result:
        text += ": " + ", ".join(f"{v} {k}" for k, v in result.items())
    if run.get("error"):
        text += f": {run['error']}"
    return text


def cmd_trigger(args: argparse.Namespace) -> int:
    """POST /sync (as the Coda "Sync now" button does); --wait polls the run to its end."""
    control = _control_target(args, need_token=True)
    body: dict[str, Any] = {"full": bool(args.full)}
    if args.binding:
        body["binding"] = args.binding
    status, payload = _http("POST", control.url + "/sync", token=control.token, body=body)
    if status // 100 != 2 or not isinstance(payload, dict) or not payload.get("run_id"):
        raise _explain(status, payload, control, what="trigger")
    run_id = str(payload["run_id"])
    print(f"run id: {run_id} ({payload.get('state', 'queued')})", flush=True)
    if not args.wait:
        return EX_OK
    deadline = time.monotonic() + args.timeout
    while True:
        status, run = _http("GET", f"{control.url}/runs/{run_id}", token=control.token)
        if status != 200 or not isinstance(run, dict):
            raise _explain(status, run, control, what=f"GET /runs/{run_id}")
        if run.get("state") in FINISHED_STATES:
            print(describe_run(run))
            return EX_OK if run.get("state") == "succeeded" else EX_FAILURE
        if time.monotonic() >= deadline:
            raise CliError(f"run {run_id} still {run.get('state')} after {args.timeout:.0f} s")
        time.sleep(0.5)


# --------------------------------------------------------------------------- emulator


async def _stop_on_signal(scope: CancelScope) -> None:
    """Cancel `scope` on SIGTERM/SIGINT (the only signal handler of a command)."""
    import signal

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def serve_emulator(args: argparse.Namespace, *, ready: Callable[[str], None]) -> None:
    """Serve a seeded emulator until cancelled; `ready(base_url)` once the port is bound."""
    import random

    from daemon import asgi_server
    from daemon.emulator import EmulatorConfig, build_emulator, create_app, seed_participation

    config = EmulatorConfig(
        doc_timezone=args.tz,
        apply_delay_seconds=args.apply_delay,
        read_lag_seconds=args.read_lag,
        rate_limit_enabled=not args.no_rate_limit,
    )
    state = build_emulator(
        seed_rows=args.seed_rows, token=args.token, config=config, seed=args.seed
    )
    if args.keyless_rows:
        # rows "people created in Coda": no sync key yet, the daemon assigns one
        rng = random.Random(args.seed + 1)
        seed_participation(state, args.keyless_rows, rng=rng, with_keys=False)
    app = create_app(state)
    async with anyio.create_task_group() as tg:
        serve = partial(asgi_server.serve, app, host=args.host, port=args.port)
        host, port = await tg.start(serve)
        shown = f"[{host}]" if ":" in host else host
        ready(f"http://{shown}:{port}/apis/v1")


def cmd_emulator(args: argparse.Namespace) -> int:
    """The bundled Coda API emulator; prints its base URL and token, runs until stopped."""
    from daemon.emulator.config import DEFAULT_TOKEN

    args.token = args.token or DEFAULT_TOKEN

    def ready(url: str) -> None:
        print(f"emulator listening on {url}", flush=True)
        print(f"token: {args.token}", flush=True)
        print(
            f"  try: curl -H 'Authorization: Bearer {args.token}' {url}/docs/Hr7-PaRtc1/tables",
            file=sys.stderr,
            flush=True,
        )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, tg.cancel_scope)
            await serve_emulator(args, ready=ready)

    _setup_logging(args, None, default="WARNING")
    anyio.run(main)
    return EX_OK


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """The newcomer's tour: emulator + real daemon + a scripted story (see daemon/demo.py)."""
    from daemon import demo

    return demo.main(rows=args.rows, speed=args.speed, keep=args.keep, log_level=args.log_level)


# --------------------------------------------------------------------------- import
# `coda-sync import` lives in daemon/importer.py (its own options, messages and exit codes).
# Contract: `importer.add_import_parser(subparsers)` adds the subcommand and sets `func`
# (taking the parsed args, returning the exit code). The module is heavy (it loads the
# database and HTTP stacks), so it is only imported when the command line asks for it; other
# commands see a light placeholder with the same name and help.

IMPORT_HELP = "load exported rows (Coda CSV or saved API JSON) into a binding's table"


def _add_import_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    *,
    load: bool,
) -> None:
    importer: Any = None
    if load:
        try:
            importer = importlib.import_module("daemon.importer")
        except ImportError:
            importer = None
    if importer is None:
        parser = sub.add_parser("import", parents=[common], help=IMPORT_HELP)
        parser.set_defaults(func=_import_missing)
        return
    parser = importer.add_import_parser(sub)
    for option, kwargs in _COMMON_OPTIONS.items():
        try:
            parser.add_argument(option, **kwargs)
        except argparse.ArgumentError:
            pass  # the importer defines it itself


def _import_missing(args: argparse.Namespace) -> int:
    raise CliError("`import` is not available in this build (daemon/importer.py is missing)")


# --------------------------------------------------------------------------- parser


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


_COMMON_OPTIONS: dict[str, dict[str, Any]] = {
    "--log-level": {
        "choices": LOG_LEVELS,
        "type": str.upper,
        "help": "override the config's [log] level",
    },
    "--debug": {"action": "store_true", "help": "show tracebacks of errors"},
}


def _default_config() -> str:
    """$CODA_SYNC_CONFIG, else `config.DEFAULT_CONFIG_PATH` (resolved late: pydantic is slow
    to import, and `emulator`/`status` do not need it)."""
    from daemon.config import DEFAULT_CONFIG_PATH

    return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def build_parser(*, with_import: bool = True) -> argparse.ArgumentParser:
    """The whole command line (tests parse with it directly); `with_import=False` leaves
    the heavy importer out (a placeholder keeps `import` in the help)."""
    common = argparse.ArgumentParser(add_help=False)
    for option, kwargs in _COMMON_OPTIONS.items():
        common.add_argument(option, **kwargs)
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument(
        "--config", "-c", metavar="FILE",
        help=f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG_PATH_TEXT})",
    )  # fmt: skip
    to_daemon = argparse.ArgumentParser(add_help=False)
    where = to_daemon.add_mutually_exclusive_group()
    where.add_argument("--config", "-c", metavar="FILE", help="find the control port in FILE")
    where.add_argument(
        "--url", metavar="URL", help=f"control port URL (default {DEFAULT_CONTROL_URL})"
    )

    parser = argparse.ArgumentParser(
        prog="coda-sync",
        description="Two-way sync between Coda tables and SQL tables.",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage, 69 unavailable (lock held / daemon "
        "unreachable), 78 configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"coda-sync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", parents=[common, with_config], help="run the sync daemon")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("once", parents=[common, with_config], help="run one sync cycle and exit")
    p.add_argument("--binding", metavar="NAME", help="only this binding (default: all)")
    p.add_argument("--full", action="store_true", help="full scan instead of incremental")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.set_defaults(func=cmd_once)

    p = sub.add_parser(
        "check", parents=[common, with_config], help="validate config, Coda access and database"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("status", parents=[common, to_daemon], help="show a running daemon's status")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "trigger", parents=[common, to_daemon], help="ask a running daemon to sync now"
    )
    p.add_argument("--binding", metavar="NAME", help="only this binding (default: all)")
    p.add_argument("--full", action="store_true", help="full scan instead of incremental")
    p.add_argument("--wait", action="store_true", help="wait for the run and print its result")
    p.add_argument("--timeout", type=_positive, default=300.0, metavar="S",
                   help="give up waiting after S seconds (default 300)")  # fmt: skip
    p.set_defaults(func=cmd_trigger)

    _add_import_command(sub, common, load=with_import)

    p = sub.add_parser("emulator", parents=[common], help="run the bundled Coda API emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--seed-rows", type=int, default=200, metavar="N", help="sample rows with keys")
    p.add_argument("--keyless-rows", type=int, default=0, metavar="N",
                   help="extra rows without a sync key (as if people created them)")  # fmt: skip
    p.add_argument(
        "--token", help=f"API token the emulator accepts (default: {DEFAULT_EMULATOR_TOKEN_TEXT})"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the sample data")
    p.add_argument("--tz", default="Europe/Moscow", help="the doc's time zone")
    p.add_argument("--apply-delay", type=_non_negative, default=3.0, metavar="S",
                   help="seconds until an accepted write is applied (default 3)")  # fmt: skip
    p.add_argument("--read-lag", type=_non_negative, default=1.0, metavar="S",
                   help="seconds reads lag behind the true state (default 1)")  # fmt: skip
    p.add_argument("--no-rate-limit", action="store_true", help="disable the 429 rate limits")
    p.set_defaults(func=cmd_emulator)

    p = sub.add_parser("demo", parents=[common], help="see coda-sync work, no Coda account needed")
    p.add_argument("--rows", type=int, default=60, help="sample rows in the emulated doc")
    p.add_argument("--speed", type=_positive, default=1.0, help="2 = twice as fast, 0.5 = slower")
    p.add_argument("--keep", metavar="DIR", type=Path,
                   help="keep the demo's files (config, SQLite) in DIR")  # fmt: skip
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `coda-sync` console script; returns the exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(with_import="import" in arguments)
    args = parser.parse_args(arguments)
    func: Callable[[argparse.Namespace], int] = args.func
    debug = bool(getattr(args, "debug", False))
    try:
        return func(args)
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return EX_CONFIG
    except LockHeldError as exc:
        _err(f"error: {exc}")
        return EX_UNAVAILABLE
    except CliError as exc:
        _err(f"error: {exc}")
        return exc.code
    except CodaAuthError as exc:
        _err(f"error: {exc} (check the Coda API token)")
        return EX_FAILURE
    except CodaSyncError as exc:
        if debug:
            traceback.print_exc()
        _err(f"error: {exc}")
        return EX_FAILURE
    except KeyboardInterrupt:
        _err("interrupted")
        return EX_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        _err(f"unexpected error: {type(exc).__name__}: {exc}{hint}")
        return EX_FAILURE
