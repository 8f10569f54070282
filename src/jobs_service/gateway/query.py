"""Query-parameter handling shared by the list endpoints."""

from __future__ import annotations

from datetime import UTC, datetime

from jobs_service.core.pagination import InvalidCursorError, decode_cursor
from jobs_service.gateway.problems import Problem

__all__ = ["after_id", "utc_param"]


def utc_param(value: datetime | None, name: str) -> datetime | None:
    """A timestamp filter in UTC; it must carry an offset and be representable."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise Problem(422, "invalid-request", f"{name} needs a UTC offset, e.g. 'Z'")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Problem(422, "invalid-request", f"{name} is out of range") from None


def after_id(cursor: str | None) -> int | None:
    """The row id a page starts after, from an opaque cursor (400 if it is not ours)."""
    if not cursor:
        return None
    try:
        return decode_cursor(cursor)
    except InvalidCursorError:
        raise Problem(400, "invalid-cursor", "cursor is not one this API returned") from None
