"""Every fire time a replica decides is counted once: fired, skipped (with why) or missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from jobs_service.infrastructure.models import Schedule
from jobs_service.scheduler.specs import SchedulePatch
from tests.support.scheduling import harness

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobs_service.core.settings import Settings

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
EVERY_MINUTE = {"type": "cron", "cron": "* * * * *"}


def _count(family: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"jobs_schedule_{family}_total", labels) or 0.0


async def test_fires_are_counted_once_across_replicas(
    make_settings: Callable[..., Settings],
) -> None:
    """Two replicas tick each of three minutes: three fires, not six, and no skips (the
    loser's lost claim is the winner's fire)."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            name="metrics-two-replicas",
            task="count_items",
            kwargs={"items": []},
            schedule=EVERY_MINUTE,
            overlap="allow",
        )
        one, two = h.dispatcher("replica-1"), h.dispatcher("replica-2")
        for minute in range(3):
            at = T0 + timedelta(minutes=minute)
            await h.set_next_fire(schedule.id, at)
            await one.tick(at + timedelta(seconds=0.1))
            await two.tick(at + timedelta(seconds=0.2))
        await h.runs_of(schedule.id)
    assert _count("fires", schedule="metrics-two-replicas") == 3
    assert REGISTRY.get_sample_value(
        "jobs_schedule_skips_total", {"schedule": "metrics-two-replicas", "reason": "overlap"}
    ) in (None, 0.0)


async def test_missed_fire_times_are_counted_each(
    make_settings: Callable[..., Settings],
) -> None:
    """Away for ten and a half minutes with no catch-up window: eleven misses, no fire."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            name="metrics-missed", task="count_items", kwargs={"items": []}, schedule=EVERY_MINUTE
        )
        await h.set_next_fire(schedule.id, T0)
        await h.dispatcher().tick(T0 + timedelta(minutes=10, seconds=30))
    assert _count("misses", schedule="metrics-missed") == 11
    assert _count("fires", schedule="metrics-missed") == 0


async def test_a_paused_schedule_counts_no_misses_after_downtime(
    make_settings: Callable[..., Settings],
) -> None:
    """A paused schedule had nothing to run while the schedulers were away, so nothing
    it passed over counts as missed (JobsScheduleMissed fires on any miss)."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            name="metrics-paused-downtime",
            task="count_items",
            kwargs={"items": []},
            schedule=EVERY_MINUTE,
        )
        await h.service.update(schedule.id, SchedulePatch(enabled=False))
        await h.set_next_fire(schedule.id, T0)
        await h.dispatcher().tick(T0 + timedelta(minutes=3, milliseconds=10))
    assert _count("misses", schedule="metrics-paused-downtime") == 0
    assert _count("skips", schedule="metrics-paused-downtime", reason="paused") == 1


async def test_an_unreadable_schedule_is_an_invalid_timing_skip_once_a_minute(
    make_settings: Callable[..., Settings],
) -> None:
    """A schedule this host cannot read stays due at every tick; it is counted when
    first seen and then once a minute, so an alert on it neither floods nor goes quiet
    while the problem lasts."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            name="metrics-unreadable",
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "cron", "cron": "* * * * *", "timezone": "Europe/Berlin"},
        )
        await h.set_next_fire(schedule.id, T0)
        async with h.database.engine.begin() as connection:
            await connection.execute(
                update(Schedule).where(Schedule.id == schedule.id).values(timezone="Mars/Base")
            )
        dispatcher = h.dispatcher()
        for second in range(3):
            await dispatcher.tick(T0 + timedelta(seconds=second))
        first_minute = _count("skips", schedule="metrics-unreadable", reason="invalid_timing")
        await dispatcher.tick(T0 + timedelta(minutes=1))
    assert first_minute == 1
    assert _count("skips", schedule="metrics-unreadable", reason="invalid_timing") == 2
    assert _count("misses", schedule="metrics-unreadable") == 0


async def test_an_overlap_skip_is_counted_with_its_reason(
    make_settings: Callable[..., Settings],
) -> None:
    """overlap=skip with a run still queued: one skip, reason overlap."""
    async with harness(make_settings()) as h:
        schedule = await h.create(
            name="metrics-overlap",
            task="count_items",
            kwargs={"items": []},
            schedule={"type": "interval", "seconds": 60},
        )
        await h.add_active_run(schedule.id, "d" * 32, T0)
        await h.set_next_fire(schedule.id, T0)
        await h.dispatcher().tick(T0)
    assert _count("skips", schedule="metrics-overlap", reason="overlap") == 1
    assert _count("fires", schedule="metrics-overlap") == 0


async def test_a_buffered_fire_counts_when_its_run_starts_or_when_it_is_dropped(
    make_settings: Callable[..., Settings],
) -> None:
    """buffer_one: the waiting fire is not counted while it waits; it becomes a fire when
    the active run ends, and a paused-schedule skip if the schedule is paused first."""
    async with harness(make_settings()) as h:
        started = await h.create(
            name="metrics-buffered",
            task="count_items",
            kwargs={"items": []},
            schedule=EVERY_MINUTE,
            overlap="buffer_one",
        )
        dropped = await h.create(
            name="metrics-buffered-paused",
            task="count_items",
            kwargs={"items": []},
            schedule=EVERY_MINUTE,
            overlap="buffer_one",
        )
        dispatcher = h.dispatcher()
        for schedule, run_id in ((started, "e" * 32), (dropped, "f" * 32)):
            await h.add_active_run(schedule.id, run_id, T0)
            await h.set_next_fire(schedule.id, T0)
        await dispatcher.tick(T0)
        waiting = _count("fires", schedule="metrics-buffered")
        await h.service.update(dropped.id, SchedulePatch(enabled=False))
        await h.finish_run("e" * 32, T0)
        await dispatcher.tick(T0 + timedelta(seconds=5))
        await h.runs_of(started.id)
    assert waiting == 0
    assert _count("fires", schedule="metrics-buffered") == 1
    assert _count("fires", schedule="metrics-buffered-paused") == 0
    assert _count("skips", schedule="metrics-buffered-paused", reason="paused") == 1
