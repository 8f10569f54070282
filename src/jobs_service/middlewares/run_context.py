"""Enter a :class:`RunContext` for the duration of each task execution.

Run metadata travels in message labels (``source``, ``queued_at``, ``schedule_id``…)
set by the producer; tasks sent with a bare ``.kiq()`` get sensible defaults.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from taskiq import TaskiqMiddleware

from jobs_service.core.run_context import RunContext, clear_run, set_run
from jobs_service.infrastructure.progress import BrokerProgressSink

if TYPE_CHECKING:
    from taskiq import AsyncBroker, TaskiqMessage, TaskiqResult

__all__ = ["RunContextMiddleware", "context_from_labels"]


# Labels come from whoever produced the message. A middleware that raised here would
# skip TaskIQ's ack and leave the message pending forever, so a bad label is ignored.


def _optional_int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not value or not isinstance(value, str):
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def context_from_labels(message: TaskiqMessage) -> RunContext:
    """Build the run context from a received message."""
    labels = message.labels
    attempt = _optional_int(labels.get("attempt"))
    if attempt is None:  # TaskIQ's own retry middlewares count retries in `_retries`
        attempt = (_optional_int(labels.get("_retries")) or 0) + 1
    now = datetime.now(UTC)
    return RunContext(
        run_id=message.task_id,
        task=message.task_name,
        # A copy: TaskIQ later replaces the values in place with parsed objects (models),
        # which the run record could not store as JSON.
        kwargs=dict(message.kwargs),
        attempt=max(attempt, 1),
        source=str(labels.get("source") or "api"),
        queued_at=_timestamp(labels.get("queued_at")) or now,
        schedule_id=_optional_int(labels.get("schedule_id")),
        scheduled_for=_timestamp(labels.get("scheduled_for")),
        webhook_event_id=_optional_int(labels.get("webhook_event_id")),
        deliver_to=_json_object(labels.get("deliver_to")),
        started_at=now,
    )


class RunContextMiddleware(TaskiqMiddleware):
    """Sets the current run and binds ``run_id``/``task`` to every log line of the task.

    Each context gets the broker's progress sink: one object made when the middleware
    joins its broker, which resolves the progress writer only when a run reports, so a
    run that never reports pays one attribute store.
    """

    _progress_sink: BrokerProgressSink | None = None

    def set_broker(self, broker: AsyncBroker) -> None:
        """Join ``broker`` and make its progress sink."""
        super().set_broker(broker)
        self._progress_sink = BrokerProgressSink(broker)

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Enter the run before the task (and the other middlewares) see it."""
        context = context_from_labels(message)
        context.progress_sink = self._progress_sink
        set_run(context)
        structlog.contextvars.bind_contextvars(run_id=context.run_id, task=context.task)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Leave the run after every other middleware has used it."""
        structlog.contextvars.unbind_contextvars("run_id", "task")
        clear_run()
