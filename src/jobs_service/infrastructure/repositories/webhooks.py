"""Queries on ``webhook_events``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from jobs_service.infrastructure.models import WebhookEvent

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = [
    "EventFilter",
    "NewEvent",
    "StaleEvent",
    "existing_ids",
    "get_event",
    "insert_events",
    "list_events",
    "mark_enqueued",
    "mark_finished",
    "point_to_run",
    "stale_accepted",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A verified event about to be stored."""

    source: str
    external_id: str
    event_type: str | None
    headers: dict[str, str]
    body: str
    task: str
    run_id: str
    received_at: datetime

    def row(self) -> dict[str, Any]:
        """Column values; every event starts ``accepted``."""
        return {
            "source": self.source,
            "external_id": self.external_id,
            "event_type": self.event_type,
            "headers": self.headers,
            "body": self.body,
            "task": self.task,
            "run_id": self.run_id,
            "status": "accepted",
            "received_at": self.received_at,
            "updated_at": self.received_at,
        }


def _insert_for(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def insert_events(connection: AsyncConnection, events: Sequence[NewEvent]) -> dict[str, int]:
    """Insert new events; returns ``external_id → id`` of those that were new."""
    if not events:
        return {}
    stmt = (
        _insert_for(connection.dialect.name)(WebhookEvent)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(WebhookEvent.external_id, WebhookEvent.id)
    )
    rows = (await connection.execute(stmt, [event.row() for event in events])).all()
    return {str(external_id): int(event_id) for external_id, event_id in rows}


async def existing_ids(
    connection: AsyncConnection, source: str, external_ids: Sequence[str]
) -> dict[str, int]:
    """``external_id → id`` of events already stored for ``source``."""
    if not external_ids:
        return {}
    query = select(WebhookEvent.external_id, WebhookEvent.id).where(
        tuple_(WebhookEvent.source, WebhookEvent.external_id).in_(
            [(source, external_id) for external_id in external_ids]
        )
    )
    return {str(e): int(i) for e, i in (await connection.execute(query)).all()}


async def mark_enqueued(connection: AsyncConnection, ids: Sequence[int], at: datetime) -> None:
    """Their runs reached the broker (only ``accepted`` events move on)."""
    if ids:
        await connection.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(ids), WebhookEvent.status == "accepted")
            .values(status="enqueued", updated_at=at)
        )


@dataclass(frozen=True, slots=True)
class StaleEvent:
    """An accepted event whose run may never have reached the broker."""

    id: int
    run_id: str


async def stale_accepted(
    connection: AsyncConnection, accepted_before: datetime, limit: int = 500
) -> list[StaleEvent]:
    """Events ``accepted`` (stored or replayed) before ``accepted_before`` and still not
    enqueued (for the relay)."""
    query = (
        select(WebhookEvent.id, WebhookEvent.run_id)
        .where(WebhookEvent.status == "accepted", WebhookEvent.updated_at < accepted_before)
        .order_by(WebhookEvent.id)
        .limit(limit)
    )
    return [
        StaleEvent(int(i), str(r))
        for i, r in (await connection.execute(query)).all()
        if r is not None
    ]


async def mark_finished(
    connection: AsyncConnection,
    outcomes: Sequence[tuple[int, str, str, dict[str, str] | None]],
    at: datetime,
) -> None:
    """Record each ``(event_id, status, run_id, error)`` a finished run reported."""
    for event_id, status, run_id, error in outcomes:
        await connection.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(status=status, run_id=run_id, error=error, updated_at=at)
        )


@dataclass(slots=True)
class EventFilter:
    """Filters of ``GET /v1/webhooks/events``."""

    source: str | None = None
    status: str | None = None
    event_type: str | None = None
    received_after: datetime | None = None
    received_before: datetime | None = None


async def list_events(
    session: AsyncSession, filters: EventFilter, *, limit: int, after_id: int | None
) -> list[WebhookEvent]:
    """Newest first; fetches limit+1 to tell whether another page exists."""
    query = select(WebhookEvent)
    if filters.source is not None:
        query = query.where(WebhookEvent.source == filters.source)
    if filters.status is not None:
        query = query.where(WebhookEvent.status == filters.status)
    if filters.event_type is not None:
        query = query.where(WebhookEvent.event_type == filters.event_type)
    if filters.received_after is not None:
        query = query.where(WebhookEvent.received_at >= filters.received_after)
    if filters.received_before is not None:
        query = query.where(WebhookEvent.received_at < filters.received_before)
    if after_id is not None:
        query = query.where(WebhookEvent.id < after_id)
    query = query.order_by(WebhookEvent.id.desc()).limit(limit + 1)
    return list((await session.execute(query)).scalars())


async def get_event(session: AsyncSession, event_id: int) -> WebhookEvent | None:
    """One event."""
    return await session.get(WebhookEvent, event_id)


async def point_to_run(
    connection: AsyncConnection, event_id: int, run_id: str, at: datetime
) -> None:
    """A replay: the event is processed again by a new run."""
    await connection.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(status="accepted", run_id=run_id, error=None, updated_at=at)
    )
