"""The scheduler loop ticks the database schedules at every second, even after a stall."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from taskiq import InMemoryBroker, ScheduledTask, ScheduleSource, TaskiqScheduler

from jobs_service.scheduler.loop import JobsSchedulerLoop
from jobs_service.scheduler.source import DISPATCH_ID, DatabaseScheduleSource

pytestmark = pytest.mark.anyio

_SECOND = datetime(2030, 1, 7, 9, 0, 13, tzinfo=UTC)


def _entry(schedule_id: str) -> ScheduledTask:
    return ScheduledTask(
        schedule_id=schedule_id, task_name=schedule_id, labels={}, args=[], kwargs={}, interval=1
    )


async def test_the_dispatch_entry_is_due_at_a_turn_that_follows_a_late_one() -> None:
    """A turn woke 0.6 s late at 12.6 s; at 13.0 s TaskIQ's rounding (0.4 s → 0) would
    skip the entry. The dispatch entry is due all the same; another entry keeps
    TaskIQ's rule."""
    loop = JobsSchedulerLoop(TaskiqScheduler(InMemoryBroker(), sources=[]))
    late = _SECOND - timedelta(seconds=0.4)
    loop.interval_tasks_last_run[DISPATCH_ID] = late
    loop.interval_tasks_last_run["other"] = late

    assert loop._is_schedule_ready_to_send(task=_entry(DISPATCH_ID), now=_SECOND)
    assert not loop._is_schedule_ready_to_send(task=_entry("other"), now=_SECOND)


class _Ticks(TaskiqScheduler):
    """Notes when each dispatch comes (wall clock, as TaskIQ's loop keeps time)."""

    def __init__(self) -> None:
        super().__init__(InMemoryBroker(), sources=[DatabaseScheduleSource()])
        self.at: list[float] = []
        self.ticked = asyncio.Event()

    async def on_ready(self, source: ScheduleSource, task: ScheduledTask) -> None:
        del source
        if task.schedule_id == DISPATCH_ID:
            self.at.append(time.time())
            self.ticked.set()


async def test_after_the_event_loop_stalls_past_a_second_no_second_goes_without_a_tick() -> None:
    """The event loop is held 1.2 s from half a second after the first tick, so the next
    turn wakes 0.7 s late; the turn after it, at the next whole second, must tick too."""
    scheduler = _Ticks()
    running = asyncio.create_task(JobsSchedulerLoop(scheduler).run())
    try:
        await asyncio.wait_for(scheduler.ticked.wait(), timeout=5)
        first = scheduler.at[0]
        await asyncio.sleep(max(0.0, first + 0.5 - time.time()))
        time.sleep(1.2)  # noqa: ASYNC251 - the stall under test
        await asyncio.sleep(first + 3.3 - time.time())
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    after = [round(at - first, 3) for at in scheduler.at]
    assert any(1.6 <= at < 2 for at in after), after  # the turn woken late
    # TaskIQ's turns start on whole seconds; its rounding would skip the one at 2 s
    # (0.3 s after the late one).
    seconds = {int(at) - int(first) for at in scheduler.at}
    assert seconds >= {0, 1, 2, 3}, after
