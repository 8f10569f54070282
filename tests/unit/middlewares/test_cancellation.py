"""The cancellation registry and middleware: what a cancellation covers, and when a
running task may be interrupted."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from taskiq import TaskiqMessage, TaskiqResult

from jobs_service.broker import broker
from jobs_service.core.logging import configure_logging, flush_logs
from jobs_service.core.run_context import RunContext, clear_run, set_run
from jobs_service.infrastructure.cancellations import CANCELLATION_TTL_S, Cancellation
from jobs_service.middlewares.cancellation import (
    CancellationMiddleware,
    CancellationRegistry,
    RunCancelled,
    _Execution,
)
from jobs_service.middlewares.lifecycle_logging import LifecycleLoggingMiddleware
from jobs_service.middlewares.outcome import outcome_of

pytestmark = pytest.mark.anyio


def token(
    upto: int, *, run_id: str = "r1", by: str = "ops", at: float | None = None
) -> Cancellation:
    return Cancellation(run_id, upto=upto, by=by, at=time.time() if at is None else at)


def test_a_cancellation_covers_its_attempts_and_an_automatic_retry_of_the_last() -> None:
    """Up to `upto`, every attempt; `upto + 1` only when the retry middleware sent it."""
    cancelled = token(2)
    assert cancelled.covers(1, automatic=False)
    assert cancelled.covers(2, automatic=True)
    assert cancelled.covers(3, automatic=True)
    assert not cancelled.covers(3, automatic=False)  # an operator's retry
    assert not cancelled.covers(4, automatic=True)
    assert Cancellation.loads(cancelled.dumps()) == cancelled


def test_cancellations_only_grow_and_expire_after_a_day() -> None:
    registry = CancellationRegistry()
    registry.apply(token(3))
    registry.apply(token(1))  # a late, older announcement
    assert registry.find("r1", 3, automatic=False) is not None
    assert registry.find("r1", 4, automatic=False) is None
    assert registry.find("other", 1, automatic=False) is None
    registry.apply(token(1, run_id="old", at=time.time() - CANCELLATION_TTL_S - 1))
    registry.prune()
    assert len(registry) == 1
    assert registry.find("old", 1, automatic=False) is None


async def _task_function() -> None:
    await asyncio.sleep(30)


async def _taskiq_like(gate: asyncio.Event, reached: asyncio.Event) -> None:
    # What TaskIQ does between pre_execute and the task: awaits of its own (resolving
    # dependencies), then the task function itself.
    await gate.wait()
    reached.set()
    await _task_function()


async def test_a_running_task_is_interrupted_only_inside_its_own_code() -> None:
    """A cancellation that arrives while TaskIQ is still preparing the call waits, and
    cancels as soon as the task function is on the await chain."""
    registry = CancellationRegistry()
    gate, reached = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_taskiq_like(gate, reached))
    await asyncio.sleep(0)
    execution = _Execution("r1", 1, False, task, _task_function.__code__)
    registry.enter(1, execution)
    registry.apply(token(1))
    await asyncio.sleep(0.2)
    assert task.cancelling() == 0  # not inside the task function yet: left alone
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)
    assert reached.is_set()
    assert execution.cancelled_by == "ops"


async def test_a_sync_task_is_not_interrupted() -> None:
    """Without a coroutine to cancel (a sync task runs in a thread), nothing is cancelled."""
    registry = CancellationRegistry()
    task = asyncio.create_task(_task_function())
    await asyncio.sleep(0)
    registry.enter(1, _Execution("r1", 1, False, task, None))
    registry.apply(token(1))
    await asyncio.sleep(0.1)
    assert task.cancelling() == 0
    task.cancel()


def _message() -> TaskiqMessage:
    return TaskiqMessage(
        task_id="r1", task_name="count_items", labels={}, labels_types={}, args=[], kwargs={}
    )


def _result(error: BaseException | None) -> TaskiqResult[Any]:
    return TaskiqResult(
        is_err=error is not None, return_value=None, execution_time=0.1, error=error
    )


def _enter_run(attempt: int = 1) -> None:
    set_run(
        RunContext(
            run_id="r1",
            task="count_items",
            kwargs={},
            attempt=attempt,
            source="api",
            queued_at=datetime.now(UTC),
        )
    )


def _middleware() -> CancellationMiddleware:
    middleware = CancellationMiddleware()
    middleware.set_broker(broker)
    return middleware


async def test_an_attempt_that_fails_after_its_cancellation_ends_cancelled() -> None:
    """It failed on its own, but the run was cancelled meanwhile: the outcome is
    `cancelled` (so the retry middleware does not retry it), not `failed`."""
    middleware = _middleware()
    message = _message()
    _enter_run()
    try:
        middleware.pre_execute(message)
        middleware.registry.apply(token(1))
        result = _result(RuntimeError("boom"))
        middleware.on_error(message, result, RuntimeError("boom"))
        middleware.post_execute(message, result)
    finally:
        clear_run()
    assert isinstance(result.error, RunCancelled)
    assert outcome_of(result).status == "cancelled"
    assert outcome_of(result).error == {"type": "Cancelled", "message": "cancelled by ops"}


async def test_a_cancelled_attempt_is_refused_before_the_task_is_called() -> None:
    """Its arguments raise RunCancelled when TaskIQ unpacks them to call the task; after
    the attempt the message gets its own arguments back."""
    middleware = _middleware()
    middleware.registry.apply(token(1))
    message = _message()
    message.args = [1, 2]
    _enter_run()
    try:
        middleware.pre_execute(message)
    finally:
        clear_run()
    called: list[Any] = []
    with pytest.raises(RunCancelled, match="cancelled by ops"):
        called.append(_task_function(*message.args))  # type: ignore[func-returns-value]
    assert called == []
    middleware.post_execute(message, _result(RunCancelled("ops")))
    assert message.args == [1, 2]
    assert type(message.args) is list


async def test_an_attempt_refused_before_it_began_logs_no_job_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only ``job-cancelled``: a ``job-start`` would claim a start that never happened."""
    configure_logging("json", "info")
    cancellation, lifecycle = _middleware(), LifecycleLoggingMiddleware()
    lifecycle.set_broker(broker)
    cancellation.registry.apply(token(1))
    refused, started = _message(), _message()
    _enter_run()
    try:
        lifecycle.pre_execute(cancellation.pre_execute(refused))
        lifecycle.post_execute(refused, _result(RunCancelled("ops")))
        cancellation.post_execute(refused, _result(RunCancelled("ops")))
        _enter_run(attempt=2)  # not covered by the cancellation of attempt 1
        lifecycle.pre_execute(cancellation.pre_execute(started))
    finally:
        clear_run()
    flush_logs()
    lines = [json.loads(raw) for raw in capsys.readouterr().err.splitlines() if raw[:1] == "{"]
    events = [(line["event"], line.get("attempt")) for line in lines]
    assert events == [("job-cancelled", 1), ("job-start", 2)]


