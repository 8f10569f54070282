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


async def _stored_events(database: Database, count: int) -> list[int]:
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    events = [
        repo.NewEvent(
            "billing", f"mark-{tag}-{n}", None, {}, "{}", "record_webhook", f"r{tag}{n}", now
        )
        for n in range(count)
    ]
    async with database.engine.begin() as connection:
        return list((await repo.insert_events(connection, events)).values())


async def _statuses(database: Database, ids: list[int]) -> set[str]:
    async with database.sessions() as session:
        query = select(WebhookEvent.status).where(WebhookEvent.id.in_(ids))
        return set((await session.execute(query)).scalars())


async def test_marks_are_written_in_the_background(pg_url: str) -> None:
    """Added ids become ``enqueued`` within the interval, without anyone flushing."""
    database = Database(pg_url, DatabaseSettings())
    marks = EnqueuedMarks(database, interval_s=0.02)
    try:
        ids = await _stored_events(database, 3)
        marks.add(ids)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if marks.pending == 0:
                break
        statuses = await _statuses(database, ids)
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
    marks.add([1, 2, 3])
    try:
        with pytest.raises(ConnectionRefusedError):
            await marks.flush()
        pending = marks.pending
        await marks.aclose()
    finally:
        await database.close()
    assert pending == 3
