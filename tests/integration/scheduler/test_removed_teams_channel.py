"""A schedule's deliver_to names a Teams channel the configuration no longer has (the
alias was renamed or removed, or a scheduler replica runs with a configuration without
it): its fires still run the task, and only the delivery there fails, visibly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from jobs_service.broker import broker
from jobs_service.infrastructure.repositories import deliveries
from jobs_service.scheduler.source import warn_of_unknown_channels
from jobs_service.scheduler.specs import SchedulePatch
from jobs_service.tasks.registry import InvalidKwargsError
from tests.support.logs import logged_lines
from tests.support.scheduling import Harness, harness

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.models import Delivery, Schedule

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
EVERY_MINUTE = {"type": "cron", "cron": "* * * * *"}
SALES = {"teams": {"sales": {"webhook_url": "https://prod-00.example.com/workflows/s?sig=x"}}}


async def _schedule_delivering_to_sales(settings: Settings) -> Schedule:
    """Created while [channels.teams.sales] exists."""
    async with harness(settings) as h:
        return await h.create(
            task="count_items",
            kwargs={"items": ["a"]},
            schedule=EVERY_MINUTE,
            deliver_to={"teams_channel": "sales"},
        )


async def _deliveries(h: Harness, run_id: str) -> list[Delivery]:
    """The run's deliveries once its follow-up delivery has run."""
    found: list[Delivery] = []
    for _ in range(100):
        await broker.wait_all()  # type: ignore[attr-defined]
        await h.app.state.runtime.recorder.wait_flushed()
        async with h.database.sessions() as session:
            found = await deliveries.list_for_run(session, [run_id])
        if found and found[0].status == "failed":
            break
        await asyncio.sleep(0.05)
    return found


async def test_a_removed_teams_alias_does_not_stop_the_scheduled_task_from_running(
    make_settings: Callable[..., Settings], empty_pg_url: str
) -> None:
    """Each fire was claimed `skipped` / `invalid_task`: the job's own work (here
    count_items) silently stopped, although only its delivery could no longer be made.
    Now the fire runs the task, and the delivery to the missing channel is `failed`
    on the run, with a configuration error naming the setting."""
    schedule = await _schedule_delivering_to_sales(
        make_settings(database_url=empty_pg_url, channels=SALES)
    )
    async with harness(make_settings(database_url=empty_pg_url)) as h:  # alias gone
        await h.set_next_fire(schedule.id, T0)
        await h.dispatcher().tick(T0 + timedelta(milliseconds=10))
        runs = await h.runs_of(schedule.id)
        fires = await h.fires_of(schedule.id)
        assert [(f.outcome, f.reason) for f in fires] == [("enqueued", None)]
        assert [(run.status, run.summary) for run in runs] == [
            ("succeeded", {"processed": 1, "errors": 0})
        ]
        [delivery] = await _deliveries(h, runs[0].run_id)
    assert (delivery.channel, delivery.target, delivery.status) == ("teams", "sales", "failed")
    assert delivery.error is not None
    assert delivery.error["type"] == "ConfigurationError"
    assert "no [channels.teams.sales] is configured" in delivery.error["message"]


async def test_a_trigger_runs_the_task_whatever_its_teams_alias(
    make_settings: Callable[..., Settings], empty_pg_url: str
) -> None:
    """Run now is a fire like the others: it was refused as invalid arguments."""
    schedule = await _schedule_delivering_to_sales(
        make_settings(database_url=empty_pg_url, channels=SALES)
    )
    async with harness(make_settings(database_url=empty_pg_url)) as h:
        run_id = await h.service.trigger(schedule.id)
        runs = await h.runs_of(schedule.id)
        [delivery] = await _deliveries(h, run_id)
    assert [(run.run_id, run.status) for run in runs] == [(run_id, "succeeded")]
    assert delivery.status == "failed"


async def test_creating_or_patching_a_schedule_still_refuses_an_unknown_alias(
    make_settings: Callable[..., Settings], empty_pg_url: str
) -> None:
    """Where an operator is there to be told, an alias that is not configured is
    refused (a 422 through the API)."""
    schedule = await _schedule_delivering_to_sales(
        make_settings(database_url=empty_pg_url, channels=SALES)
    )
    async with harness(make_settings(database_url=empty_pg_url, channels=SALES)) as h:
        with pytest.raises(InvalidKwargsError, match="unknown Teams channel 'marketing'"):
            await h.create(
                task="count_items",
                kwargs={"items": ["a"]},
                schedule=EVERY_MINUTE,
                deliver_to={"teams_channel": "marketing"},
            )
        with pytest.raises(InvalidKwargsError, match="unknown Teams channel 'marketing'"):
            await h.service.update(
                schedule.id, SchedulePatch(deliver_to={"teams_channel": "marketing"})
            )


async def test_the_scheduler_names_the_schedules_whose_alias_is_unknown_at_start(
    make_settings: Callable[..., Settings],
    empty_pg_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The fires of such a schedule no longer stop, so its failed deliveries are what
    shows it; the scheduler also says it once at start-up, per schedule."""
    stale = await _schedule_delivering_to_sales(
        make_settings(database_url=empty_pg_url, channels=SALES)
    )
    ops = {"teams": {"ops": {"webhook_url": "https://prod-00.example.com/workflows/o?sig=y"}}}
    async with harness(make_settings(database_url=empty_pg_url, channels=ops)) as h:
        fine = await h.create(
            task="count_items",
            kwargs={"items": []},
            schedule=EVERY_MINUTE,
            deliver_to={"teams_channel": "ops", "email": ["ops@example.com"]},
        )
        logged_lines(capfd)  # what the start logged so far
        unknown = await warn_of_unknown_channels(h.app.state.runtime)
        lines = [line for line in logged_lines(capfd) if "schedule-unknown-channel" in line]
    assert fine.id not in unknown
    assert unknown == [stale.id]
    assert len(lines) == 1
    assert "[channels.teams.sales]" in lines[0]
