"""The run history agent's retention against the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from jobs_service.agents.run_history import DatabaseRunHistory
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import AuditEntry, WebhookEvent
from jobs_service.infrastructure.repositories import audit
from tests.support.webhook_events import store_events

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
