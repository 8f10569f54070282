"""TaskIQ integration: our database-backed schedules on TaskIQ's scheduler loop.

TaskIQ's loop wakes on every second and asks each source which schedules are ready.
Rather than hand it every schedule (it re-reads sources only once a minute, checks cron
once a minute and has no claims, so replicas would double-fire), the source gives it a
single one-second *dispatch* entry; :class:`JobsScheduler` answers that entry by running
:class:`~jobs_service.scheduler.dispatch.FireDispatcher`, which does the real work with
the database: claims, catch-up, overlap and second-level precision. ``jobsctl
scheduler`` runs it on :class:`~jobs_service.scheduler.loop.JobsSchedulerLoop` (a tick at
every second, even after a stall); ``taskiq scheduler jobs_service.scheduler:scheduler``
on TaskIQ's own loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from taskiq import ScheduledTask, ScheduleSource, TaskiqScheduler

from jobs_service.client import JobsClient
from jobs_service.core.logging import configure_logging, get_logger
from jobs_service.core.settings import Settings
from jobs_service.infrastructure.repositories import schedules as repo
from jobs_service.infrastructure.runtime import Runtime
from jobs_service.scheduler.dispatch import FireDispatcher
from jobs_service.scheduler.labels import configured_services, sync_label_schedules

if TYPE_CHECKING:
    from taskiq import AsyncBroker

__all__ = ["DISPATCH_ID", "DatabaseScheduleSource", "JobsScheduler", "warn_of_unknown_channels"]

DISPATCH_ID = "jobs-service:dispatch"
_log = get_logger("jobs_service.scheduler")


async def warn_of_unknown_channels(runtime: Runtime) -> list[int]:
    """Log each schedule whose ``deliver_to`` names a Teams channel this configuration
    does not have (renamed or removed since the schedule was saved, or missing on this
    replica); their ids. Their fires still run the task, and each delivery to that
    channel fails with a configuration error on the run's deliveries."""
    aliases = runtime.settings.channels.teams
    async with runtime.database.sessions() as session:
        delivering = await repo.delivering_schedules(session)
    unknown = []
    for schedule_id, name, deliver_to in delivering:
        alias = deliver_to.get("teams_channel")
        if isinstance(alias, str) and alias not in aliases:
            unknown.append(schedule_id)
            _log.warning(
                "schedule-unknown-channel",
                schedule_id=schedule_id,
                name=name,
                teams_channel=alias,
                message=f"its fires run, but no result reaches Teams until "
                f"[channels.teams.{alias}] is configured or its deliver_to is changed",
            )
    return unknown


class DatabaseScheduleSource(ScheduleSource):
    """Offers TaskIQ's loop one entry that is ready every second."""

    async def get_schedules(self) -> list[ScheduledTask]:
        """The dispatch entry (its task name is never sent to a worker)."""
        return [
            ScheduledTask(
                schedule_id=DISPATCH_ID,
                task_name=DISPATCH_ID,
                labels={},
                args=[],
                kwargs={},
                interval=1,
            )
        ]


class JobsScheduler(TaskiqScheduler):
    """TaskIQ scheduler whose dispatch entry fires due database schedules."""

    def __init__(self, broker: AsyncBroker, *, manage_broker: bool = True) -> None:
        super().__init__(broker=broker, sources=[DatabaseScheduleSource()])
        self._manage_broker = manage_broker
        self._runtime: Runtime | None = None
        self._owns_runtime = False
        self._tick_lock = asyncio.Lock()
        self._closed = False
        self.dispatcher: FireDispatcher | None = None

    async def startup(self) -> None:
        """Start the broker (as a producer), the runtime, then sync label schedules.

        A start that fails or is cancelled (a SIGTERM during start-up) stops what it had
        started, so no connection is left to be dropped at exit.
        """
        try:
            runtime = await self._start()
        except BaseException:
            await self._stop_owned()
            raise
        _log.info("scheduler-started", replica=runtime.worker_name)

    async def _start(self) -> Runtime:
        if self._manage_broker:
            await super().startup()
        runtime = getattr(self.broker.state, "runtime", None)
        if not isinstance(runtime, Runtime):
            # A scheduler process of its own (`taskiq scheduler …` sets up plain logging).
            settings = Settings.load()
            configure_logging(settings.log_format, settings.log_level)
            runtime = Runtime(settings)
            self._runtime, self._owns_runtime = runtime, True
            await runtime.start()
            self.broker.state.runtime = runtime
        self._runtime = runtime
        await sync_label_schedules(
            runtime.database, self.broker, configured_services(runtime.settings)
        )
        await warn_of_unknown_channels(runtime)
        self.dispatcher = FireDispatcher(
            runtime.database, JobsClient(self.broker, runtime), replica=runtime.worker_name
        )
        return runtime

    async def on_ready(self, source: ScheduleSource, task: ScheduledTask) -> None:
        """Dispatch on our entry; anything else is TaskIQ's business."""
        if task.schedule_id != DISPATCH_ID:
            await super().on_ready(source, task)
            return
        if self.dispatcher is None or self._closed:
            return
        async with self._tick_lock:
            try:
                await self.dispatcher.tick()
            except Exception as exc:  # noqa: BLE001 - a failed tick must not stop the loop
                _log.error(
                    "schedule-tick-failed", error_type=type(exc).__name__, error=str(exc)[:500]
                )

    async def shutdown(self) -> None:
        """Stop what startup started, after the tick in progress (TaskIQ runs ticks as
        their own tasks, which stopping the loop does not stop)."""
        self._closed = True
        async with self._tick_lock:
            pass
        await self._stop_owned()
        _log.info("scheduler-stopped")

    async def _stop_owned(self) -> None:
        """Stop the runtime this scheduler started, then the broker if it manages it."""
        if self._owns_runtime and self._runtime is not None:
            await self._runtime.stop()
        if self._manage_broker:
            await super().shutdown()
