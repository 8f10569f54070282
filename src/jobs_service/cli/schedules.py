"""``jobsctl schedules``: the same rules as the API, straight against the database."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfoNotFoundError

from jobs_service.cli.context import run_async, shared_broker
from jobs_service.cli.errors import EXIT_FAILED, CliError
from jobs_service.cli.output import print_table
from jobs_service.core.errors import JobsError

if TYPE_CHECKING:
    import argparse

    from jobs_service.core.settings import Settings
    from jobs_service.infrastructure.models import Schedule

__all__ = ["schedules"]


def _timing(schedule: Schedule) -> str:
    if schedule.kind == "cron":
        return f"cron {schedule.cron} ({schedule.timezone})"
    if schedule.kind == "interval":
        return f"every {schedule.interval_s}s"
    return f"once at {schedule.at.isoformat() if schedule.at else '?'}"


def _one_line(exc: Exception) -> CliError:
    """The line (and exit code) for an error of a schedules action: 1 when the schedule
    is missing or the broker is down, 2 when the action cannot be done as asked (a
    conflict, a finished one-off resumed, a task a deploy removed or changed)."""
    from jobs_service.client import EnqueueError  # noqa: PLC0415
    from jobs_service.scheduler.service import ScheduleNotFoundError  # noqa: PLC0415

    if isinstance(exc, ZoneInfoNotFoundError):
        return CliError(f"the schedule's timezone is unknown on this host: {exc}")
    if isinstance(exc, ScheduleNotFoundError | EnqueueError):
        return CliError(str(exc), EXIT_FAILED)
    return CliError(str(exc))


def schedules(args: argparse.Namespace, settings: Settings) -> int:
    """Dispatch the ``schedules`` actions."""
    from jobs_service.gateway.app import create_app  # noqa: PLC0415
    from jobs_service.gateway.schemas import RunOut, ScheduleOut  # noqa: PLC0415
    from jobs_service.infrastructure.repositories import schedules as repo  # noqa: PLC0415
    from jobs_service.scheduler.service import (  # noqa: PLC0415
        ScheduleService,
        next_fires,
        timing_problem,
    )
    from jobs_service.scheduler.specs import SchedulePatch  # noqa: PLC0415

    broker = shared_broker()

    async def act() -> Any:
        app = create_app(settings, broker=broker, announce=False)
        async with app.router.lifespan_context(app):
            runtime = app.state.runtime
            service = ScheduleService(runtime.database, app.state.client)
            if args.action == "list":  # every schedule, a page at a time
                found: list[Any] = []
                after: int | None = None
                async with runtime.database.sessions() as session:
                    while True:
                        page = await repo.list_schedules(
                            session, repo.ScheduleFilter(task=args.task), limit=500, after_id=after
                        )
                        found.extend(page[:500])
                        if len(page) <= 500:
                            return found
                        after = page[499].id
            if args.action == "show":
                schedule = await service.get(args.schedule_id)
                return {
                    **ScheduleOut.of(schedule).model_dump(mode="json"),
                    "next_fires": next_fires(schedule),
                    "recent_runs": [
                        RunOut.of(run).model_dump(mode="json")
                        for run in await service.recent_runs(schedule.id)
                    ],
                    "timing_error": timing_problem(schedule),
                }
            if args.action == "trigger":
                return {"run_id": await service.trigger(args.schedule_id)}
            patch = (
                SchedulePatch(enabled=False, paused_note=args.note)
                if args.action == "pause"
                else SchedulePatch(enabled=True)
            )
            schedule = await service.update(args.schedule_id, patch)
            return {
                "id": schedule.id,
                "name": schedule.name,
                "enabled": schedule.enabled,
                "next_fires": next_fires(schedule),
            }

    try:
        result = run_async(act())
    except (JobsError, ZoneInfoNotFoundError) as exc:
        raise _one_line(exc) from None
    if args.action != "list":
        print(json.dumps(result, indent=2))
        return 0
    if args.json:
        print(json.dumps([ScheduleOut.of(s).model_dump(mode="json") for s in result], indent=2))
        return 0
    print_table(
        ["ID", "NAME", "TASK", "TIMING", "SOURCE", "STATE", "NEXT FIRE (UTC)"],
        [
            [
                str(s.id),
                s.name,
                s.task,
                _timing(s),
                s.source,
                "enabled" if s.enabled else ("finished" if s.finished_at else "paused"),
                s.next_fire_at.strftime("%Y-%m-%d %H:%M:%S")
                if s.next_fire_at and s.enabled
                else "-",
            ]
            for s in result
        ],
    )
    return 0
