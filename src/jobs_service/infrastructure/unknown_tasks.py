"""What a worker does with a message whose task it does not know.

It happens in a rolling deploy: the gateway already sends a new task that older workers
do not have yet. TaskIQ acknowledges such a message and drops it, and its run would
stay ``queued`` forever. Here the worker leaves it pending instead and stops renewing
its lease, so one idle timeout later another worker reclaims it (XAUTOCLAIM, which
counts a delivery); one that knows the task runs it.

A message that stays unknown to every worker that took it is not passed round forever:
at its last delivery (``MAX_DELIVERIES``, the count the reclaim reads anyway to find
poison messages) its run is recorded ``dead`` with an ``UnknownTask`` error, visible in
the history and retryable once the task is deployed everywhere, and the message is
acknowledged.

Only unknown tasks take this path. The worker's own receiver learns a task is unknown
from the lookup it makes for every message anyway; TaskIQ's receiver (``taskiq worker``
without ``--receiver``) would acknowledge before anything of ours runs, so the broker's
``listen`` asks :func:`unknown_task_of` first, at the cost of one more JSON parse.

Its sibling, :func:`record_poison`, ends the run of a message the reclaim set aside
because no worker ever finished it: both record a ``dead`` run without an attempt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import context_from_labels
from jobs_service.infrastructure.repositories.runs import RunEvent
from jobs_service.infrastructure.runtime import Runtime

if TYPE_CHECKING:
    from taskiq import AsyncBroker, TaskiqMessage

    from jobs_service.infrastructure.redis_broker import Delivery

__all__ = [
    "POISON_MESSAGE",
    "UNKNOWN_TASK",
    "record_poison",
    "settle_unknown_task",
    "unknown_task_of",
]

#: The error type of a run whose task no worker that took its message knew.
UNKNOWN_TASK = "UnknownTask"
#: The error type of a run whose message never finished on any worker that took it.
POISON_MESSAGE = "PoisonMessage"

_log = get_logger("jobs_service.worker")


def unknown_task_of(broker: AsyncBroker, data: bytes) -> TaskiqMessage | None:
    """The message in ``data`` if it names a task ``broker`` does not know; None for a
    known task and for anything unreadable (the receiver skips that itself)."""
    try:
        fields = orjson.loads(data)
    except orjson.JSONDecodeError:
        fields = None
    if isinstance(fields, dict):
        name = fields.get("task_name")
        if isinstance(name, str) and broker.find_task(name) is not None:
            return None
    try:  # rare (an unknown task): TaskIQ's own validating path is fast enough
        message = broker.formatter.loads(message=data)
        message.parse_labels()
    except Exception:  # noqa: BLE001 - unreadable: TaskIQ's receiver logs and skips it
        return None
    return None if broker.find_task(message.task_name) is not None else message


async def settle_unknown_task(delivery: Delivery, message: TaskiqMessage) -> None:
    """Leave ``message`` pending for a worker that knows its task or, at its last
    delivery, record its run ``dead`` and acknowledge it."""
    task_name = message.task_name
    runtime = getattr(delivery.broker.state, "runtime", None)
    if delivery.is_last and isinstance(runtime, Runtime):
        error = {
            "type": UNKNOWN_TASK,
            "message": f"unknown task {task_name!r} on every worker that took it "
            f"({delivery.deliveries} deliveries)",
        }
        runtime.recorder.record(_dead_event(message, runtime.worker_name, error))
        _count_dead(task_name)
        delivery.finish()  # acknowledged once the record is written, like any run
        _log.error(
            "task-unknown-dead",
            task_name=task_name,
            run_id=message.task_id,
            deliveries=delivery.deliveries,
        )
        return
    # Left unsettled. Before its last delivery, a worker that knows the task takes it
    # over; at its last, with no run history in this process, the message is kept in
    # the dead-letter stream (where the next reclaim moves a message delivered once more).
    delivery.release()
    if delivery.is_last:
        log, event = _log.error, "task-unknown-dead"
        note = "no run history here: the message goes to the dead-letter stream"
    else:
        log, event = _log.warning, "task-unknown"
        note = "left pending: a worker that knows the task takes it over"
    log(
        event,
        task_name=task_name,
        run_id=message.task_id,
        deliveries=delivery.deliveries,
        message=note,
    )


def record_poison(
    broker: AsyncBroker, message_id: str, data: bytes, deliveries: int, dead_letters: str
) -> None:
    """Record ``dead`` the run of a message moved to the dead-letter stream after
    ``deliveries`` deliveries that never finished (it crashes its workers, or a
    middleware fails on it): otherwise its run would stay ``queued`` or ``running``
    with no worker to end it. Unreadable messages and processes without a run history
    record nothing (the dead-letter stream keeps the message either way)."""
    try:
        message = broker.formatter.loads(message=data)
        message.parse_labels()
    except Exception:  # noqa: BLE001 - unreadable: no run to record
        message = None
    _log.error(
        "message-dead-lettered",
        message_id=message_id,
        deliveries=deliveries,
        run_id=message.task_id if message is not None else None,
        task=message.task_name if message is not None else None,
    )
    runtime = getattr(broker.state, "runtime", None)
    if message is None or not isinstance(runtime, Runtime):
        return
    error = {
        "type": POISON_MESSAGE,
        "message": f"delivered {deliveries} times and never finished; the message is "
        f"kept in {dead_letters}",
    }
    runtime.recorder.record(_dead_event(message, runtime.worker_name, error))
    _count_dead(message.task_name)


def _count_dead(task: str) -> None:
    # Imported here, on these rare paths: this module is imported with the broker, and
    # metrics must not be created before a worker has chosen their multiprocess mode.
    from jobs_service.infrastructure.run_counters import count_dead_run  # noqa: PLC0415

    count_dead_run(task)


def _dead_event(message: TaskiqMessage, worker: str, error: dict[str, str]) -> RunEvent:
    """The end of an attempt that never started; it carries the run's labels so the
    record exists even if the producer's ``queued`` row does not."""
    run = context_from_labels(message)
    return RunEvent(
        run.run_id,
        run.task,
        run.kwargs,
        run.source,
        "dead",
        run.attempt,
        worker,
        run.queued_at,
        finished_at=datetime.now(UTC),
        error=error,
        schedule_id=run.schedule_id,
        scheduled_for=run.scheduled_for,
        webhook_event_id=run.webhook_event_id,
        deliver_to=run.deliver_to,
    )
