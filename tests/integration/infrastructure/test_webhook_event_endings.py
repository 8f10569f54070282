"""A webhook event's run that ends without a worker recording it (cancelled before it
started, its worker lost, an embedded process stopped) still ends its event, against
the real PostgreSQL: otherwise the event stayed `enqueued`, and retention never took it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select, update

from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun, WebhookEvent
from jobs_service.infrastructure.repositories import runs, webhooks
from tests.support.webhook_events import store_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

LOST = {"type": "WorkerLost", "message": "gone"}


@pytest.fixture
async def database(empty_pg_url: str) -> AsyncIterator[Database]:
    db = Database(empty_pg_url, DatabaseSettings())
    await migrate.upgrade(db)
    yield db
    await db.close()


async def _event_with_run(database: Database, name: str, queued_at: datetime) -> str:
    """An `enqueued` event and its `queued` run; returns the run id."""
    async with database.engine.begin() as connection:
        [event] = (await store_events(connection, {name: ("accepted", queued_at)})).values()
        run_id = event.run_id
        await webhooks.mark_enqueued(connection, [event.id], queued_at)
        await runs.insert_queued_runs(
            connection,
            [
                runs.QueuedRun(
                    run_id=run_id,
                    task="process_webhook_event",
                    kwargs={"event_id": event.id},
                    source="webhook",
                    queued_at=queued_at,
                    webhook_event_id=event.id,
                )
            ],
        )
    return run_id


async def _event_status(database: Database, name: str) -> tuple[str, str | None]:
    async with database.sessions() as session:
        event = (
            await session.execute(select(WebhookEvent).where(WebhookEvent.external_id == name))
        ).scalar_one()
    return event.status, (event.error or {}).get("type")


async def test_runs_ended_without_a_worker_end_their_events(database: Database) -> None:
    now = datetime.now(UTC)
    cancelled = await _event_with_run(database, "cancelled", now)
    lost = await _event_with_run(database, "lost", now - timedelta(minutes=10))
    await _event_with_run(database, "interrupted", now - timedelta(minutes=5))
    untouched = await _event_with_run(database, "untouched", now)
    async with database.sessions() as session:
        run = await runs.get_run(session, run_id=cancelled)
    assert run is not None
    error = {"type": "Cancelled", "message": "cancelled by ops"}
    async with database.engine.begin() as connection:
        assert await runs.mark_cancelled(connection, run, attempt=1, error=error, at=now)
        await connection.execute(
            update(JobRun)
            .where(JobRun.run_id == lost)
            .values(status="running", attempt=1, worker="gone:1:0badf00d", started_at=now)
        )
        recovered = await runs.fail_orphaned(
            connection,
            dead_workers=["gone:1:0badf00d"],
            started_before=now + timedelta(seconds=1),
            error=LOST,
            now=now,
        )
        interrupted = await runs.fail_unfinished(
            connection,
            before=now - timedelta(minutes=1),
            error={"type": "Interrupted", "message": "stopped"},
        )
    assert recovered == [lost]
    assert interrupted == 1
    assert await _event_status(database, "cancelled") == ("failed", "Cancelled")
    assert await _event_status(database, "lost") == ("failed", "WorkerLost")
    assert await _event_status(database, "interrupted") == ("failed", "Interrupted")
    assert await _event_status(database, "untouched") == ("enqueued", None)
    async with database.sessions() as session:
        still = await runs.get_run(session, run_id=untouched)
    assert still is not None
    assert still.status == "queued"
