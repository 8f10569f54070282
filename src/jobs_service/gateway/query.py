"""Query- and path-parameter handling shared by the endpoints."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from fastapi import Path
from pydantic import BeforeValidator

from jobs_service.core.pagination import InvalidCursorError, decode_cursor, encode_cursor
from jobs_service.gateway.problems import Problem
from jobs_service.gateway.schemas import MAX_ID

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["DIGITS_ONLY", "IsoDatetime", "PathId", "after_id", "keyset_page", "utc_param"]

T = TypeVar("T")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGITS = re.compile(r"[0-9]+")


def _iso_8601(value: Any) -> Any:
    """Pydantic reads a number ("0.5", "1700000000") as a Unix time; the API documents
    ISO 8601 date-times (``format: date-time``), so a number is refused, not guessed."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        msg = "must be an ISO 8601 date-time with an offset, e.g. 2026-01-31T09:00:00Z"
        raise ValueError(msg)
    return value


#: A timestamp query parameter: ISO 8601 only (then :func:`utc_param` wants an offset).
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_8601)]


def _digits_only(value: Any) -> Any:
    """Pydantic reads "1.0", "+1", " 1" and "1_0" as integers too; an id is spelt in
    ASCII digits only (leading zeros allowed), so each resource has one spelling and a
    typo is refused, not taken for another id."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        msg = "must be a whole number written in digits, e.g. 12"
        raise ValueError(msg)
    return value


#: Refuses a numeric id parameter not written in digits. It follows the parameter's
#: ``Path``/``Query`` in ``Annotated``, which keeps their bounds in the Open API schema.
DIGITS_ONLY = BeforeValidator(_digits_only)
#: A numeric id in a path (``/v1/schedules/{schedule_id}``): digits only, 1 to MAX_ID;
#: anything else is a 422.
PathId = Annotated[int, Path(ge=1, le=MAX_ID), DIGITS_ONLY]


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


class _Row(Protocol):
    id: int


R = TypeVar("R", bound=_Row)


def keyset_page(
    rows: Sequence[R], limit: int, serialise: Callable[[R], T]
) -> tuple[list[T], str | None]:
    """Items and next cursor from ``limit + 1`` rows (the extra one says a page follows)."""
    page = rows[:limit]
    more = len(rows) > limit and bool(page)
    return [serialise(row) for row in page], encode_cursor(page[-1].id) if more else None
