"""The HR application's Participation table, as a typed ORM model.

coda-sync does not own this table (the HR app does); this model exists so the demo and the
tests can act as "the application": insert, edit and delete its own rows the way the app
would, with `updated_at` bumped on every change. Its columns are exactly what
`BoundTable` creates from config/coda-sync.toml's `participation` binding (a test checks
both directions). Must not import httpx.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from daemon.store.db import JSONType, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_key() -> str:
    """A fresh sync key, as the application makes them (a UUID4 string)."""
    return str(uuid.uuid4())


class AppBase(DeclarativeBase):
    """The application's metadata: separate from the daemon's state tables."""

    metadata = sa.MetaData()


class Participation(AppBase):
    """One person's participation in one activity (Coda table "Участие")."""

    __tablename__ = "participation"
    __table_args__ = (sa.Index("ix_participation_updated_at", "updated_at", "id"),)

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_key)
    employee_email: Mapped[str | None] = mapped_column(sa.Text)
    email: Mapped[str | None] = mapped_column(sa.Text)
    activity: Mapped[str | None] = mapped_column(sa.Text)
    activity_date: Mapped[date | None] = mapped_column(sa.Date)
    role: Mapped[str | None] = mapped_column(sa.Text)
    hours: Mapped[float | None] = mapped_column(sa.Double)
    confirmed: Mapped[bool | None] = mapped_column(sa.Boolean)
    tags: Mapped[list[str] | None] = mapped_column(JSONType)
    comment: Mapped[str | None] = mapped_column(sa.Text)
    year: Mapped[float | None] = mapped_column(sa.Double)
    """Calculated in Coda (read-only there); pulled, never pushed."""
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow
    )
