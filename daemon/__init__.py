"""coda-sync: keeps Coda tables and SQL tables in agreement, both ways, continuously."""

from __future__ import annotations

__version__ = "0.1.0"