async def test_an_execution_whose_message_never_finished_is_dropped_not_rechecked() -> None:
    """A later middleware's pre_execute raised, so on_error/post_execute never ran for
    this message: a cancellation of its run finds the asyncio task already ended, drops
    the execution and schedules no further look (it used to look again every 50 ms for
    ever); prune sweeps such leftovers too."""
    registry = CancellationRegistry()
    ended = asyncio.create_task(asyncio.sleep(0))
    await ended
    looks: list[Any] = []
    loop = asyncio.get_running_loop()
    real_call_later = loop.call_later

    def counting_call_later(delay: float, callback: Any, *args: Any) -> Any:
        looks.append(callback)
        return real_call_later(delay, callback, *args)

    registry.enter(1, _Execution("r1", 1, False, ended, _task_function.__code__))
    registry.enter(2, _Execution("r2", 1, False, ended, _task_function.__code__))
    loop.call_later = counting_call_later  # type: ignore[method-assign]
    try:
        registry.apply(token(1))
        await asyncio.sleep(0.15)
    finally:
        loop.call_later = real_call_later  # type: ignore[method-assign]
    assert registry._interrupt not in looks
    assert registry.executing() == 1  # r1 dropped; r2 was never cancelled
    registry.prune()
    assert registry.executing() == 0


async def test_prune_keeps_executions_still_running() -> None:
    registry = CancellationRegistry()
    running = asyncio.create_task(_task_function())
    await asyncio.sleep(0)
    registry.enter(1, _Execution("r1", 1, False, running, _task_function.__code__))
    registry.prune()
    assert registry.executing() == 1
    running.cancel()
