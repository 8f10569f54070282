"""The scheduler's outbox, on Redis: a fire whose run did reach the stream is never
queued a second time by the re-send of its claim."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from jobs_service.broker import stream_names
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.models import Schedule
from jobs_service.infrastructure.repositories import schedules as schedules_repo
from jobs_service.scheduler.dispatch import FireDispatcher
from jobs_service.scheduler.service import ScheduleService
from jobs_service.scheduler.specs import ScheduleDraft
from tests.support.clients import client_for
from tests.support.services import redis_url

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


async def test_a_fire_sent_but_not_marked_sent_is_not_queued_twice_by_the_outbox(
    migrated_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fire's run reaches Redis, then marking its claim sent fails (the database
    blinked): the claim stays in the outbox and the next tick sends the run again, with
    the same run id. The stream holds it once."""
    prefix = f"outbox-{uuid.uuid4().hex[:6]}"
    items = [f"fire-{prefix}"]
    async with client_for(migrated_pg_url, redis_url(), prefix) as client:
        await client.broker.startup()
        database = client._database
        service = ScheduleService(database, client)
        schedule = await service.create(
            ScheduleDraft.model_validate(
                {
                    "name": prefix,
                    "task": "count_items",
                    "kwargs": {"items": items},
                    "schedule": {"type": "cron", "cron": "* * * * *"},
                }
            ),
            created_by="test",
        )
        async with database.engine.begin() as connection:
            await connection.execute(
                update(Schedule).where(Schedule.id == schedule.id).values(next_fire_at=T0)
            )
        dispatcher = FireDispatcher(database, client, replica="replica-1")
        mark_sent = schedules_repo.mark_sent

        async def database_blinks(*args: object, **kwargs: object) -> None:
            raise ConnectionError("the database went away")

        monkeypatch.setattr(schedules_repo, "mark_sent", database_blinks)
        with pytest.raises(ConnectionError):
            await dispatcher.tick(T0 + timedelta(milliseconds=10))
        monkeypatch.setattr(schedules_repo, "mark_sent", mark_sent)
        report = await dispatcher.tick(T0 + timedelta(seconds=3))
        await service.delete(schedule.id)
        async with Redis.from_url(redis_url()) as redis:
            entries = await redis.xrange(stream_names(Settings(redis_prefix=prefix))["stream"])
    runs = [
        message["task_id"]
        for message in (orjson.loads(fields[b"data"]) for _, fields in entries)
        if message["kwargs"] == {"items": items}
    ]
    assert report.resent == 1  # the outbox did send it again
    assert len(runs) == 1, f"the fire's run is queued {len(runs)} times"
