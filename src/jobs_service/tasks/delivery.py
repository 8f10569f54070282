"""Built-in job that (re)delivers a finished run's result."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from taskiq import TaskiqDepends

from jobs_service.agents import result_delivery, run_history
from jobs_service.agents.delivery import ResultDelivery, RunResult
from jobs_service.agents.run_history import DatabaseRunHistory
from jobs_service.broker import broker
from jobs_service.core.delivery import DeliverTo, parse_deliver_to
from jobs_service.core.errors import PermanentError, RetryLater
from jobs_service.core.summary import Summary, make_summary
from jobs_service.infrastructure.models import ACTIVE_STATUSES, JobRun

__all__ = ["deliver_run_result"]

# The run's final state is written by its worker's batched recorder, typically within
# 100 ms of the follow-up being queued; wait that out here rather than fail the attempt.
_RECORD_WAIT_S = 15.0


async def _finished_run(history: DatabaseRunHistory, run_id: str) -> JobRun:
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        run = await history.get_run(run_id)
        if run is None:
            msg = f"no run {run_id} (deleted by retention, or never queued)"
            raise PermanentError(msg)
        if run.status not in ACTIVE_STATUSES:
            return run
        if time.monotonic() > deadline:
            msg = f"run {run_id} is still {run.status}; its result is delivered once it succeeds"
            raise RetryLater(msg, retry_after=30)
        await asyncio.sleep(0.2)


@broker.task(
    task_name="deliver_run_result",
    retry_on_error=True,
    max_retries=5,
    timeout=300,
    category="delivery",
)
async def deliver_run_result(
    run_id: str,
    history: Annotated[DatabaseRunHistory, TaskiqDepends(run_history)],
    delivery: Annotated[ResultDelivery, TaskiqDepends(result_delivery)],
    deliver_to: DeliverTo | None = None,
) -> Summary:
    """Send a succeeded run's counts and content to its `deliver_to` (or the one given).

    Queued automatically after a scheduled or webhook run with `deliver_to` succeeds,
    and by operators to deliver again. Messages already sent for that run are skipped,
    so running it twice sends nothing twice. Returns sent, already_sent and errors.
    """
    run = await _finished_run(history, run_id)
    if run.status != "succeeded":
        msg = f"run {run_id} is {run.status}; only a succeeded run's result is delivered"
        raise PermanentError(msg)
    targets = deliver_to or parse_deliver_to(run.deliver_to)
    if targets is None:
        msg = f"run {run_id} has no deliver_to; pass deliver_to to say where to send it"
        raise PermanentError(msg)
    result = RunResult(
        run_id=run.run_id,
        title=run.task,
        summary=run.summary or {},
        content=run.content,
    )
    report = await delivery.deliver(result, targets)
    return make_summary(sent=report.sent, already_sent=report.already_sent)
