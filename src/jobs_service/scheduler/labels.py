"""Mirror task label schedules into ``schedules`` (source ``label``).

Run when a scheduler starts: a schedule per (task, cron) is added or updated to match
the code, and label schedules whose task or cron left the code are disabled with a note
(they come back enabled if the code brings them back). Operators' pauses survive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.core.timing import CronTiming
from jobs_service.infrastructure.models import Schedule
from jobs_service.scheduler.specs import timing_for
from jobs_service.tasks.registry import list_tasks

if TYPE_CHECKING:
    from taskiq import AsyncBroker

    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.database import Database

__all__ = ["REMOVED_NOTE", "configured_services", "label_schedule_name", "sync_label_schedules"]

REMOVED_NOTE = "label removed from the code"
_log = get_logger("jobs_service.scheduler")


def label_schedule_name(task: str, index: int) -> str:
    """``check_system_health`` for a task's first cron, ``name#2`` for the second…"""
    return task if index == 0 else f"{task}#{index + 1}"


def configured_services(settings: Settings) -> frozenset[str]:
    """What a task's ``needs`` label may name and this deployment has configured."""
    available = set()
    if settings.domain_api.base_url:
        available.add("domain_api")
    if settings.graph.client_id and settings.graph.effective_token_url:
        available.add("graph")
    return frozenset(available)


def _wanted(broker: AsyncBroker, available: frozenset[str]) -> dict[str, tuple[str, str, str]]:
    wanted: dict[str, tuple[str, str, str]] = {}
    for info in list_tasks(broker):
        needs = info.labels.get("needs")
        if needs and str(needs) not in available:
            # Firing it would only fail every time with a configuration error.
            continue
        for index, cron in enumerate(info.schedules):
            try:
                CronTiming(cron, info.timezone)
            except JobsError as exc:
                _log.error("label-schedule-invalid", task=info.name, cron=cron, error=str(exc))
                continue
            wanted[label_schedule_name(info.name, index)] = (info.name, cron, info.timezone)
    return wanted


async def sync_label_schedules(
    database: Database, broker: AsyncBroker, available: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Make label schedules match the task registry; returns counts of what changed.

    Replicas starting together may race to insert the same schedule; the loser's
    transaction fails on the unique name and simply runs the sync again.
    """
    for attempt in range(3):
        try:
            return await _sync(database, broker, available)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def _sync(
    database: Database, broker: AsyncBroker, available: frozenset[str]
) -> dict[str, int]:
    wanted = _wanted(broker, available)
    now = datetime.now(UTC)
    counts = {"added": 0, "updated": 0, "disabled": 0}
    async with database.sessions.begin() as session:
        existing = {
            s.name: s
            for s in (
                await session.execute(select(Schedule).where(Schedule.source == "label"))
            ).scalars()
        }
        for name, (task, cron, zone) in wanted.items():
            schedule = existing.get(name)
            if schedule is None:
                schedule = Schedule(
                    name=name,
                    task=task,
                    kwargs={},
                    kind="cron",
                    cron=cron,
                    timezone=zone,
                    anchor_at=now,
                    enabled=True,
                    overlap="skip",
                    catchup_window_s=0,
                    source="label",
                    created_by="labels",
                    created_at=now,
                    updated_at=now,
                )
                schedule.next_fire_at = timing_for(schedule).next_after(now)
                session.add(schedule)
                counts["added"] += 1
                continue
            changed = (schedule.task, schedule.cron, schedule.timezone) != (task, cron, zone)
            revived = not schedule.enabled and schedule.paused_note == REMOVED_NOTE
            if changed or revived:
                schedule.task, schedule.cron, schedule.timezone = task, cron, zone
                if revived:
                    schedule.enabled, schedule.paused_note = True, None
                schedule.next_fire_at = timing_for(schedule).next_after(now)
                schedule.updated_at = now
                counts["updated"] += 1
        for name, schedule in existing.items():
            if name not in wanted and schedule.enabled:
                schedule.enabled, schedule.paused_note = False, REMOVED_NOTE
                schedule.updated_at = now
                counts["disabled"] += 1
    if any(counts.values()):
        _log.info("label-schedules-synced", **counts)
    return counts
