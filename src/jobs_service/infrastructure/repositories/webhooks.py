"""Queries on ``webhook_events``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from jobs_service.infrastructure.documents import document
from jobs_service.infrastructure.models import WebhookEvent
from jobs_service.infrastructure.repositories.runs_bulk import insert_queued

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from jobs_service.infrastructure.held_connection import HeldConnection
    from jobs_service.infrastructure.repositories.runs import QueuedRun

__all__ = [
    "EventFilter",
    "NewEvent",
    "StaleEvent",
    "WebhookOutcome",
    "allocate_event_ids",
    "delete_settled_before",
    "existing_ids",
    "get_event",
    "insert_events",
    "list_events",
    "mark_enqueued",
    "mark_finished",
    "point_to_run",
    "stale_accepted",
    "store_events_with_runs",
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


#: What a finished (or unroutable) run reports for its webhook event: ``(event_id,
#: status, run_id, error)``, recorded by :func:`mark_finished`.
WebhookOutcome: TypeAlias = tuple[int, str, str, dict[str, str] | None]


def _insert_for(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def insert_events(connection: AsyncConnection, events: Sequence[NewEvent]) -> dict[str, int]:
    """Insert the events that are new; returns ``run_id → id`` of those inserted.

    Keyed by run id, which each incoming event gets its own of, so that when two events
    of one batch share ``(source, external_id)`` exactly one of them is reported new.
    Rows are written in ``(source, external_id)`` order: two concurrent batches sharing
    events then wait for each other instead of deadlocking. (The inbox's batches on
    PostgreSQL use :func:`store_events_with_runs` instead.)
    """
    if not events:
        return {}
    ordered = sorted(events, key=lambda event: (event.source, event.external_id))
    stmt = (
        _insert_for(connection.dialect.name)(WebhookEvent)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(WebhookEvent.run_id, WebhookEvent.id)
    )
    result = await connection.execute(stmt, [event.row() for event in ordered])
    rows: Sequence[Any] = result.all()
    return {str(run_id): int(event_id) for run_id, event_id in rows}


_PG_ALLOCATE_IDS = (
    "SELECT nextval(pg_get_serial_sequence('webhook_events', 'id')) "
    "FROM generate_series(1, $1::integer)"
)


async def allocate_event_ids(held: HeldConnection, count: int) -> list[int]:
    """``count`` new ids of ``webhook_events`` from its own sequence (PostgreSQL), so an
    event's run can be prepared, with the event's id in its arguments, before either is
    written. ``held`` is an autocommit connection."""
    return [int(value) for (value,) in await held.fetch(_PG_ALLOCATE_IDS, count)]


#: One statement (so, in autocommit, one round trip and one commit) for a whole batch:
#: the new events, and the queued runs of those of them that were new. A run whose
#: event turned out to be a duplicate is not inserted. Events are written in
#: ``(source, external_id)`` order, as :func:`insert_events` does.
_PG_STORE_EVENTS_WITH_RUNS = f"""
WITH new_events AS (
    INSERT INTO webhook_events
        (id, source, external_id, event_type, headers, body, task, run_id, status, error,
         received_at, updated_at)
    SELECT id, source, external_id, event_type, headers::jsonb, body, task, run_id, status,
           error::jsonb, received_at, received_at
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
        AS e(id, source, external_id, event_type, headers, body, task, run_id, status,
             error, received_at)
    ON CONFLICT (source, external_id) DO NOTHING
    RETURNING run_id, id
), new_runs AS (
    {insert_queued("$12", "WHERE run_id IN (SELECT run_id FROM new_events)")}
)
SELECT run_id, id FROM new_events
"""  # noqa: S608 - constant columns and placeholders only


async def store_events_with_runs(
    held: HeldConnection,
    events: Sequence[NewEvent],
    ids: Mapping[str, int],
    failed: Mapping[str, dict[str, str]],
    runs: Sequence[QueuedRun],
) -> dict[str, int]:
    """Insert the events that are new, each with the id ``ids`` holds for its run id,
    and the ``runs`` of those (PostgreSQL, one statement); returns ``run_id → id`` of
    the events inserted.

    An event in ``failed`` (its run could not be built) is stored ``failed`` with that
    error and has no run. ``held`` is an autocommit connection: the statement is its
    own transaction.
    """
    if not events:
        return {}
    ordered = sorted(events, key=lambda event: (event.source, event.external_id))
    errors = [failed.get(e.run_id) for e in ordered]
    rows = await held.fetch(
        _PG_STORE_EVENTS_WITH_RUNS,
        [ids[e.run_id] for e in ordered],
        [e.source for e in ordered],
        [e.external_id for e in ordered],
        [e.event_type for e in ordered],
        [document(e.headers) for e in ordered],
        [e.body for e in ordered],
        [e.task for e in ordered],
        [e.run_id for e in ordered],
        ["accepted" if error is None else "failed" for error in errors],
        [None if error is None else document(error) for error in errors],
        [e.received_at for e in ordered],
        document([run.row() for run in runs]),
    )
    return {str(run_id): int(event_id) for run_id, event_id in rows}


async def existing_ids(
    connection: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """``(source, external_id) → id`` of the events stored under those keys."""
    found: dict[tuple[str, str], int] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _CHUNK):
        query = select(WebhookEvent.source, WebhookEvent.external_id, WebhookEvent.id).where(
            tuple_(WebhookEvent.source, WebhookEvent.external_id).in_(
                unique[start : start + _CHUNK]
            )
        )
        for source, external_id, event_id in (await connection.execute(query)).all():
            found[str(source), str(external_id)] = int(event_id)
    return found


#: Ids per statement: well under SQLite's limit of bound parameters.
_CHUNK = 400


_PG_MARK_ENQUEUED = """
UPDATE webhook_events AS w SET status = 'enqueued', updated_at = $3
FROM unnest($1::bigint[], $2::text[]) AS m(id, run_id)
WHERE w.id = m.id AND w.run_id = m.run_id AND w.status = 'accepted'
"""


async def mark_enqueued(
    connection: AsyncConnection, sent: Sequence[tuple[int, str]], at: datetime
) -> None:
    """Their runs reached the broker: each ``(event id, run id)``, if the event is still
    ``accepted`` for that run. A mark that lands late, after the run ended and an
    operator replayed the event, must not pass the replay's run off as sent."""
    if not sent:
        return
    if connection.dialect.name == "postgresql":
        ids, run_ids = zip(*sent, strict=True)
        await connection.exec_driver_sql(_PG_MARK_ENQUEUED, (list(ids), list(run_ids), at))
        return
    for start in range(0, len(sent), _CHUNK):
        chunk = sent[start : start + _CHUNK]
        await connection.execute(
            update(WebhookEvent)
            .where(
                tuple_(WebhookEvent.id, WebhookEvent.run_id).in_(chunk),
                WebhookEvent.status == "accepted",
            )
            .values(status="enqueued", updated_at=at)
        )


