"""A task plan executes as TaskIQ's receiver does: arguments parsed by annotation,
dependencies resolved with the broker's overrides, timeouts, sync functions, errors."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from taskiq import Context, InMemoryBroker, TaskiqDepends, TaskiqMessage
from taskiq.acks import AckController
from taskiq.exceptions import NoResultError

from jobs_service.core.run_context import RunContext, clear_run, set_run
from jobs_service.infrastructure import execution
from jobs_service.infrastructure.execution import TaskPlan

pytestmark = pytest.mark.anyio

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Point(BaseModel):
    """A typed argument TaskIQ builds from a dict."""

    x: int
    y: int


def _message(*args: Any, labels: dict[str, Any] | None = None, **kwargs: Any) -> TaskiqMessage:
    return TaskiqMessage(
        task_id="run-1",
        task_name="sample",
        labels=labels or {},
        labels_types=None,
        args=list(args),
        kwargs=kwargs,
    )


async def _run(target: Any, message: TaskiqMessage, broker: InMemoryBroker | None = None) -> Any:
    plan = TaskPlan(target, validate_params=True)
    return await plan.run(
        broker or InMemoryBroker(),
        message,
        AckController(None),
        executor=None,
        propagate_exceptions=True,
    )


async def test_arguments_are_parsed_by_their_annotation() -> None:
    """Text to int, dict to model, positionally and by name; what does not parse passes."""

    async def sample(count: int, point: Point, *, label: int = 0) -> list[Any]:
        return [count, point, label]

    result = await _run(sample, _message("7", point={"x": 1, "y": 2}, label="not a number"))
    assert result.is_err is False
    assert result.return_value == [7, Point(x=1, y=2), "not a number"]


def setting() -> str:
    """A dependency an app overrides."""
    return "default"


async def with_setting(value: Annotated[str, TaskiqDepends(setting)]) -> str:
    """A task with one dependency (module level: its hints must resolve)."""
    return value


async def with_context(context: Annotated[Context, TaskiqDepends()]) -> str:
    """A task that reads its own message."""
    return context.message.task_id


async def test_dependencies_follow_the_brokers_overrides_when_they_change() -> None:
    """The graph is reused while the overrides stay, rebuilt when they are replaced."""
    broker = InMemoryBroker()
    plan = TaskPlan(with_setting, validate_params=True)

    async def run() -> Any:
        return (
            await plan.run(
                broker, _message(), AckController(None), executor=None, propagate_exceptions=True
            )
        ).return_value

    assert await run() == "default"
    broker.dependency_overrides[setting] = lambda: "first app"
    assert await run() == "first app"
    assert plan.graph(broker.dependency_overrides) is plan.graph(broker.dependency_overrides)
    broker.dependency_overrides[setting] = lambda: "second app"
    assert await run() == "second app"


async def test_the_context_dependency_carries_the_message() -> None:
    """``Context`` resolves to this message, as in TaskIQ."""
    assert (await _run(with_context, _message())).return_value == "run-1"


async def test_a_timeout_label_bounds_the_call() -> None:
    """``timeout`` ends a slow task with TimeoutError as its result."""

    async def sample() -> None:
        await asyncio.sleep(5)

    result = await _run(sample, _message(labels={"timeout": 0.05}))
    assert result.is_err is True
    assert isinstance(result.error, TimeoutError)


async def test_sync_functions_run_in_the_executor_with_the_callers_context() -> None:
    """A sync task runs off the event loop and returns its value."""

    def sample(n: int) -> int:
        return n + 1

    result = await _run(sample, _message(n="41"))
    assert result.return_value == 42


async def test_failures_and_skipped_results_are_results() -> None:
    """An exception is the result's error; NoResultError is kept as such."""

    async def failing() -> None:
        raise ValueError("bad input")

    async def skipping() -> None:
        raise NoResultError

    failed = await _run(failing, _message())
    assert failed.is_err is True
    assert isinstance(failed.error, ValueError)
    skipped = await _run(skipping, _message())
    assert isinstance(skipped.error, NoResultError)


async def test_a_failed_runs_end_is_stamped_before_its_traceback_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Formatting and writing a traceback is the worker's time, not the run's: a log
    call that takes 300 ms must not appear in the run's duration."""
    slow_log_calls: list[str] = []

    def slow_warning(event: str, **_: Any) -> None:
        slow_log_calls.append(event)
        time.sleep(0.3)

    monkeypatch.setattr(execution._log, "warning", slow_warning)

    async def failing() -> None:
        raise ValueError("bad input")

    run = RunContext(
        run_id="run-1", task="sample", kwargs={}, attempt=1, source="api", queued_at=_NOW
    )
    set_run(run)
    try:
        failed = await _run(failing, _message())
    finally:
        clear_run()
    assert failed.is_err is True
    assert slow_log_calls == ["task-raised"]
    assert run.ended_monotonic is not None
    assert run.elapsed_s() < 0.2
