"""Run progress: what a long task tells its operators while it runs.

A task calls ``await report_progress(40, "page 4 of 10")``; ``GET /v1/runs/{run_id}``
and its event stream show it. This module is the port: the validated value
(:class:`Progress`), the sink a worker plugs in (:class:`ProgressSink`) and the call tasks
make. The sink is implemented outside core (``infrastructure.progress``), so tasks and
their unit tests depend only on this module.

Reporting is fire-and-forget by design: it records the value in the run's context and
hands it to the sink, which coalesces and writes later. A task may report in a tight loop
without waiting on the database, and a database outage slows nobody's task; the run's
final record always carries the last value reported (it is written with the run's end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from jobs_service.core.run_context import current_run

if TYPE_CHECKING:
    from jobs_service.core.run_context import RunContext

__all__ = [
    "MAX_PROGRESS_MESSAGE",
    "InvalidProgressError",
    "Progress",
    "ProgressSink",
    "report_progress",
]

#: Longest message a report may carry: a status line, not a log.
MAX_PROGRESS_MESSAGE = 500


class InvalidProgressError(ValueError):
    """A progress report with a percent outside 0-100 or an unusable message."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One validated report: ``percent`` in [0, 100] and a short ``message``."""

    percent: float
    message: str = ""

    def __post_init__(self) -> None:
        percent = self.percent
        # bool is an int to Python, but `report_progress(True)` is a bug, not 1 %.
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            msg = f"percent must be a number from 0 to 100, not {type(percent).__name__}"
            raise InvalidProgressError(msg)
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            msg = f"percent must be from 0 to 100, got {percent!r}"
            raise InvalidProgressError(msg)
        message: object = self.message  # typed str, but tasks are not all type-checked
        if not isinstance(message, str):
            msg = f"message must be a string, not {type(message).__name__}"
            raise InvalidProgressError(msg)
        if len(self.message) > MAX_PROGRESS_MESSAGE:
            msg = (
                f"message is {len(self.message)} characters long; "
                f"at most {MAX_PROGRESS_MESSAGE} are allowed"
            )
            raise InvalidProgressError(msg)

    def document(self, attempt: int, at: datetime | None = None) -> dict[str, Any]:
        """The JSON stored in ``job_runs.progress`` and shown by the API.

        ``attempt`` says which attempt reported it: a retried run keeps the last progress
        of an earlier attempt until the new one reports.
        """
        percent = self.percent if isinstance(self.percent, int) else round(self.percent, 2)
        moment = at or datetime.now(UTC)
        return {
            "percent": percent,
            "message": self.message,
            "at": moment.isoformat(),
            "attempt": attempt,
        }


class ProgressSink(Protocol):
    """Where a worker sends the progress its runs report.

    ``report`` must not block or raise on I/O: it is called from the task's own code.
    It receives the run, whose ``progress`` already holds the new document.
    """

    def report(self, run: RunContext) -> None:
        """Take the run's latest progress; write it when the sink sees fit."""


async def report_progress(percent: float, message: str = "") -> None:
    """Report how far the current run is: ``percent`` from 0 to 100 and a short message.

    Raises :class:`InvalidProgressError` for a value out of range or a message longer
    than :data:`MAX_PROGRESS_MESSAGE`, whether or not a run is executing. Outside a run
    (a task function called directly, as unit tests do) it validates and does nothing
    else. It never waits on I/O; it is a coroutine so that tasks ``await`` it and a
    future sink may apply back-pressure without changing any task.
    """
    progress = Progress(percent, message)
    run = current_run()
    if run is not None:
        run.record_progress(progress)
