"""Record every attempt's state changes in ``job_runs`` through the batched recorder.

An attempt cancelled before it started is not recorded: the cancel wrote the run's final
state and the attempt's row, and a late copy of the message must not touch a run an
operator has retried since.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMiddleware

from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.repositories.runs import RunEvent
from jobs_service.infrastructure.runtime import runtime_of
from jobs_service.middlewares.cancellation import never_started
from jobs_service.middlewares.outcome import outcome_of

if TYPE_CHECKING:
    from taskiq import TaskiqMessage, TaskiqResult

    from jobs_service.core.run_context import RunContext

__all__ = ["RunRecordingMiddleware"]

_log = get_logger("jobs_service.run_recorder")


class RunRecordingMiddleware(TaskiqMiddleware):
    """Queues ``running`` and final-state events; the recorder writes them in batches.

    Neither hook may raise: an exception here would skip TaskIQ's result saving and
    acknowledgement, and the message would be redelivered forever; losing one history
    event is the lesser harm (it is logged as ``run-record-dropped``).
    """

    def _event(self, run: RunContext, status: str, worker: str) -> RunEvent:
        return RunEvent(
            run.run_id,
            run.task,
            run.kwargs,
            run.source,
            status,
            run.attempt,
            worker,
            run.queued_at,
            run.started_at,
            schedule_id=run.schedule_id,
            scheduled_for=run.scheduled_for,
            webhook_event_id=run.webhook_event_id,
            deliver_to=run.deliver_to,
        )

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Record ``running`` (written at the next flush if the run has not ended)."""
        run = current_run()
        if run is None or never_started(message):
            return message
        try:
            runtime = runtime_of(self.broker)
            runtime.recorder.record_start(
                run.run_id, partial(self._event, run, "running", runtime.worker_name)
            )
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            _dropped("running", exc)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Record the attempt's outcome with summary, error and duration."""
        run = current_run()
        if run is None or never_started(message):
            return
        outcome = outcome_of(result, run)
        try:
            runtime = runtime_of(self.broker)
            event = self._event(run, outcome.status, runtime.worker_name)
            event.finished_at = run.finished_at or datetime.now(UTC)
            event.duration_ms = run.elapsed_ms()
            event.summary = outcome.summary
            event.error = outcome.error
            event.content = run.content
            event.progress = run.progress  # the last report, written with the end
            runtime.recorder.record(event)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            _dropped(outcome.status, exc)


def _dropped(status: str, exc: Exception) -> None:
    _log.error(
        "run-record-dropped", status=status, error_type=type(exc).__name__, error=str(exc)[:300]
    )
