"""``job-start`` / ``job-success`` / ``job-failed`` / ``job-retry`` / ``job-dead`` log lines.

One line at each end of an attempt, with run_id, task, attempt, duration_ms and the
summary counts under ``summary`` (nested, so a count named like a log field such as
``attempt`` or ``event`` can never clash with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMiddleware

from jobs_service.core.logging import HotPathLogger
from jobs_service.core.run_context import current_run
from jobs_service.middlewares.cancellation import never_started
from jobs_service.middlewares.outcome import outcome_of

if TYPE_CHECKING:
    from taskiq import TaskiqMessage, TaskiqResult

__all__ = ["LifecycleLoggingMiddleware"]


class LifecycleLoggingMiddleware(TaskiqMiddleware):
    """Logs the start and end of every attempt."""

    def __init__(self) -> None:
        super().__init__()
        self._log = HotPathLogger("jobs_service.jobs")

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Log ``job-start``, unless the attempt was cancelled before it began (it never
        starts: ``job-cancelled`` follows alone)."""
        if never_started(message):
            return message
        run = current_run()
        attempt = run.attempt if run is not None else None
        self._log.info("job-start", attempt=attempt, source=run.source if run else None)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Log ``job-success`` or ``job-failed``."""
        run = current_run()
        outcome = outcome_of(result, run)
        fields: dict[str, Any] = {
            "attempt": run.attempt if run else None,
            "duration_ms": run.elapsed_ms() if run else int(result.execution_time * 1000),
        }
        if outcome.succeeded and outcome.summary is not None:
            self._log.info("job-success", **fields, summary=outcome.summary)
            return
        error = outcome.error or {}
        fields |= {"error_type": error.get("type"), "error": error.get("message")}
        if outcome.status == "cancelled":
            self._log.warning("job-cancelled", **fields)
        elif outcome.status == "retrying" and run is not None:
            self._log.warning("job-retry", **fields, retry_in_s=round(run.retry_in_s or 0, 3))
        elif outcome.status == "dead":
            self._log.error("job-dead", **fields)
        else:
            self._log.error("job-failed", **fields)
