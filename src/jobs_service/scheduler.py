"""*The* scheduler: ``taskiq scheduler jobs_service.scheduler:scheduler``.

Label schedules (``schedule="*/5 * * * *"`` or a list, optional ``timezone``) on
registered tasks fire through TaskIQ's scheduler loop; runs carry ``source=schedule``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskiq import ScheduledTask, ScheduleSource, TaskiqScheduler

from jobs_service.broker import broker
from jobs_service.tasks.registry import list_tasks

if TYPE_CHECKING:
    from taskiq import AsyncBroker

__all__ = ["CronLabelSource", "build_scheduler", "scheduler"]


class CronLabelSource(ScheduleSource):
    """Reads cron schedules from task labels in the Jobs Service label format."""

    def __init__(self, source_broker: AsyncBroker) -> None:
        self._broker = source_broker

    async def get_schedules(self) -> list[ScheduledTask]:
        """One scheduled task per (task, cron expression)."""
        schedules = []
        for info in list_tasks(self._broker):
            for index, cron in enumerate(info.schedules):
                schedules.append(
                    ScheduledTask(
                        schedule_id=f"label:{info.name}:{index}",
                        task_name=info.name,
                        labels={**info.wire_labels, "source": "schedule"},
                        args=[],
                        kwargs={},
                        cron=cron,
                        cron_offset=info.timezone if info.timezone != "UTC" else None,
                    )
                )
        return schedules


def build_scheduler(target: AsyncBroker) -> TaskiqScheduler:
    """A scheduler over ``target``'s label schedules."""
    return TaskiqScheduler(broker=target, sources=[CronLabelSource(target)])


scheduler = build_scheduler(broker)
