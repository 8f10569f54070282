"""Retry failed attempts of tasks labelled ``retry_on_error``, with backoff and a cap.

TaskIQ's own retry middlewares re-send at once (the Redis stream broker has no delayed
delivery) and count attempts in a label our history does not share. This one:

- retries only what can succeed later: not :class:`PermanentError` (a 4xx, bad input)
  nor :class:`ConfigurationError`, which need a person, not another attempt, and never
  a cancelled run;
- waits ``retry_backoff_s * 2**(attempt-1)`` capped at ``retry_backoff_max_s``, jittered
  down to half of that ("equal jitter": retries spread out, yet never come sooner than
  half the backoff), and never less than a provider's ``Retry-After``;
- re-sends the same run id with ``attempt + 1`` (labelled ``automatic_retry``, which a
  cancellation made while the attempt ran also covers), so history, logs and the
  idempotency keys agents send all stay those of one run;
- marks the attempt ``retrying``, or ``dead`` after the last one (the dead letter).

The re-send happens in ``post_execute``, before the failed attempt is acknowledged: a
crash in between re-delivers the failed attempt, it never loses the run. While Redis is
unreachable the send is tried again with backoff (the failed attempt's message stays
held meanwhile), so a Redis restart does not turn a retryable failure into a final one.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMessage, TaskiqMiddleware
from taskiq.labels import prepare_label

from jobs_service.core.errors import ConfigurationError, PermanentError, RetryLater
from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.delayed import send_later
from jobs_service.infrastructure.redis_values import REDIS_UNREACHABLE
from jobs_service.infrastructure.runtime import runtime_of
from jobs_service.middlewares.cancellation import (
    AUTOMATIC_RETRY_LABEL,
    RunCancelled,
    cancellation_of,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from taskiq import TaskiqResult

    from jobs_service.core.run_context import RunContext

__all__ = ["RetryMiddleware", "retry_delay_s"]

_log = get_logger("jobs_service.retry")
_NOT_RETRYABLE = (PermanentError, ConfigurationError, RunCancelled)
#: Waits between tries of a retry's send while Redis is unreachable.
_SEND_BACKOFF_S = 0.1
_SEND_BACKOFF_MAX_S = 5.0


def retry_delay_s(attempt: int, *, base_s: float, cap_s: float, retry_after: float | None) -> float:
    """Delay before attempt ``attempt + 1``: jittered exponential backoff, capped."""
    backoff = min(cap_s, base_s * 2 ** max(attempt - 1, 0))
    delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not security
    # The provider's word wins over our cap (agents already bound it to an hour).
    return max(delay, retry_after) if retry_after is not None else delay


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


class RetryMiddleware(TaskiqMiddleware):
    """Schedules the next attempt of a failed, retryable run.

    The backoff comes from the process's runtime settings (``[worker]``), read at each
    failure, so the worker's configuration applies whoever built the broker.
    """

    def post_execute(
        self, message: TaskiqMessage, result: TaskiqResult[Any]
    ) -> Coroutine[Any, Any, None] | None:
        """Decide the retry before the other middlewares record the outcome; the send,
        when there is one, is the awaitable returned (nothing to await for a success:
        this runs for every message)."""
        run = current_run()
        if run is None or not result.is_err or not _flag(message.labels.get("retry_on_error")):
            return None
        error = result.error
        if isinstance(error, _NOT_RETRYABLE):
            return None
        max_retries = int(message.labels.get("max_retries", 3))
        if run.attempt > max_retries:
            run.exhausted = True
            return None
        cancellations = cancellation_of(self.broker)
        if cancellations is not None and cancellations.find(
            run.run_id, run.attempt + 1, automatic=True
        ):
            return None
        return self._send_retry(run, message, error)

    async def _send_retry(
        self, run: RunContext, message: TaskiqMessage, error: BaseException | None
    ) -> None:
        retry_after = error.retry_after if isinstance(error, RetryLater) else None
        worker = runtime_of(self.broker).settings.worker
        delay = retry_delay_s(
            run.attempt,
            base_s=worker.retry_backoff_s,
            cap_s=worker.retry_backoff_max_s,
            retry_after=retry_after,
        )
        labels = dict(message.labels)
        labels_types = dict(message.labels_types or {})
        labels["attempt"], labels_types["attempt"] = prepare_label(run.attempt + 1)
        labels[AUTOMATIC_RETRY_LABEL], labels_types[AUTOMATIC_RETRY_LABEL] = prepare_label(True)
        retry = TaskiqMessage(
            task_id=message.task_id,
            task_name=message.task_name,
            labels=labels,
            labels_types=labels_types,
            args=message.args,
            kwargs=message.kwargs,
        )
        encoded = self.broker.formatter.dumps(retry)
        backoff = _SEND_BACKOFF_S
        while True:
            try:
                await send_later(self.broker, encoded, delay)
            except REDIS_UNREACHABLE as exc:
                # Redis is restarting: the failed attempt's message is still held (its
                # lease renewed), so wait for Redis rather than lose the retries; a
                # worker stopping meanwhile leaves the attempt to be re-delivered.
                _log.warning(
                    "retry-send-retrying",
                    run_id=run.run_id,
                    error=str(exc)[:300],
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _SEND_BACKOFF_MAX_S)
            except Exception as exc:  # noqa: BLE001 - the attempt stays `failed`, on record
                _log.error(
                    "retry-not-scheduled", error_type=type(exc).__name__, error=str(exc)[:300]
                )
                return
            else:
                break
        run.retry_in_s = delay
