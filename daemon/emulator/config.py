"""Every knob of the Coda emulator, in one frozen dataclass.

Where API-FACTS.md marks a behaviour [U]ncertain, the emulator makes it an option here so that
the daemon's tests can run under every variant; the default is the variant the recorded live
traffic (S17) suggests, or the more hostile one when nothing was observed. Owns no behaviour and
imports nothing from the rest of the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SyncTokenPages = Literal["first", "every", "last"]
SyncBoundary = Literal["exclusive", "inclusive"]
SyncStartAt = Literal["listing_max", "page_max"]
BadSyncToken = Literal["bad_request", "gone", "ignore"]
UnknownColumn = Literal["reject", "ignore"]
CalculatedWrite = Literal["ignore", "reject"]
UnknownSelectOption = Literal["store", "add_option", "blank"]
UnknownBodyFields = Literal["reject", "ignore"]
RowIdsField = Literal["reject", "ignore", "honor"]
RateWindow = Literal["sliding", "fixed"]

DEFAULT_TOKEN = "coda-emulator-token"


@dataclass(frozen=True)
class EmulatorConfig:
    """Emulator settings; `dataclasses.replace` (or `EmulatorState.set_config`) makes variants."""

    # --- identity and auth -----------------------------------------------------------------------
    tokens: tuple[str, ...] = (DEFAULT_TOKEN,)
    """Bearer tokens accepted (anything else -> 401 with Coda's error body)."""
    read_only_tokens: tuple[str, ...] = ()
    """Tokens valid for GET only; writes with them -> 403 (Coda tokens can be read-only)."""
    token_name: str = "coda-sync"
    """`tokenName` reported by /whoami."""
    user_name: str = "HR Automation"
    user_email: str = "hr-bot@example.com"
    public_base_url: str = "https://coda.io"
    """Host used in every `href`/`browserLink`; real Coda always answers with https://coda.io."""

    # --- the doc ---------------------------------------------------------------------------------
    doc_timezone: str = "Europe/Moscow"
    """IANA zone of the doc: date/dateTime/time cells are rendered with its offset (DST-aware)."""
    over_api_size_limit: bool = False
    """`docSize.overApiSizeLimit` reported by GET /docs/{docId} (nothing else changes)."""
    schema_version: int = 177
    """`schemaVersion` echoed in page tokens (177 in every recorded doc)."""

    # --- asynchronous writes ---------------------------------------------------------------------
    apply_delay_seconds: float = 3.0
    """A 202-accepted mutation is applied this long after it was received ([C] "several
    seconds"; S17 saw ~18 s). Mutations apply in arrival order."""
    apply_delay_jitter_seconds: float = 0.0
    """Extra uniform random delay in [0, jitter] per mutation (seeded rng)."""
    mutation_404_seconds: float = 1.5
    """GET /mutationStatus answers 404 for this long after the write ([C-observed] S7, S17)."""
    mutation_retention_seconds: float = 86_400.0
    """A completed mutation's status expires (404) this long after it completed ([C] ~1 day)."""
    identical_write_bumps_updated_at: bool = False
    """[U] Whether a write that changes no value moves `updatedAt`. S17 suggests it does not."""

    # --- read consistency ------------------------------------------------------------------------
    read_lag_seconds: float = 1.0
    """Reads come from a snapshot that lags the true state by this long ([C] snapshots lag).
    `X-Coda-Doc-Version: latest` answers 400 while the snapshot is behind."""
    read_lag_jitter_seconds: float = 0.0
    """Extra uniform random lag in [0, jitter] per change: stale reads for a random window
    (changes still become visible in commit order)."""

    # --- listing rows ----------------------------------------------------------------------------
    default_page_limit: int = 25
    max_page_limit: int = 500
    """[U] `limit` above this is silently capped (the capped value is echoed in tokens)."""
    max_column_page_limit: int = 100
    sync_token_pages: SyncTokenPages = "first"
    """[U] Which pages carry `nextSyncToken`: the first page (observed, S17), every page, or only
    the last page."""
    sync_boundary: SyncBoundary = "exclusive"
    """[U] A sync call returns rows whose sort key is > startAt ("exclusive": an edit in the same
    millisecond as the watermark is never delivered) or >= startAt ("inclusive": the newest row
    is delivered again every time)."""
    sync_start_at: SyncStartAt = "listing_max"
    """[U] `startAt` of a minted sync token: the newest sort-key value of the whole listing, or
    only of the rows on the page that carries the token."""
    bad_sync_token: BadSyncToken = "bad_request"
    """[U] Answer to a malformed syncToken: 400 (Coda body), 410, or ignore it (full listing)."""

    # --- writes: validation and parsing ----------------------------------------------------------
    unknown_column: UnknownColumn = "reject"
    """[U] A cell for an unknown column: 400 naming it, or drop the cell silently."""
    calculated_write: CalculatedWrite = "ignore"
    """[U] A cell for a calculated column: dropped silently (202), or 400."""
    unknown_select_option: UnknownSelectOption = "store"
    """[U] A select value that is not an option: kept as typed (as the UI shows it), appended to
    the column's options, or stored as an empty cell."""
    unknown_body_fields: UnknownBodyFields = "reject"
    """[U] Request schemas are `additionalProperties: false`; reject unknown fields with 400?"""
    row_ids_field: RowIdsField = "reject"
    """[U] The unpublished `RowsUpsert.rowIds` (S16): 400, ignored, or honoured as the new rows'
    ids (a retried insert with the same ids is then a no-op)."""
    max_upsert_rows: int | None = None
    """[U] More rows than this in one upsert -> 400 (None = no limit)."""
    max_body_bytes: int | None = None
    """[U] A request body larger than this -> 413 (None = no limit)."""

    # --- rate limits -----------------------------------------------------------------------------
    rate_limit_enabled: bool = True
    read_limit: int = 100
    write_limit: int = 10
    rate_window_seconds: float = 6.0
    rate_window: RateWindow = "sliding"
    """[U] Window type of the per-token limits."""
    rate_limit_retry_after: bool = False
    """[U] Send `Retry-After` (whole seconds) with 429? Never documented nor observed."""

    # --- faults ----------------------------------------------------------------------------------
    random_fault_rate: float = 0.0
    """Probability that any API request draws a random fault (seeded rng)."""
    random_fault_kinds: tuple[str, ...] = ("http_500", "http_503", "rate_limit")
    """Preset names drawn from (see `faults.PRESETS`)."""
    hang_seconds: float = 600.0
    """How long a `hang` fault sleeps (on the injected clock) before answering."""

    # --- values ----------------------------------------------------------------------------------
    time_lmt_skew: bool = True
    """[U] Time cells are 1899-12-30 datetimes; zones whose 1899 offset has seconds (local mean
    time, e.g. Moscow +02:30:17) are printed with the offset cut to minutes and the clock time
    shifted by the lost seconds (the "few-seconds skew" reported in S9)."""

    # --- bookkeeping -----------------------------------------------------------------------------
    request_log_limit: int = 100_000
    """Entries kept in the request log (oldest dropped first)."""

    def __post_init__(self) -> None:
        if self.max_page_limit < 1 or self.default_page_limit < 1:
            raise ValueError("page limits must be >= 1")
        if min(self.apply_delay_seconds, self.read_lag_seconds, self.mutation_404_seconds) < 0:
            raise ValueError("delays must be >= 0")
        if not 0.0 <= self.random_fault_rate <= 1.0:
            raise ValueError("random_fault_rate must be within [0, 1]")
