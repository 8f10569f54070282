"""After a run with ``deliver_to`` succeeds, queue the delivery of its result.

Tasks that deliver their own result (``run_agent_task``, ``process_webhook_event``)
deliver inside the run, so a failed delivery retries the run. Any other task on a
schedule or webhook route with ``deliver_to`` gets a follow-up ``deliver_run_result``
run: its own retries, its own history, and the task itself stays unaware of delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMiddleware

from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.runtime import runtime_of
from jobs_service.middlewares.outcome import outcome_of

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from taskiq import TaskiqMessage, TaskiqResult

    from jobs_service.core.run_context import RunContext

__all__ = ["DELIVER_TASK", "ResultDeliveryMiddleware"]

DELIVER_TASK = "deliver_run_result"
_log = get_logger("jobs_service.delivery")


class ResultDeliveryMiddleware(TaskiqMiddleware):
    """Queues ``deliver_run_result`` for successful runs that did not deliver themselves."""

    def post_execute(
        self, message: TaskiqMessage, result: TaskiqResult[Any]
    ) -> Coroutine[Any, Any, None] | None:
        """For a run to deliver, the queueing to await; None otherwise (most runs)."""
        del message
        run = current_run()
        if run is None or not run.deliver_to or run.delivered:
            return None
        if not outcome_of(result, run).succeeded or run.task == DELIVER_TASK:
            return None
        return self._queue_delivery(run)

    async def _queue_delivery(self, run: RunContext) -> None:
        """Queue the follow-up under the run's idempotency key: one per run, even if
        this attempt is delivered twice.

        The key is claimed in the database. While the database is down (the run's own
        record then waits too) the follow-up is queued without the key, which needs
        only Redis: a second follow-up sends nothing twice, as ``deliver_run_result``
        skips what was already sent, while a follow-up never queued is a result never
        delivered. Never raises (it must not block the acknowledgement): when Redis
        refuses too, ``delivery-not-queued`` is logged and ``deliver_run_result`` can be
        queued by hand.
        """
        from jobs_service.client import (  # noqa: PLC0415 - client imports tasks
            EnqueueUnconfirmedError,
            JobsClient,
        )

        # Not schedule_id: the follow-up must not count as the schedule's own run, or
        # an overlap=skip schedule would skip fires while it retries.
        kwargs, source = {"run_id": run.run_id}, run.source
        key = f"deliver-run-result:{run.run_id}"
        try:
            client = JobsClient(self.broker, runtime_of(self.broker))
            try:
                await client.enqueue(DELIVER_TASK, kwargs, source=source, idempotency_key=key)
            except Exception as keyed:  # noqa: BLE001 - the database, most likely: no key
                if isinstance(keyed, EnqueueUnconfirmedError) and keyed.recorded:
                    # Claimed with its key, its send unconfirmed: it is queued once all the
                    # same (resend_unconfirmed_runs), so no second follow-up.
                    _log.warning("delivery-queued-unconfirmed", follow_up_run_id=keyed.run_ids[0])
                    return
                follow_up = await client.enqueue(DELIVER_TASK, kwargs, source=source)
                _log.warning(
                    "delivery-queued-without-key",
                    follow_up_run_id=follow_up,
                    error_type=type(keyed).__name__,
                    error=str(keyed)[:300],
                )
        except Exception as exc:  # noqa: BLE001 - must not block the ack
            _log.error("delivery-not-queued", error_type=type(exc).__name__, error=str(exc)[:300])
