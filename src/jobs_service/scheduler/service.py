"""The rules of schedules, shared by the HTTP API and ``jobsctl schedules``.

Label schedules belong to the code: operators may pause and resume them, never edit or
delete them (a 409 says so), nor give an API schedule a name a label schedule uses or
could use (a registered task's name, or ``<task>#<n>``). Resuming computes the next
fire from now, so a long pause does not replay what it skipped. Every scheduler replica
sees a change at its next tick, because each tick reads the due schedules from the
database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from jobs_service.core.errors import JobsError
from jobs_service.core.timing import InvalidScheduleError, upcoming, validate_timezone
from jobs_service.infrastructure.models import Schedule
from jobs_service.infrastructure.repositories import schedules as repo
from jobs_service.scheduler.labels import split_label_schedule_name
from jobs_service.scheduler.specs import (
    OnceSpec,
    ScheduleDraft,
    SchedulePatch,
    spec_columns,
    timing_for,
)
from jobs_service.tasks.registry import TASK_NAME_PATTERN, UnknownTaskError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from jobs_service.client import JobsClient
    from jobs_service.core.timing import Timing
    from jobs_service.infrastructure.database import Database
    from jobs_service.infrastructure.models import JobRun

__all__ = [
    "ScheduleConflictError",
    "ScheduleInvalidError",
    "ScheduleNotFoundError",
    "ScheduleService",
    "next_fires",
    "timing_problem",
]

_LABEL_EDITABLE = frozenset({"enabled", "paused_note"})


class ScheduleNotFoundError(JobsError):
    """No schedule with that id."""


class ScheduleConflictError(JobsError):
    """The change conflicts with the schedule's state (label-owned, duplicate name)."""


class ScheduleInvalidError(JobsError):
    """The schedule cannot work as submitted (e.g. a one-off time in the past)."""


def _readable_timing(schedule: Schedule) -> tuple[Timing, ZoneInfo]:
    """The schedule's timing and zone, or :class:`InvalidScheduleError` when this host
    cannot read them (a zone its tz database lacks, a row another version wrote)."""
    return timing_for(schedule), validate_timezone(schedule.timezone)


def timing_problem(schedule: Schedule) -> str | None:
    """Why this host cannot work out the schedule's fires, or None: such a schedule does
    not fire here (the scheduler logs ``schedule-invalid``) and shows no next fires."""
    try:
        _readable_timing(schedule)
    except InvalidScheduleError as exc:
        return str(exc)
    return None


def next_fires(
    schedule: Schedule, *, now: datetime | None = None, count: int = 5
) -> list[dict[str, str]]:
    """The next fires as ``{"utc", "local"}`` ISO 8601 strings (local: the schedule's
    zone); empty for a paused or finished schedule, or one whose timing this host cannot
    read (see :func:`timing_problem`)."""
    if not schedule.enabled or schedule.finished_at is not None:
        return []
    try:
        timing, zone = _readable_timing(schedule)
    except InvalidScheduleError:
        return []
    now = now or datetime.now(UTC)
    start = schedule.next_fire_at
    fires = upcoming(timing, now, count)
    if start is not None and start <= now:  # due right now: show it first
        fires = [start, *upcoming(timing, start, count - 1)]
    return [
        {"utc": fire.isoformat().replace("+00:00", "Z"), "local": fire.astimezone(zone).isoformat()}
        for fire in fires[:count]
    ]


def _first_fire(schedule: Schedule, now: datetime) -> datetime:
    """The next fire, or a clear error for a timing that cannot fire (or be read)."""
    try:
        fire = timing_for(schedule).next_after(now)
    except InvalidScheduleError as exc:
        raise ScheduleInvalidError(f"schedule: {exc}") from None
    if fire is None:
        msg = "the schedule would never fire (no future time matches its timing)"
        raise ScheduleInvalidError(msg)
    return fire


