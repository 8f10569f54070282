"""Scheduling: cron, interval and one-off schedules stored in the database.

``taskiq scheduler jobs_service.scheduler:scheduler`` (or ``jobsctl scheduler``) runs
TaskIQ's scheduler over :class:`~jobs_service.scheduler.source.DatabaseScheduleSource`.
Importing this package is cheap; the ``scheduler`` object (which imports the broker and
every task module) is built on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["scheduler"]


def __getattr__(name: str) -> Any:
    if name == "scheduler":
        from jobs_service.scheduler.process import scheduler  # noqa: PLC0415

        return scheduler
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
