"""Configuration: a TOML file (+ secrets from the environment or files) -> frozen `Settings`.

Owns loading and validation only: no network, no database. Every error is a `ConfigError`
naming the file, the key (dotted path, e.g. `binding[0].columns.hours.type`) and what is
wrong. Secrets (the Coda API token, the trigger token) never come from the TOML itself: the
file names an environment variable or a file (systemd credentials), and `Secret` hides them
from `repr`.

Validation uses pydantic (v2): it reports every problem at once with its location, which is
what an operator fixing a config file needs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.errors import ConfigError
from daemon.model import ColumnSpec, ColumnType, DeletePolicy, Policy, Side

DEFAULT_CONFIG_PATH = "/etc/coda-sync/coda-sync.toml"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Secret:
    """A secret string whose repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CodaSettings(_Model):
    api_base_url: str = "https://coda.io/apis/v1"
    """Base URL of Coda API v1 (the emulator's URL in tests and the demo)."""
    token_env: str | None = None
    """Name of the environment variable holding the API token."""
    token_file: str | None = None
    """Path of a file holding the API token; `${CREDENTIALS_DIRECTORY}` is expanded (systemd)."""
    read_limit: Annotated[int, Field(gt=0)] = 100
    """Reads allowed per `rate_window_seconds` (Coda publishes 100 / 6 s)."""
    write_limit: Annotated[int, Field(gt=0)] = 10
    """Writes allowed per window (Coda publishes 10 / 6 s)."""
    rate_window_seconds: Annotated[float, Field(gt=0)] = 6.5
    """Sliding window of our own pacing: 0.5 s longer than Coda's, so network jitter can never
    put more than the limit into one of Coda's 6 s windows (limits are shared per user)."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    """Deadline of one HTTP request."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    """Attempts per request (first try + retries) for 429, 5xx, timeouts, connection errors."""
    page_size: Annotated[int, Field(ge=1, le=1000)] = 500
    upsert_batch_rows: Annotated[int, Field(ge=1, le=500)] = 100
    """Rows per upsert request (Coda documents no maximum; 100 is what integrators use)."""
    mutation_timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    """A write not confirmed by mutationStatus within this is sent again (it is idempotent)."""

    @field_validator("api_base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL like https://coda.io/apis/v1")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_token_source(self) -> CodaSettings:
        if not self.token_env and not self.token_file:
            raise ValueError("set token_env (an environment variable name) or token_file")
        if self.token_env and self.token_file:
            raise ValueError("set only one of token_env and token_file")
        return self


class DatabaseSettings(_Model):
    url: str = "sqlite+aiosqlite:///coda-sync.db"
    """SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db."""
    create_tables: bool = False
    """Create bound tables from their mapping when missing (demo and tests; the app owns them
    in production)."""
    lease_seconds: Annotated[float, Field(gt=1, le=600)] = 30.0
    """PostgreSQL: how long a lost leader may take to be replaced."""

    @field_validator("url")
    @classmethod
    def _driver(cls, v: str) -> str:
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (async drivers)"
            )
        return v


class SyncSettings(_Model):
    interval_seconds: Annotated[float, Field(gt=0)] = 30.0
    full_resync_seconds: Annotated[float, Field(gt=0)] = 3600.0
    jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    """Each interval is stretched or shrunk by up to this share, so instances do not align."""
    local_overlap_seconds: Annotated[float, Field(ge=0)] = 300.0
    """Local rows with updated_at >= watermark - overlap are re-read each cycle, so
    transactions that commit late with an earlier updated_at are not missed."""
    clock_skew_seconds: Annotated[float, Field(ge=0)] = 5.0
    tie_break: Literal["remote", "local"] = "remote"
    max_delete_share: Annotated[float, Field(gt=0, le=1)] = 0.2
    max_delete_count: Annotated[int, Field(ge=0)] = 100
    stale_window_seconds: Annotated[float, Field(ge=0)] = 60.0
    """After a push is confirmed, reads that still show older values are treated as stale
    for this long."""
    cycle_timeout_seconds: Annotated[float, Field(gt=0)] = 900.0
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 600.0
    stop_grace_seconds: Annotated[float, Field(gt=0)] = 20.0
    key_writeback_per_cycle: Annotated[int, Field(ge=0)] = 50
    """How many keys of rows people created in Coda are written back per cycle."""


class ControlSettings(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    trigger_token_env: str | None = None
    trigger_token_file: str | None = None
    allow_non_loopback: bool = False
    """Binding to a non-loopback address must be asked for explicitly (and needs a token)."""
    max_body_bytes: Annotated[int, Field(ge=64, le=1_048_576)] = 4096

    @model_validator(mode="after")
    def _safe_bind(self) -> ControlSettings:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback:
            if not self.allow_non_loopback:
                raise ValueError(
                    f"host {self.host!r} is not a loopback address; set allow_non_loopback = "
                    "true to expose the control port (and a trigger token)"
                )
            if not (self.trigger_token_env or self.trigger_token_file):
                raise ValueError("a non-loopback control port needs trigger_token_env or _file")
        return self


class LogSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"


class ColumnModel(_Model):
    coda: Annotated[str, Field(min_length=1)]
    """Coda column id (`c-…`); names work but break on rename."""
    type: ColumnType
    readonly: bool = False
    checkbox_unset: Literal["false", "null"] = "false"


class BindingModel(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    doc_id: Annotated[str, Field(min_length=1)]
    table_id: Annotated[str, Field(min_length=1)]
    local_table: str
    local_key: str = "id"
    local_updated_at: str = "updated_at"
    coda_key_column: Annotated[str, Field(min_length=1)]
    deletes: DeletePolicy = DeletePolicy.PROPAGATE
    soft_delete_column: str | None = None
    natural_key: tuple[str, ...] = ()
    """Local columns identifying a row when no sync key is present (import matching)."""
    create_table: bool | None = None
    columns: Annotated[dict[str, ColumnModel], Field(min_length=1)]

    @field_validator("local_table", "local_key", "local_updated_at", "soft_delete_column")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        if v is not None and not _IDENT.match(v):
            raise ValueError(f"{v!r} is not a plain SQL identifier (letters, digits, _)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BindingModel:
        for local in self.columns:
            if not _IDENT.match(local):
                raise ValueError(f"column {local!r} is not a plain SQL identifier")
        reserved = {self.local_key, self.local_updated_at, self.soft_delete_column}
        clash = {c for c in reserved if c is not None} & set(self.columns)
        if clash:
            raise ValueError(f"columns must not map the key/updated_at columns: {sorted(clash)}")
        codas = [c.coda for c in self.columns.values()]
        dup = sorted({c for c in codas if codas.count(c) > 1})
        if dup:
            raise ValueError(f"Coda column(s) mapped twice: {dup}")
        if self.coda_key_column in codas:
            raise ValueError("coda_key_column must not also be mapped in columns")
        if self.deletes is DeletePolicy.SOFT and not self.soft_delete_column:
            raise ValueError('deletes = "soft" needs soft_delete_column')
        unknown = [c for c in self.natural_key if c not in self.columns]
        if unknown:
            raise ValueError(f"natural_key names unmapped columns: {unknown}")
        return self


class SettingsModel(_Model):
    coda: CodaSettings
    database: DatabaseSettings = DatabaseSettings()
    sync: SyncSettings = SyncSettings()
    control: ControlSettings = ControlSettings()
    log: LogSettings = LogSettings()
    binding: Annotated[list[BindingModel], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> SettingsModel:
        names = [b.name for b in self.binding]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"binding names must be unique: {dup}")
        tables = [b.local_table for b in self.binding]
        dup_t = sorted({t for t in tables if tables.count(t) > 1})
        if dup_t:
            raise ValueError(f"two bindings write the same local_table: {dup_t}")
        return self


@dataclass(frozen=True, slots=True)
class Binding:
    """One Coda table <-> one SQL table, resolved for use by the engine."""

    name: str
    doc_id: str
    table_id: str
    local_table: str
    local_key: str
    local_updated_at: str
    coda_key_column: str
    deletes: DeletePolicy
    soft_delete_column: str | None
    natural_key: tuple[str, ...]
    create_table: bool
    columns: tuple[ColumnSpec, ...]

    @property
    def readonly_columns(self) -> frozenset[str]:
        return frozenset(c.local for c in self.columns if c.readonly)

    @property
    def writable_columns(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if not c.readonly)

    def column(self, local: str) -> ColumnSpec:
        for c in self.columns:
            if c.local == local:
                return c
        raise KeyError(local)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon needs, validated. Built by `load`; passed explicitly."""

    source: str
    coda: CodaSettings
    database: DatabaseSettings
    sync: SyncSettings
    control: ControlSettings
    log: LogSettings
    bindings: tuple[Binding, ...]
    coda_token: Secret
    trigger_token: Secret | None

    def binding(self, name: str) -> Binding:
        for b in self.bindings:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.bindings)
        raise ConfigError(f"unknown binding {name!r} (configured: {known})", source=self.source)

    def policy(self, binding: Binding, *, known_rows: int) -> Policy:
        return Policy(
            readonly_columns=binding.readonly_columns,
            deletes=binding.deletes,
            clock_skew_seconds=self.sync.clock_skew_seconds,
            tie_break=Side(self.sync.tie_break),
            max_delete_share=self.sync.max_delete_share,
            max_delete_count=self.sync.max_delete_count,
            known_rows=known_rows,
        )


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Configuration')"
        problems.append((_loc(loc) or "(top level)", msg))
    return problems


