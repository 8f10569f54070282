"""Scheduler replicas starting at the same moment sync label schedules safely."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from jobs_service.broker import broker
from jobs_service.core.settings import DatabaseSettings
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import Schedule
from jobs_service.scheduler.labels import sync_label_schedules

pytestmark = pytest.mark.anyio


async def test_concurrent_label_syncs_create_each_schedule_once(empty_pg_url: str) -> None:
    """Four replicas syncing at once: no error, one row per label schedule."""
    databases = [Database(empty_pg_url, DatabaseSettings()) for _ in range(4)]
    await migrate.upgrade(databases[0])
    try:
        await asyncio.gather(*[sync_label_schedules(db, broker) for db in databases])
        async with databases[0].sessions() as session:
            counts = dict(
                (
                    await session.execute(
                        select(Schedule.name, func.count())
                        .where(Schedule.source == "label")
                        .group_by(Schedule.name)
                    )
                ).all()
            )
    finally:
        for database in databases:
            await database.close()
    assert counts
    assert set(counts.values()) == {1}
    assert "check_system_health" in counts