@dataclass(frozen=True, slots=True)
class StaleEvent:
    """An accepted event whose run may never have reached the broker."""

    id: int
    run_id: str
    accepted_at: datetime


async def stale_accepted(
    connection: AsyncConnection, accepted_before: datetime, limit: int = 500
) -> list[StaleEvent]:
    """Events ``accepted`` (stored or replayed) before ``accepted_before`` and still not
    enqueued (for the relay)."""
    query = (
        select(WebhookEvent.id, WebhookEvent.run_id, WebhookEvent.updated_at)
        .where(
            WebhookEvent.status == "accepted",
            WebhookEvent.updated_at < accepted_before,
            WebhookEvent.run_id.is_not(None),
        )
        .order_by(WebhookEvent.id)
        .limit(limit)
    )
    return [StaleEvent(int(i), str(r), at) for i, r, at in (await connection.execute(query)).all()]


async def mark_finished(
    connection: AsyncConnection,
    outcomes: Sequence[WebhookOutcome],
    at: datetime,
) -> None:
    """Record each ``(event_id, status, run_id, error)`` a finished run reported, on
    events still processed by that run: once a replay gave an event a new run, an
    earlier run ending (a retry of it, say) must not overwrite the new run's state."""
    for event_id, status, run_id, error in outcomes:
        await connection.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.run_id == run_id)
            .values(status=status, error=error, updated_at=at)
        )


#: An event in one of these states is done with: its run has ended, and a replay would
#: start a new one from the stored body.
SETTLED_STATUSES = ("processed", "failed")


async def delete_settled_before(session: AsyncSession, cutoff: datetime, *, batch_size: int) -> int:
    """Delete up to ``batch_size`` processed or failed events last changed before
    ``cutoff``; returns the count.

    Accepted and enqueued events are never deleted: their runs have not ended, and an
    accepted event may exist nowhere else. Batches keep each transaction small, as a
    body can be a megabyte.
    """
    old_enough = WebhookEvent.status.in_(SETTLED_STATUSES) & (WebhookEvent.updated_at < cutoff)
    found = await session.execute(select(WebhookEvent.id).where(old_enough).limit(batch_size))
    ids = list(found.scalars())
    if not ids:
        return 0
    # Checked again: a replay or retry committed since the SELECT made the event live.
    result = await session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(ids), old_enough))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
) -> bool:
    """A replay: the event is processed again by a new run. Only a settled event moves
    on (False otherwise): the run of an ``accepted`` or ``enqueued`` one has not ended,
    and would be left behind, never relayed or never recorded on the event."""
    result = await connection.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status.in_(SETTLED_STATUSES))
        .values(status="accepted", run_id=run_id, error=None, updated_at=at)
    )
    return bool(result.rowcount)
