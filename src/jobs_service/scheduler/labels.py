"""Mirror task label schedules into ``schedules`` (source ``label``).

Run when a scheduler starts: a schedule per (task, cron) is added or updated to match
the code, and label schedules whose task or cron left the code are disabled with a note
(they come back enabled if the code brings them back). Operators' pauses survive.

A label schedule is named after its task (``<task>``, ``<task>#2``…) and names are
unique across sources, so the API refuses those names; a name an API schedule took
before its task got a label (or before that rule) is logged and that one label schedule
is left out, never the whole sync, which every scheduler start runs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.core.timezones import require_portable_timezone
from jobs_service.core.timing import CronTiming
from jobs_service.infrastructure.models import Schedule, column_length
from jobs_service.scheduler.specs import timing_for
from jobs_service.tasks.registry import InvalidKwargsError, list_tasks

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.ext.asyncio import AsyncSession
    from taskiq import AsyncBroker

    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.database import Database
    from jobs_service.tasks.registry import TaskInfo

__all__ = [
    "REMOVED_NOTE",
    "configured_services",
    "label_schedule_name",
    "label_schedule_problems",
    "split_label_schedule_name",
    "sync_label_schedules",
]

REMOVED_NOTE = "label removed from the code"
#: The start of the note of a label schedule paused because its label cannot work here
#: (a zone or cron this release refuses).
INVALID_NOTE = "label cannot be a schedule"
#: The column's own width, so the note is cut where the database would refuse it.
_NOTE_LENGTH = column_length(Schedule, "paused_note")
_NUMBERED_NAME = re.compile(r"(?P<task>.+)#(?P<number>[0-9]+)")
_log = get_logger("jobs_service.scheduler")


def label_schedule_name(task: str, index: int) -> str:
    """``check_system_health`` for a task's first cron, ``name#2`` for the second…"""
    return task if index == 0 else f"{task}#{index + 1}"


def split_label_schedule_name(name: str) -> tuple[str, int | None]:
    """``(task, n)`` for a name spelt ``<task>#<n>``, else ``(name, None)``: the task
    whose label schedules would use the name (its first cron's is the bare name)."""
    match = _NUMBERED_NAME.fullmatch(name)
    if match is None:
        return name, None
    return match["task"], int(match["number"])


def _timing_problem(cron: str, zone: str) -> str | None:
    """Why a schedule label cannot become a schedule, or None."""
    try:
        require_portable_timezone(zone)
        CronTiming(cron, zone)
    except JobsError as exc:
        return str(exc)
    return None


def _arguments_problem(info: TaskInfo) -> str | None:
    """Why the task cannot run with no arguments (every label fire has none), or None."""
    try:
        info.validate_kwargs({})
    except InvalidKwargsError as exc:
        return str(exc)
    return None


def label_schedule_problems(info: TaskInfo) -> list[str]:
    """What is wrong with a task's ``schedule`` labels, for ``jobsctl check``: a cron or
    zone that cannot be a schedule (the scheduler leaves it out), or required arguments
    (a label fire passes none, so every fire would be skipped)."""
    problems = [
        f"schedule label {cron!r}: {problem}"
        for cron in info.schedules
        if (problem := _timing_problem(cron, info.timezone)) is not None
    ]
    if info.schedules and (problem := _arguments_problem(info)) is not None:
        problems.append(f"schedule label fires with no arguments, but {problem}")
    return problems


def configured_services(settings: Settings) -> frozenset[str]:
    """What a task's ``needs`` label may name and this deployment has configured."""
    available = set()
    if settings.domain_api.base_url:
        available.add("domain_api")
    if settings.graph.client_id and settings.graph.effective_token_url:
        available.add("graph")
    return frozenset(available)


