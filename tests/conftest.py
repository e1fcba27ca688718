"""Shared test setup: anyio's own pytest plugin, pinned to asyncio (the SQL drivers need it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
