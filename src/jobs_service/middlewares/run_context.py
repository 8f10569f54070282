"""Enter a :class:`RunContext` for the duration of each task execution.

Run metadata travels in message labels (``source``, ``queued_at``, ``schedule_id``…)
set by the producer; tasks sent with a bare ``.kiq()`` get sensible defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from taskiq import TaskiqMiddleware

from jobs_service.core.run_context import clear_run, context_from_labels, set_run
from jobs_service.infrastructure.progress import BrokerProgressSink

if TYPE_CHECKING:
    from taskiq import AsyncBroker, TaskiqMessage, TaskiqResult

__all__ = ["RunContextMiddleware", "context_from_labels"]


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
