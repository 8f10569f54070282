"""Helpers for scheduler tests: a migrated gateway runtime and dispatchers on it."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from jobs_service.broker import broker
from jobs_service.gateway import create_app
from jobs_service.infrastructure import migrate
from jobs_service.infrastructure.database import Database
from jobs_service.infrastructure.models import JobRun, Schedule, ScheduleFire
from jobs_service.infrastructure.repositories import runs as runs_repo
from jobs_service.infrastructure.repositories import schedules as schedules_repo
from jobs_service.scheduler.dispatch import FireDispatcher
from jobs_service.scheduler.service import ScheduleService
from jobs_service.scheduler.specs import ScheduleDraft
from tests.support.run_events import finished_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncSession

    from jobs_service.core.settings import Settings

__all__ = ["Harness", "committing_after_the_read", "harness"]


class Harness:
    """A started gateway (no scheduler loop) plus helpers to drive schedules by hand."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.database: Database = app.state.runtime.database
        self.service = ScheduleService(self.database, app.state.client)

    def dispatcher(self, replica: str = "replica-1", grace_s: float = 5.0) -> FireDispatcher:
        """A dispatcher as a scheduler process makes one."""
        return FireDispatcher(
            self.database, self.app.state.client, replica=replica, grace_s=grace_s
        )

    async def create(self, **fields: Any) -> Schedule:
        """Create an API schedule."""
        fields.setdefault("name", f"s-{datetime.now(UTC).timestamp()}")
        return await self.service.create(ScheduleDraft.model_validate(fields), created_by="test")

    async def add_active_run(self, schedule_id: int, run_id: str, at: datetime) -> None:
        """A queued run of the schedule, as if an earlier fire were still running."""
        active = runs_repo.QueuedRun(
            run_id=run_id,
            task="count_items",
            kwargs={},
            source="schedule",
            queued_at=at,
            schedule_id=schedule_id,
        )
        async with self.database.engine.begin() as connection:
            await runs_repo.insert_queued_runs(connection, [active])

    async def finish_run(self, run_id: str, at: datetime) -> None:
        """Record a run added by :meth:`add_active_run` as succeeded at ``at``."""
        finished = finished_event(
            run_id, at=at, source="schedule", worker="w", summary={"errors": 0}
        )
        async with self.database.engine.begin() as connection:
            await runs_repo.upsert_run_events(connection, [finished])

    async def set_next_fire(self, schedule_id: int, when: datetime) -> None:
        """Pretend the scheduler was away: move next_fire_at."""
        async with self.database.sessions.begin() as session:
            schedule = await session.get(Schedule, schedule_id)
            assert schedule is not None
            schedule.next_fire_at = when

    async def runs_of(self, schedule_id: int) -> list[JobRun]:
        """Runs the schedule started, oldest first (after in-process runs are recorded)."""
        await broker.wait_all()  # type: ignore[attr-defined]
        await self.app.state.runtime.recorder.wait_flushed()
        async with self.database.sessions() as session:
            query = select(JobRun).where(JobRun.schedule_id == schedule_id).order_by(JobRun.id)
            return list((await session.execute(query)).scalars())

    async def fires_of(self, schedule_id: int) -> list[ScheduleFire]:
        """Claimed fires, oldest first."""
        async with self.database.sessions() as session:
            query = (
                select(ScheduleFire)
                .where(ScheduleFire.schedule_id == schedule_id)
                .order_by(ScheduleFire.fire_time)
            )
            return list((await session.execute(query)).scalars())

    async def reload(self, schedule_id: int) -> Schedule:
        """The schedule as stored now."""
        return await self.service.get(schedule_id)


@contextlib.asynccontextmanager
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    """Migrate the database and run the gateway's lifespan around the block."""
    database = Database(settings.database_url, settings.database)
    await migrate.upgrade(database)
    await database.close()
    app = create_app(settings, broker=broker, announce=False)
    async with app.router.lifespan_context(app):
        yield Harness(app)
        await broker.wait_all()  # type: ignore[attr-defined]


def committing_after_the_read(
    change: Callable[[], Awaitable[object]],
) -> Callable[[AsyncSession, datetime], Awaitable[list[Schedule]]]:
    """A ``due_schedules`` (patch it into the repository) that lets an operator's change
    commit right after a tick read the due schedules, before it claims any fire."""
    read = schedules_repo.due_schedules

    async def read_then_change(session: AsyncSession, horizon: datetime) -> list[Schedule]:
        due = await read(session, horizon)
        await change()
        return due

    return read_then_change
