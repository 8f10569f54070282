"""TaskIQ's scheduler loop, with the dispatch entry ready at every turn.

TaskIQ's loop wakes on every whole second and sends an interval entry when
``round(seconds since its last send) >= round(interval)``. A turn that wakes more than
half a second late (the event loop held up: a long garbage collection, a slow tick, a
busy embedded gateway) stamps that send at, say, 12.6 s; the next turn, at 13.0 s, finds
0.4 s passed, rounds it to 0 and skips the entry, so every fire due in that second is
enqueued a second late. The dispatch entry is not a schedule but the clock of the
database schedules, so :class:`JobsSchedulerLoop` makes it ready at every turn. TaskIQ
still runs one dispatch at a time (a turn that finds the last one running skips it),
and :class:`~jobs_service.scheduler.source.JobsScheduler` serialises ticks besides; so
a tick that itself takes longer than a second still makes the next one wait for the
following turn, which claims the fires due meanwhile (the dispatch's grace keeps them
from counting as missed).

``jobsctl scheduler`` and the embedded scheduler of ``jobsctl run`` run this loop
(:func:`run_scheduler_loop`). ``taskiq scheduler jobs_service.scheduler:scheduler``
builds TaskIQ's own loop and keeps its rounding.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from taskiq.cli.scheduler.run import SchedulerLoop

from jobs_service.core.logging import get_logger
from jobs_service.scheduler.source import DISPATCH_ID

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable
    from datetime import datetime

    from taskiq import ScheduledTask, ScheduleSource, TaskiqScheduler

__all__ = ["JobsSchedulerLoop", "run_scheduler_loop"]

_log = get_logger("jobs_service.scheduler")


class JobsSchedulerLoop(SchedulerLoop):
    """TaskIQ's loop; the dispatch entry is due at every turn (see the module docstring)."""

    def _is_schedule_ready_to_send(self, task: ScheduledTask, now: datetime) -> bool:
        if task.schedule_id == DISPATCH_ID:
            return True
        return super()._is_schedule_ready_to_send(task=task, now=now)


async def run_scheduler_loop(scheduler: TaskiqScheduler) -> None:
    """Start ``scheduler`` and its sources, run :class:`JobsSchedulerLoop` until
    cancelled, then shut both down: what TaskIQ's ``run_scheduler`` does, on this loop
    (it builds its own loop class inside).

    Every part that started is shut down whatever ends the loop, each on its own: one
    whose shutdown fails is logged and does not keep the others open, nor hide the
    error that ended the loop or its start.
    """
    started: list[ScheduleSource] = []
    try:
        for source in scheduler.sources:
            await source.startup()
            started.append(source)
        await scheduler.startup()
    except BaseException:
        await _shut_down(source.shutdown for source in reversed(started))
        raise
    try:
        await JobsSchedulerLoop(scheduler).run(skip_first_run=True)
    finally:
        await _shut_down([scheduler.shutdown, *(s.shutdown for s in reversed(started))])


async def _shut_down(shutdowns: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Shut each part down in turn, each to its end: a cancellation that arrives
    meanwhile (a second signal) is raised once all are done, not into a part that is
    waiting for the tick in progress, which would leave it and the rest open."""
    cancelled = False
    for shutdown in shutdowns:
        part = asyncio.ensure_future(shutdown())
        while not part.done():
            try:
                await asyncio.shield(part)
            except asyncio.CancelledError:
                if part.cancelled():
                    break
                cancelled = True
            except Exception:  # noqa: BLE001 - the part's own error, read below
                break
        if not part.cancelled() and (exc := part.exception()) is not None:
            _log.error(
                "scheduler-shutdown-failed",
                part=type(getattr(shutdown, "__self__", shutdown)).__name__,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
    if cancelled:
        raise asyncio.CancelledError