def _wanted(
    broker: AsyncBroker, available: frozenset[str]
) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """The label schedules to keep, by name; and those left out as unusable, with why
    (their rows are paused with that reason, not as removed from the code)."""
    wanted: dict[str, tuple[str, str, str]] = {}
    invalid: dict[str, str] = {}
    for info in list_tasks(broker):
        needs = info.labels.get("needs")
        if needs and str(needs) not in available:
            # Firing it would only fail every time with a configuration error.
            continue
        for index, cron in enumerate(info.schedules):
            problem = _timing_problem(cron, info.timezone)
            if problem is not None:
                _log.error("label-schedule-invalid", task=info.name, cron=cron, error=problem)
                invalid[label_schedule_name(info.name, index)] = problem
                continue
            wanted[label_schedule_name(info.name, index)] = (info.name, cron, info.timezone)
        problem = _arguments_problem(info) if info.schedules else None
        if problem is not None:
            _log.error(
                "label-schedule-invalid",
                task=info.name,
                error=problem,
                message="its fires are skipped until the task runs with no arguments",
            )
    return wanted, invalid


async def _names_taken(session: AsyncSession, names: Collection[str]) -> dict[str, int]:
    """Names among ``names`` that schedules of another source hold, with their ids."""
    if not names:
        return {}
    rows = await session.execute(
        select(Schedule.name, Schedule.id).where(
            Schedule.name.in_(names), Schedule.source != "label"
        )
    )
    return {name: int(schedule_id) for name, schedule_id in rows.all()}


def _log_name_taken(name: str, task: str, cron: str, holder: int) -> None:
    _log.error(
        "label-schedule-name-taken",
        schedule=name,
        task=task,
        cron=cron,
        taken_by=holder,
        message=(
            f"schedule {holder} (an API schedule) is named {name!r}: this label schedule "
            "is left out until that schedule is renamed or deleted"
        ),
    )


async def sync_label_schedules(
    database: Database, broker: AsyncBroker, available: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Make label schedules match the task registry; returns counts of what changed.

    Replicas starting together may race to insert the same schedule (or an API
    schedule may take its name meanwhile); the loser's transaction fails on the unique
    name and simply runs the sync again, which then finds the name taken.
    """
    for attempt in range(3):
        try:
            return await _sync(database, broker, available)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _new_label_schedule(name: str, task: str, cron: str, zone: str, now: datetime) -> Schedule:
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
    return schedule


async def _sync(
    database: Database, broker: AsyncBroker, available: frozenset[str]
) -> dict[str, int]:
    wanted, invalid = _wanted(broker, available)
    now = datetime.now(UTC)
    counts = {"added": 0, "updated": 0, "disabled": 0}
    async with database.sessions.begin() as session:
        existing = {
            s.name: s
            for s in (
                await session.execute(select(Schedule).where(Schedule.source == "label"))
            ).scalars()
        }
        taken = await _names_taken(session, [name for name in wanted if name not in existing])
        for name, holder in taken.items():
            task, cron, _ = wanted.pop(name)
            _log_name_taken(name, task, cron, holder)
        for name, (task, cron, zone) in wanted.items():
            schedule = existing.get(name)
            if schedule is None:
                session.add(_new_label_schedule(name, task, cron, zone, now))
                counts["added"] += 1
                continue
            changed = (schedule.task, schedule.cron, schedule.timezone) != (task, cron, zone)
            revived = not schedule.enabled and _paused_by_sync(schedule.paused_note)
            if changed or revived:
                schedule.task, schedule.cron, schedule.timezone = task, cron, zone
                if revived:
                    schedule.enabled, schedule.paused_note = True, None
                schedule.next_fire_at = timing_for(schedule).next_after(now)
                schedule.updated_at = now
                counts["updated"] += 1
        for name, schedule in existing.items():
            if name not in wanted and schedule.enabled:
                note = f"{INVALID_NOTE}: {invalid[name]}" if name in invalid else REMOVED_NOTE
                schedule.enabled, schedule.paused_note = False, note[:_NOTE_LENGTH]
                schedule.updated_at = now
                counts["disabled"] += 1
    if any(counts.values()):
        _log.info("label-schedules-synced", **counts)
    return counts


def _paused_by_sync(note: str | None) -> bool:
    """Paused by a sync (removed, or unusable), not by an operator: a later sync whose
    label is back and valid resumes it."""
    return note == REMOVED_NOTE or (note or "").startswith(INVALID_NOTE)
