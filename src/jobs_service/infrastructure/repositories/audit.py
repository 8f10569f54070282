"""Queries on ``audit_log``: one row per operator action."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from jobs_service.infrastructure.models import AuditEntry, column_length

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "AuditFilter",
    "NewAuditEntry",
    "delete_entries_before",
    "insert_entries",
    "list_entries",
]

# Column widths of audit_log: longer values are cut, not refused.
_ACTOR, _ACTION, _TARGET, _REQUEST_ID = (
    column_length(AuditEntry, name) for name in ("actor", "action", "target", "request_id")
)


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """An action about to be recorded."""

    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: int
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """Column values, cut to the column widths."""
        return {
            "at": self.at,
            "actor": _printable(self.actor)[:_ACTOR],
            "action": _printable(self.action)[:_ACTION],
            "target": _printable(self.target)[:_TARGET] if self.target is not None else None,
            "outcome": self.outcome,
            "request_id": _printable(self.request_id)[:_REQUEST_ID] if self.request_id else None,
            "detail": _printable_json(self.detail) or None,
        }


def _printable(text: str) -> str:
    """Control characters escaped: a path like ``/v1/%00`` (anyone can send it) must not
    make PostgreSQL refuse the row, and with it the whole batch of other entries."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)


def _printable_json(value: Any) -> Any:
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, dict):
        return {_printable(str(key)): _printable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable_json(item) for item in value]
    return value


async def insert_entries(connection: AsyncConnection, entries: Sequence[NewAuditEntry]) -> None:
    """Record actions, in their order, in one statement."""
    if entries:
        await connection.execute(insert(AuditEntry), [entry.row() for entry in entries])


@dataclass(slots=True)
class AuditFilter:
    """Filters of ``GET /v1/audit`` and ``jobsctl audit``."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None


async def list_entries(
    session: AsyncSession, filters: AuditFilter, *, limit: int, after_id: int | None
) -> list[AuditEntry]:
    """Newest first; fetches limit+1 to tell whether another page exists."""
    query = select(AuditEntry)
    if filters.actor is not None:
        query = query.where(AuditEntry.actor == filters.actor)
    if filters.action is not None:
        query = query.where(AuditEntry.action == filters.action)
    if filters.target is not None:
        query = query.where(AuditEntry.target == filters.target)
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if after_id is not None:
        query = query.where(AuditEntry.id < after_id)
    query = query.order_by(AuditEntry.id.desc()).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def delete_entries_before(session: AsyncSession, cutoff: datetime, *, batch_size: int) -> int:
    """Delete up to ``batch_size`` of the oldest entries recorded before ``cutoff``;
    returns the count. Oldest first, by id, so a batch reads the ``at`` index's start
    and an interrupted cleanup leaves no gap in what is kept."""
    found = await session.execute(
        select(AuditEntry.id)
        .where(AuditEntry.at < cutoff)
        .order_by(AuditEntry.id)
        .limit(batch_size)
    )
    ids = list(found.scalars())
    if not ids:
        return 0
    result = await session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
