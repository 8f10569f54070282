"""On PostgreSQL, with replicas and operators acting at the same moment as a tick: a
pause or delete committed mid-tick is respected, and the outbox sends each run once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from jobs_service.client import EnqueueError, JobsClient
from jobs_service.infrastructure.repositories import schedules as schedules_repo
from jobs_service.scheduler.specs import SchedulePatch
from tests.support.scheduling import committing_after_the_read, harness

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from jobs_service.client import RunRequest
    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
EVERY_MINUTE = {"type": "cron", "cron": "* * * * *"}  # on T0, and not again for a minute


async def test_a_pause_committed_during_a_tick_is_respected(
    make_settings: Callable[..., Settings], empty_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator got 200 for the pause before the tick claimed the fire: no run."""
    async with harness(make_settings(database_url=empty_pg_url)) as h:
        schedule = await h.create(task="count_items", kwargs={"items": []}, schedule=EVERY_MINUTE)
        await h.set_next_fire(schedule.id, T0)

        async def pause() -> None:
            await h.service.update(schedule.id, SchedulePatch(enabled=False))

        monkeypatch.setattr(schedules_repo, "due_schedules", committing_after_the_read(pause))
        report = await h.dispatcher().tick(T0 + timedelta(milliseconds=10))
        runs = await h.runs_of(schedule.id)
        fires = await h.fires_of(schedule.id)
    assert report.fired == []
    assert runs == []
    assert fires == []


async def test_a_delete_committed_during_a_tick_leaves_the_other_fires_alone(
    make_settings: Callable[..., Settings], empty_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deleted schedule is not claimed (its claim would break the foreign key and
    fail the whole tick); the schedule due beside it fires."""
    async with harness(make_settings(database_url=empty_pg_url)) as h:
        doomed, healthy = [
            await h.create(task="count_items", kwargs={"items": []}, schedule=EVERY_MINUTE)
            for _ in range(2)
        ]
        for schedule in (doomed, healthy):
            await h.set_next_fire(schedule.id, T0)

        async def delete() -> None:
            await h.service.delete(doomed.id)

        monkeypatch.setattr(schedules_repo, "due_schedules", committing_after_the_read(delete))
        report = await h.dispatcher().tick(T0 + timedelta(milliseconds=10))
        runs = await h.runs_of(healthy.id)
    assert [(sid, at) for sid, at, _ in report.fired] == [(healthy.id, T0)]
    assert [run.scheduled_for for run in runs] == [T0]


async def test_after_a_broker_outage_each_unsent_fire_is_resent_by_one_replica(
    make_settings: Callable[..., Settings], empty_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica ticks on the same whole second once Redis is back; the outbox is
    leased, so the fire claimed during the outage is sent once, not once per replica
    (which would run it twice)."""
    async with harness(make_settings(database_url=empty_pg_url)) as h:
        schedule = await h.create(
            task="count_items", kwargs={"items": []}, schedule=EVERY_MINUTE, overlap="allow"
        )
        await h.set_next_fire(schedule.id, T0)
        real_send = JobsClient.send
        sent: list[str] = []
        broker_up = False

        async def send_unless_down(
            client: JobsClient, requests: Sequence[RunRequest], wire: Any = None
        ) -> None:
            if not broker_up:
                raise EnqueueError("redis down")
            sent.extend(request.run_id for request in requests)
            await asyncio.sleep(0.02)  # the first round trip after a reconnect
            await real_send(client, requests, wire)

        monkeypatch.setattr(JobsClient, "send", send_unless_down)
        one, two = h.dispatcher("replica-1"), h.dispatcher("replica-2")
        await one.tick(T0 + timedelta(milliseconds=10))  # claimed; the send fails
        broker_up = True
        back = T0 + timedelta(seconds=5)
        reports = await asyncio.gather(one.tick(back), two.tick(back + timedelta(milliseconds=1)))
        runs = await h.runs_of(schedule.id)
    assert len(sent) == 1
    assert sum(report.resent for report in reports) == 1
    assert [(run.run_id, run.status) for run in runs] == [(sent[0], "succeeded")]