class ScheduleService:
    """Create, change, pause, delete and trigger schedules."""

    def __init__(self, database: Database, client: JobsClient) -> None:
        self._database = database
        self._client = client

    async def get(self, schedule_id: int) -> Schedule:
        """One schedule or :class:`ScheduleNotFoundError`."""
        async with self._database.sessions() as session:
            schedule = await repo.get_schedule(session, schedule_id)
        if schedule is None:
            raise ScheduleNotFoundError(f"no schedule {schedule_id}")
        return schedule

    async def recent_runs(self, schedule_id: int, limit: int = 10) -> list[JobRun]:
        """The schedule's newest runs."""
        async with self._database.sessions() as session:
            return await repo.recent_runs(session, schedule_id, limit)

    def _refuse_label_names(self, name: str) -> None:
        """409 for a name a label schedule uses or could use: the scheduler syncs label
        schedules under their task's name (``<task>#<n>`` from the second cron on), and
        names are unique across sources."""
        task, number = split_label_schedule_name(name)
        if number is not None and (TASK_NAME_PATTERN.fullmatch(task) or self._is_task(task)):
            msg = (
                f"the name {name!r} has the form <task>#<n>, which is kept for the label "
                "schedules of tasks; choose another name"
            )
            raise ScheduleConflictError(msg)
        if number is None and self._is_task(name):
            msg = (
                f"the name {name!r} is kept for the label schedule of task {name}; "
                "choose another name"
            )
            raise ScheduleConflictError(msg)

    def _is_task(self, name: str) -> bool:
        try:
            self._client.task(name)
        except UnknownTaskError:
            return False
        return True

    async def create(self, draft: ScheduleDraft, *, created_by: str | None) -> Schedule:
        """Validate name, task, kwargs and timing, then store; 409 on a duplicate name or
        one kept for label schedules."""
        self._refuse_label_names(draft.name)
        try:
            request = self._client.prepare(
                draft.task, draft.kwargs, source="schedule", deliver_to=draft.deliver_to
            )
        except UnknownTaskError as exc:
            raise ScheduleInvalidError(f"task: {exc}") from None
        now = datetime.now(UTC)
        if isinstance(draft.schedule, OnceSpec) and draft.schedule.at <= now:
            msg = f"schedule.at {draft.schedule.at.isoformat()} is in the past"
            raise ScheduleInvalidError(msg)
        schedule = Schedule(
            name=draft.name,
            task=request.info.name,
            kwargs=request.kwargs,
            enabled=draft.enabled,
            overlap=draft.overlap,
            catchup_window_s=draft.catchup_window_s,
            deliver_to=request.deliver_to,
            description=draft.description,
            source="api",
            created_by=created_by,
            created_at=now,
            updated_at=now,
            **spec_columns(draft.schedule, now),
        )
        schedule.next_fire_at = _first_fire(schedule, now)
        return await self._store_new(schedule)

    async def _store_new(self, schedule: Schedule) -> Schedule:
        try:
            async with self._database.sessions.begin() as session:
                session.add(schedule)
        except IntegrityError:
            msg = f"a schedule named {schedule.name!r} already exists"
            raise ScheduleConflictError(msg) from None
        return schedule

    async def update(self, schedule_id: int, patch: SchedulePatch) -> Schedule:
        """Apply the given fields; label schedules accept only pause/resume."""
        changes = patch.model_dump(exclude_unset=True)
        now = datetime.now(UTC)
        try:
            async with self._database.sessions.begin() as session:
                schedule = await repo.get_schedule(session, schedule_id)
                if schedule is None:
                    raise ScheduleNotFoundError(f"no schedule {schedule_id}")
                self._apply(schedule, changes, patch, now)
        except IntegrityError:
            msg = f"a schedule named {patch.name!r} already exists"
            raise ScheduleConflictError(msg) from None
        return schedule

    def _apply_arguments(
        self, schedule: Schedule, changes: dict[str, Any], patch: SchedulePatch
    ) -> None:
        """New kwargs or delivery targets, validated together as a fire will use them.

        A task that delivers its own result (``run_agent_task``) takes ``deliver_to``
        as an argument, so the schedule keeps a copy of the targets in its kwargs; a new
        ``deliver_to`` (or ``null``) must replace that copy, which a fire would
        otherwise prefer to the schedule's ``deliver_to``.
        """
        kwargs = dict((patch.kwargs or {}) if "kwargs" in changes else schedule.kwargs)
        if "deliver_to" in changes:
            deliver_to = patch.deliver_to
            if self._client.task(schedule.task).takes("deliver_to"):
                kwargs.pop("deliver_to", None)
        else:
            deliver_to = schedule.deliver_to
        request = self._client.prepare(
            schedule.task, kwargs, source="schedule", deliver_to=deliver_to
        )
        schedule.kwargs = request.kwargs
        changes["deliver_to"] = request.deliver_to

    def _apply(
        self, schedule: Schedule, changes: dict[str, Any], patch: SchedulePatch, now: datetime
    ) -> None:
        if schedule.source == "label" and set(changes) - _LABEL_EDITABLE:
            fields = ", ".join(sorted(set(changes) - _LABEL_EDITABLE))
            msg = (
                f"schedule {schedule.id} comes from the labels of task {schedule.task} "
                f"and can only be paused or resumed here (not: {fields})"
            )
            raise ScheduleConflictError(msg)
        if "name" in changes and changes["name"] != schedule.name:
            self._refuse_label_names(changes["name"])
        if "kwargs" in changes or "deliver_to" in changes:
            self._apply_arguments(schedule, changes, patch)
        if patch.schedule is not None:
            if isinstance(patch.schedule, OnceSpec) and patch.schedule.at <= now:
                msg = f"schedule.at {patch.schedule.at.isoformat()} is in the past"
                raise ScheduleInvalidError(msg)
            for key, value in spec_columns(patch.schedule, now).items():
                setattr(schedule, key, value)
            schedule.finished_at = None
        for key in (
            "name",
            "overlap",
            "catchup_window_s",
            "deliver_to",
            "description",
            "paused_note",
        ):
            if key in changes:
                setattr(schedule, key, changes[key])
        resumed = changes.get("enabled") is True and not schedule.enabled
        if "enabled" in changes and changes["enabled"] is not None:
            schedule.enabled = bool(changes["enabled"])
            if schedule.enabled:
                schedule.paused_note = changes.get("paused_note")
        if resumed or patch.schedule is not None:
            # From now on: neither a resume nor a new timing replays the past.
            schedule.next_fire_at = _first_fire(schedule, now)
        schedule.updated_at = now

    async def delete(self, schedule_id: int) -> None:
        """Delete an API schedule; label schedules are refused (pause them instead)."""
        async with self._database.sessions.begin() as session:
            schedule = await repo.get_schedule(session, schedule_id)
            if schedule is None:
                raise ScheduleNotFoundError(f"no schedule {schedule_id}")
            if schedule.source == "label":
                msg = (
                    f"schedule {schedule_id} comes from the labels of task "
                    f"{schedule.task}; remove the label in code, or pause it"
                )
                raise ScheduleConflictError(msg)
            await repo.delete_schedule(session, schedule_id)

    async def trigger(self, schedule_id: int) -> str:
        """Run the schedule's task now (outside its timing; overlap is not applied).

        The run is the schedule's like any fire, so its result goes where the schedule's
        ``deliver_to`` says: an operator's trigger is often how a report is re-sent. As
        for a fire, a Teams channel no longer configured fails only that delivery.
        """
        schedule = await self.get(schedule_id)
        return await self._client.enqueue(
            schedule.task,
            schedule.kwargs,
            source="schedule",
            schedule_id=schedule.id,
            scheduled_for=datetime.now(UTC),
            deliver_to=schedule.deliver_to,
            check_channels=False,
        )
