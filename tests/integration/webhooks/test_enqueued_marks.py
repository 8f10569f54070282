"""Background ``enqueued`` marks: written on a short timer, kept while the database is
unreachable, never lost silently."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import WebhookEvent
from jobs_service.infrastructure.repositories import webhooks as repo
from jobs_service.webhooks.enqueued_marks import EnqueuedMarks
from tests.support.processes import free_port

pytestmark = pytest.mark.anyio


async def _stored_events(database: Database, count: int) -> list[tuple[int, str]]:
    """``(event id, run id)`` of ``count`` new accepted events."""
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    events = [
        repo.NewEvent(
            "billing", f"mark-{tag}-{n}", None, {}, "{}", "record_webhook", f"r{tag}{n}", now
        )
        for n in range(count)
    ]
    async with database.engine.begin() as connection:
        stored = await repo.insert_events(connection, events)
    return [(event_id, run_id) for run_id, event_id in stored.items()]


async def _statuses(database: Database, ids: list[int]) -> set[str]:
    async with database.sessions() as session:
        query = select(WebhookEvent.status).where(WebhookEvent.id.in_(ids))
        return set((await session.execute(query)).scalars())


async def test_marks_are_written_in_the_background(pg_url: str) -> None:
    """Added ids become ``enqueued`` within the interval, without anyone flushing."""
    database = Database(pg_url, DatabaseSettings())
    marks = EnqueuedMarks(database, interval_s=0.02)
    try:
        sent = await _stored_events(database, 3)
        ids = [event_id for event_id, _ in sent]
        marks.add(sent)
        for _ in range(100):  # pending empties as a write starts: wait for its commit
            await asyncio.sleep(0.02)
            statuses = await _statuses(database, ids)
            if statuses == {"enqueued"}:
                break
    finally:
        await marks.aclose()
        await database.close()
    assert statuses == {"enqueued"}


async def test_marks_that_cannot_be_written_stay_pending() -> None:
    """Database unreachable: flush raises and keeps the ids for the next attempt; closing
    gives up with a warning instead of an error."""
    database = Database(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/jobs",
        DatabaseSettings(connect_timeout_s=1),
    )
    marks = EnqueuedMarks(database, interval_s=60)
    marks.add([(1, "r1"), (2, "r2"), (3, "r3")])
    try:
        with pytest.raises(ConnectionRefusedError):
            await marks.flush()
        pending = marks.pending
        await marks.aclose()
    finally:
        await database.close()
    assert pending == 3