def _read_secret(
    *, env_name: str | None, file_name: str | None, env: Mapping[str, str], source: str, key: str
) -> Secret | None:
    if env_name:
        value = env.get(env_name, "").strip()
        if not value:
            raise ConfigError(
                f"environment variable {env_name} is not set or empty", source=source, key=key
            )
        return Secret(value)
    if file_name:
        path = Path(_expand(file_name, env))
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.strerror}", source=source, key=key
            ) from None
        if not value:
            raise ConfigError(f"{path} is empty", source=source, key=key)
        return Secret(value)
    return None


def _expand(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise ConfigError(f"${{{name}}} is not set in the environment")
        return env[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, value)


def _resolve_sqlite_path(url: str, base_dir: Path) -> str:
    """Relative SQLite paths are relative to the config file, not to the working directory."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :]
        if path and not path.startswith("/") and not path.startswith(":memory:"):
            return prefix + str((base_dir / path).resolve())
    return url


def parse(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Settings:
    """Validate parsed TOML data into `Settings`; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    try:
        model = SettingsModel.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc)
        lines = "\n".join(f"  {source}: {key}: {msg}" for key, msg in problems)
        err = ConfigError(f"{len(problems)} problem(s) in the configuration:\n{lines}")
        err.problems = problems  # type: ignore[attr-defined]
        raise err from None
    db = model.database
    if base_dir is not None:
        db = db.model_copy(update={"url": _resolve_sqlite_path(db.url, base_dir)})
    coda_token = _read_secret(
        env_name=model.coda.token_env,
        file_name=model.coda.token_file,
        env=env,
        source=source,
        key="coda.token_env" if model.coda.token_env else "coda.token_file",
    )
    assert coda_token is not None
    trigger = _read_secret(
        env_name=model.control.trigger_token_env,
        file_name=model.control.trigger_token_file,
        env=env,
        source=source,
        key="control.trigger_token_env"
        if model.control.trigger_token_env
        else "control.trigger_token_file",
    )
    bindings = tuple(
        Binding(
            name=b.name,
            doc_id=b.doc_id,
            table_id=b.table_id,
            local_table=b.local_table,
            local_key=b.local_key,
            local_updated_at=b.local_updated_at,
            coda_key_column=b.coda_key_column,
            deletes=b.deletes,
            soft_delete_column=b.soft_delete_column,
            natural_key=b.natural_key,
            create_table=db.create_tables if b.create_table is None else b.create_table,
            columns=tuple(
                ColumnSpec(
                    local=name,
                    coda=c.coda,
                    type=c.type,
                    readonly=c.readonly,
                    checkbox_unset_is_false=c.checkbox_unset == "false",
                )
                for name, c in b.columns.items()
            ),
        )
        for b in model.binding
    )
    return Settings(
        source=source,
        coda=model.coda,
        database=db,
        sync=model.sync,
        control=model.control,
        log=model.log,
        bindings=bindings,
        coda_token=coda_token,
        trigger_token=trigger,
    )


def load(path: str | Path, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", source=str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("the config file is not UTF-8 text", source=str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(p)) from None
    return parse(data, source=str(p), env=env, base_dir=p.resolve().parent)
