"""The declarative base every table of the node derives from, and the clock its
timestamps default to (UTC, timezone-aware)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass
