"""The scheduler loop ticks the database schedules at every second, even after a stall."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pytest
from taskiq import InMemoryBroker, ScheduledTask, ScheduleSource, TaskiqScheduler
from taskiq.cli.scheduler import run as taskiq_scheduler_run
from taskiq.cli.scheduler.run import SchedulerLoop

from jobs_service.core.logging import flush_logs
from jobs_service.scheduler.loop import JobsSchedulerLoop, run_scheduler_loop
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


class _Clock:
    """The wall clock of TaskIQ's loop module, moved on only by that loop's sleeps, so
    a stall is exactly as long as the test says, whatever the machine is doing.

    ``late`` is how much longer than asked the next sleep lasts: an event loop held up.
    The loop's sends run (as tasks) before the clock moves on.
    """

    def __init__(self, start: datetime, until_s: float) -> None:
        self.start = start
        self.elapsed = 0.0
        self.late = 0.0
        self.until_s = until_s
        self.finished = asyncio.Event()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    async def sleep(self, seconds: float) -> None:
        for _ in range(10):  # the turn's sends: create_task, on_ready
            await asyncio.sleep(0)
        if self.elapsed >= self.until_s:
            self.finished.set()
            await asyncio.Event().wait()  # until the test cancels the loop
        self.elapsed += max(0.0, seconds) + self.late
        self.late = 0.0


def _patch_clock(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    class _Datetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Any:
            del tz
            return clock.now()

    class _Asyncio:
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        sleep = staticmethod(clock.sleep)

    monkeypatch.setattr(taskiq_scheduler_run, "datetime", _Datetime)
    monkeypatch.setattr(taskiq_scheduler_run, "asyncio", _Asyncio())


class _Ticks(TaskiqScheduler):
    """Notes the second of each dispatch; after the second one, the loop's next sleep
    lasts 0.7 s longer."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__(InMemoryBroker(), sources=[DatabaseScheduleSource()])
        self.clock = clock
        self.at: list[float] = []

    async def on_ready(self, source: ScheduleSource, task: ScheduledTask) -> None:
        del source
        if task.schedule_id == DISPATCH_ID:
            self.at.append(round(self.clock.now().second + self.clock.now().microsecond / 1e6, 3))
            if len(self.at) == 2:
                self.clock.late = 0.7


@pytest.mark.parametrize(
    ("loop_class", "ticked_seconds"),
    [
        (JobsSchedulerLoop, [13, 14, 15, 16, 17]),
        # TaskIQ's own loop, as the reason for ours: if this starts failing, TaskIQ no
        # longer skips a second after a late turn and JobsSchedulerLoop can go.
        (SchedulerLoop, [13, 14, 15, 17]),
    ],
    ids=["jobs", "taskiq"],
)
async def test_after_a_turn_wakes_late_the_next_whole_second_still_ticks(
    monkeypatch: pytest.MonkeyPatch, loop_class: type[SchedulerLoop], ticked_seconds: list[int]
) -> None:
    """The loop starts at 12.3 s and ticks at 13 and 14 s; the sleep after that lasts
    0.7 s too long, so the next turn wakes at 15.7 s. The turn at 16.0 s, 0.3 s later,
    must tick too: TaskIQ's rounding (0.3 s -> 0) skips it."""
    clock = _Clock(datetime(2030, 1, 7, 9, 0, 12, 300_000, tzinfo=UTC), until_s=4.2)
    _patch_clock(monkeypatch, clock)
    scheduler = _Ticks(clock)
    running = asyncio.create_task(loop_class(scheduler).run())
    try:
        await asyncio.wait_for(clock.finished.wait(), timeout=10)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert scheduler.at[2] == 15.7, scheduler.at  # the turn that woke late
    assert sorted({int(at) for at in scheduler.at}) == ticked_seconds, scheduler.at


def _logged(capfd: pytest.CaptureFixture[str]) -> str:
    """What was logged, wherever this test process's logging configuration sends it
    (lines logged in this loop turn included)."""
    flush_logs()
    captured = capfd.readouterr()
    return captured.out + captured.err


class _Part(ScheduleSource):
    """A schedule source that notes its start and stop; its stop may fail."""

    def __init__(self, name: str, journal: list[str], *, stop_fails: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.stop_fails = stop_fails

    async def get_schedules(self) -> list[ScheduledTask]:
        return []

    async def startup(self) -> None:
        self.journal.append(f"start {self.name}")

    async def shutdown(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.stop_fails:
            msg = f"{self.name} would not stop"
            raise RuntimeError(msg)


class _Scheduler(TaskiqScheduler):
    """Notes its start and stop; either may fail."""

    def __init__(
        self, sources: list[ScheduleSource], journal: list[str], *, fails: str = ""
    ) -> None:
        super().__init__(InMemoryBroker(), sources=sources)
        self.journal = journal
        self.fails = fails
        self.started = asyncio.Event()

    async def startup(self) -> None:
        self.journal.append("start scheduler")
        if self.fails == "start":
            msg = "schedules unreachable"
            raise RuntimeError(msg)
        self.started.set()

    async def shutdown(self) -> None:
        self.journal.append("stop scheduler")
        if self.fails == "stop":
            msg = "scheduler would not stop"
            raise RuntimeError(msg)
        if self.fails == "slow stop":  # a tick in progress to wait for
            await asyncio.sleep(0.05)
            self.journal.append("scheduler stopped")


async def _running_loop(*, fails: str) -> tuple[list[str], asyncio.Task[None]]:
    """The loop of a scheduler with sources a and b, started; its journal and task."""
    journal: list[str] = []
    sources: list[ScheduleSource] = [_Part("a", journal), _Part("b", journal)]
    scheduler = _Scheduler(sources, journal, fails=fails)
    running = asyncio.create_task(run_scheduler_loop(scheduler))
    await asyncio.wait_for(scheduler.started.wait(), timeout=5)
    return journal, running


async def test_a_part_that_fails_to_stop_does_not_keep_the_others_open(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The scheduler's shutdown fails: both sources are still shut down (in reverse
    order), the failure is logged, and the cancellation that ended the loop goes on."""
    journal, running = await _running_loop(fails="stop")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert journal == [
        "start a",
        "start b",
        "start scheduler",
        "stop scheduler",
        "stop b",
        "stop a",
    ]
    logged = _logged(capfd)
    assert "scheduler-shutdown-failed" in logged
    assert "scheduler would not stop" in logged


async def test_a_failed_start_is_rolled_back_and_its_error_is_the_one_raised(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The scheduler fails to start and a started source then fails to stop: the other
    source is still stopped, and the caller gets the start's error, not the stop's."""
    journal: list[str] = []
    sources: list[ScheduleSource] = [_Part("a", journal), _Part("b", journal, stop_fails=True)]
    scheduler = _Scheduler(sources, journal, fails="start")
    with pytest.raises(RuntimeError, match="schedules unreachable"):
        await run_scheduler_loop(scheduler)
    assert journal == ["start a", "start b", "start scheduler", "stop b", "stop a"]
    logged = _logged(capfd)
    assert "scheduler-shutdown-failed" in logged
    assert "b would not stop" in logged


async def test_a_second_cancellation_does_not_cut_a_shutdown_short() -> None:
    """The loop is cancelled, and cancelled again while the scheduler waits for its
    tick in progress: that wait still ends, the sources are still shut down, and the
    cancellation is raised after."""
    journal, running = await _running_loop(fails="slow stop")
    running.cancel()
    await asyncio.sleep(0.01)
    assert journal[-1] == "stop scheduler"
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert journal[3:] == ["stop scheduler", "scheduler stopped", "stop b", "stop a"]
