"""The run history agent's retention against the real PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from jobs_service.agents.run_history import DatabaseRunHistory
from jobs_service.core.ids import new_run_id
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import (
    AuditEntry,
    JobRun,
    Schedule,
    ScheduleFire,
    WebhookEvent,
)
from jobs_service.infrastructure.repositories import audit, runs, schedules, webhooks
from tests.support.run_events import finished_event
from tests.support.webhook_events import StoredEvent, store_events

pytestmark = pytest.mark.anyio


async def test_settled_webhook_events_are_deleted_in_batches(empty_pg_url: str) -> None:
    """Five old settled events go in batches of two (three transactions); the recent
    one and the old accepted one stay."""
    database = Database(empty_pg_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        now = datetime.now(UTC)
        ages = {f"old-{n}": ("processed" if n % 2 else "failed", 20) for n in range(5)}
        ages |= {"recent": ("processed", 2), "accepted": ("accepted", 20)}
        states = {
            name: (status, now - timedelta(days=days)) for name, (status, days) in ages.items()
        }
        async with database.engine.begin() as connection:
            await store_events(connection, states, body="x" * 10_000)
        history = DatabaseRunHistory(database, delete_batch_size=2)
        deleted = await history.delete_finished_events_before(now - timedelta(days=10))
        async with database.sessions() as session:
            left = set((await session.execute(select(WebhookEvent.external_id))).scalars())
            count = (await session.execute(select(func.count(WebhookEvent.id)))).scalar_one()
    finally:
        await database.close()
    assert deleted == 5
    assert left == {"recent", "accepted"}
    assert count == 2


async def test_audit_entries_are_deleted_in_batches(empty_pg_url: str) -> None:
    """Five old entries go in batches of two; the two recent ones stay."""
    database = Database(empty_pg_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        now = datetime.now(UTC)
        ages = [400, 399, 398, 397, 366, 364, 1]
        async with database.engine.begin() as connection:
            await audit.insert_entries(
                connection,
                [
                    audit.NewAuditEntry(
                        at=now - timedelta(days=days),
                        actor="ops",
                        action="DELETE /v1/schedules/{schedule_id}",
                        target=str(days),
                        outcome=204,
                    )
                    for days in ages
                ],
            )
        history = DatabaseRunHistory(database, delete_batch_size=2)
        deleted = await history.delete_audit_entries_before(now - timedelta(days=365))
        async with database.sessions() as session:
            left = set((await session.execute(select(AuditEntry.target))).scalars())
    finally:
        await database.close()
    assert deleted == 5
    assert left == {"364", "1"}


async def test_fire_claims_are_deleted_in_batches(empty_pg_url: str) -> None:
    """A batch deletes at most its size of claims; the cleanup goes on batch after batch
    until the old ones are gone, and keeps recent and buffered claims."""
    database = Database(empty_pg_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        now = datetime.now(UTC).replace(microsecond=0)
        async with database.sessions.begin() as session:
            schedule = Schedule(
                name="claims",
                task="count_items",
                kwargs={},
                kind="interval",
                interval_s=60,
                anchor_at=now,
                source="api",
                next_fire_at=now,
                created_at=now,
                updated_at=now,
            )
            session.add(schedule)
            await session.flush()
            ages = {f"old-{n}": (20, "skipped") for n in range(5)}
            ages |= {"recent": (2, "enqueued"), "buffered": (20, "buffered")}
            session.add_all(
                ScheduleFire(
                    schedule_id=schedule.id,
                    fire_time=now - timedelta(days=days, minutes=n),
                    outcome=outcome,
                    claimed_by=name,
                    claimed_at=now,
                )
                for n, (name, (days, outcome)) in enumerate(ages.items())
            )
        async with database.sessions.begin() as session:
            one_batch = await schedules.delete_fires_before(
                session, now - timedelta(days=10), batch_size=2
            )
        await DatabaseRunHistory(database, delete_batch_size=2).delete_finished_before(now)
        async with database.sessions() as session:
            left = set((await session.execute(select(ScheduleFire.claimed_by))).scalars())
    finally:
        await database.close()
    assert one_batch == 2
    assert left == {"recent", "buffered"}


async def _old_failed_webhook_run(database: Database, old: datetime) -> tuple[StoredEvent, JobRun]:
    """A webhook event and its run, both failed at ``old``."""
    async with database.engine.begin() as connection:
        event = (await store_events(connection, {"e": ("failed", old)}))["e"]
        failed = dataclasses.replace(
            finished_event(event.run_id, at=old, status="failed"), webhook_event_id=event.id
        )
        await runs.upsert_run_events(connection, [failed])
    async with database.sessions() as session:
        run = await runs.get_run(session, run_id=event.run_id)
    assert run is not None
    return event, run


async def test_a_retried_runs_event_is_live_again_until_its_retry_ends(
    empty_pg_url: str,
) -> None:
    """A retry makes the run's settled event ``enqueued`` (cleanup must keep the body the
    retried run reads); a retry whose message could not be sent makes it failed again."""
    database = Database(empty_pg_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        old = datetime.now(UTC) - timedelta(days=40)
        event, run = await _old_failed_webhook_run(database, old)
        async with database.engine.begin() as connection:
            assert await runs.requeue_finished(connection, run, queued_at=datetime.now(UTC))
        history = DatabaseRunHistory(database)
        cutoff = datetime.now(UTC) - timedelta(days=30)
        events_deleted = await history.delete_finished_events_before(cutoff)
        async with database.sessions() as session:
            retried = await webhooks.get_event(session, event.id)
        async with database.engine.begin() as connection:
            await runs.restore_finished(connection, run)
        async with database.sessions() as session:
            restored = await webhooks.get_event(session, event.id)
    finally:
        await database.close()
    assert events_deleted == 0
    assert retried is not None
    assert retried.status == "enqueued"
    assert restored is not None
    assert restored.status == "failed"


async def test_rows_made_live_between_cleanups_select_and_delete_are_kept(
    empty_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry (of the run) and a replay (of the event) that commit right after the
    cleanup picked their rows: the DELETE checks again and keeps both."""
    database = Database(empty_pg_url, DatabaseSettings())
    try:
        await migrate.upgrade(database)
        old = datetime.now(UTC) - timedelta(days=40)
        async with database.engine.begin() as connection:
            event = (await store_events(connection, {"replayed": ("failed", old)}))["replayed"]
        _, run = await _old_failed_webhook_run(database, old)
        select_once = AsyncSession.execute
        done: set[str] = set()

        async def operator_acts_after_select(
            session: AsyncSession, statement: Any, *args: Any, **kwargs: Any
        ) -> Any:
            result = await select_once(session, statement, *args, **kwargs)
            is_select = getattr(statement, "is_select", False)
            name = (
                getattr(next(iter(statement.get_final_froms()), None), "name", "")
                if is_select
                else ""
            )
            if is_select and name not in done:
                done.add(name)
                async with database.engine.begin() as other:
                    if name == "job_runs":
                        now = datetime.now(UTC)
                        assert await runs.requeue_finished(other, run, queued_at=now)
                    elif name == "webhook_events":
                        await webhooks.point_to_run(
                            other, event.id, new_run_id(), datetime.now(UTC)
                        )
            return result

        monkeypatch.setattr(AsyncSession, "execute", operator_acts_after_select)
        history = DatabaseRunHistory(database)
        cutoff = datetime.now(UTC) - timedelta(days=30)
        runs_deleted = await history.delete_finished_before(cutoff)
        events_deleted = await history.delete_finished_events_before(cutoff)
        monkeypatch.setattr(AsyncSession, "execute", select_once)
        async with database.sessions() as session:
            run_left = await runs.get_run(session, run_id=run.run_id)
            event_left = await webhooks.get_event(session, event.id)
    finally:
        await database.close()
    assert done >= {"job_runs", "webhook_events"}
    assert (runs_deleted, events_deleted) == (0, 0)
    assert run_left is not None
    assert run_left.status == "queued"
    assert event_left is not None
    assert event_left.status == "accepted"
