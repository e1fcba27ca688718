"""Page and sync tokens in the form observed live (S17): unpadded base64url of compact JSON
with alphabetically sorted keys, unsigned, no expiry.

    page token: {"limit":5,"offset":5,"opVersion":703,"schemaVersion":177,"sortBy":"createdAt"}
    sync token: {"limit":100,"offset":0,"sortBy":"updatedAt","startAt":1782212315.359, ...}

Both echo `useColumnNames`/`valueFormat`/`query`/`visibleOnly` only when the request sent
them. `startAt` is epoch seconds with a millisecond fraction.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def encode(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode(token: str) -> dict[str, Any] | None:
    """The token's JSON object, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def start_at(ms: int) -> int | float:
    """Epoch milliseconds -> the `startAt` number (seconds, ms fraction, no ".0")."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def start_at_ms(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(value * 1000)
