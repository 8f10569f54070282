"""Cancelled runs never start; running async ones are interrupted (cooperatively).

Every process keeps the cancellations it knows in a :class:`CancellationRegistry`, fed
in workers by Redis (:mod:`jobs_service.infrastructure.cancellations`) and in the
embedded mode directly by the gateway. The per-task cost is one dictionary lookup, one
insert and one removal: no Redis round trip.

- **Not started yet** (``pre_execute`` finds the attempt cancelled): the task's code
  must not run at all, yet TaskIQ must still save a result and acknowledge the message.
  A middleware cannot skip the call, so the message's positional arguments are replaced
  by a list that raises :class:`RunCancelled` when unpacked; TaskIQ unpacks them inside
  its guarded call of the task, so the task fails with that error before any of its
  code runs, and everything after (result, acknowledgement) happens as for any failure.
  Nothing is recorded: the cancel already wrote the run's final state.
- **Running**: TaskIQ runs each message in its own asyncio task, registered here in
  ``pre_execute``; a cancellation that covers it calls ``Task.cancel()``. Only while
  the task's own coroutine is on that asyncio task's await chain, so the
  ``CancelledError`` always lands inside TaskIQ's guarded call and never in its result
  saving or acknowledgement (it waits and looks again otherwise). The attempt then ends
  as ``cancelled``. Code that never awaits cannot be interrupted, nor can sync tasks
  (their thread runs on); the run is recorded cancelled all the same and not retried.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqEvents, TaskiqMiddleware

from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.cancellations import (
    Cancellation,
    CancellationFeed,
    publish_cancellation,
)
from jobs_service.infrastructure.redis_broker import StreamBroker

if TYPE_CHECKING:
    from types import CodeType

    from taskiq import AsyncBroker, TaskiqMessage, TaskiqResult

__all__ = [
    "AUTOMATIC_RETRY_LABEL",
    "CancellationMiddleware",
    "CancellationRegistry",
    "RunCancelled",
    "announce_cancellation",
    "cancellation_of",
    "never_started",
    "watch_cancellations",
]

#: Label of the messages the retry middleware sends (see ``Cancellation.covers``).
AUTOMATIC_RETRY_LABEL = "automatic_retry"
_log = get_logger("jobs_service.cancellation")
_RECHECK_S = 0.05
_MAX_CHAIN = 64


class RunCancelled(JobsError):  # noqa: N818 - reads as what happened to the run
    """The run was cancelled by an operator; raised in the task's place."""

    def __init__(self, by: str, *, started: bool = False) -> None:
        super().__init__(by)
        self.by = by
        self.started = started

    def __str__(self) -> str:
        return f"cancelled by {self.by}"


class _Refusal(list[Any]):
    """Task arguments that raise ``error`` when unpacked (see the module docstring)."""

    __slots__ = ("error", "original")

    def __init__(self, original: list[Any], error: RunCancelled) -> None:
        super().__init__(original)
        self.original = original
        self.error = error

    def __iter__(self) -> Any:
        raise self.error


def never_started(message: TaskiqMessage) -> bool:
    """True for a message whose attempt was cancelled before it began."""
    return isinstance(message.args, _Refusal)


@dataclass(slots=True, eq=False)
class _Execution:
    """One message being executed by this process."""

    run_id: str
    attempt: int
    automatic: bool
    task: asyncio.Task[Any]
    #: The task function's code, to find it on the await chain; None for sync tasks.
    code: CodeType | None
    cancelled_by: str | None = None
    active: bool = True


class CancellationRegistry:
    """The cancellations this process knows, and the runs it is executing."""

    def __init__(self) -> None:
        self._tokens: dict[str, Cancellation] = {}
        self._running: dict[int, _Execution] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def find(self, run_id: str, attempt: int, *, automatic: bool) -> Cancellation | None:
        """The cancellation that forbids this attempt, if any (the per-task check)."""
        token = self._tokens.get(run_id)
        if token is None or not token.covers(attempt, automatic=automatic):
            return None
        return token

    def apply(self, token: Cancellation) -> None:
        """Learn ``token`` and interrupt what it covers. Cancellations only grow: an
        older or repeated announcement never lowers one."""
        known = self._tokens.get(token.run_id)
        if known is None or token.upto > known.upto:
            self._tokens[token.run_id] = token
            known = token
        for execution in list(self._running.values()):
            if execution.run_id == token.run_id and known.covers(
                execution.attempt, automatic=execution.automatic
            ):
                self._interrupt(execution, known.by)

    def prune(self, now: float | None = None) -> None:
        """Forget cancellations older than Redis keeps them, and executions whose
        asyncio task ended without leaving (see :meth:`_interrupt`)."""
        moment = time.time() if now is None else now
        for run_id in [r for r, t in self._tokens.items() if t.expires_at <= moment]:
            del self._tokens[run_id]
        for key in [k for k, e in self._running.items() if e.task.done()]:
            self.leave(key)

    def executing(self) -> int:
        """How many executions are registered (for the worker's own checks)."""
        return len(self._running)

    def enter(self, key: int, execution: _Execution) -> None:
        """An execution starts (``key`` identifies its message)."""
        self._running[key] = execution

    def leave(self, key: int) -> _Execution | None:
        """An execution ends; returns it unless it already left."""
        execution = self._running.pop(key, None)
        if execution is not None:
            execution.active = False
        return execution

    def _drop(self, execution: _Execution) -> None:
        execution.active = False
        for key in [k for k, e in self._running.items() if e is execution]:
            del self._running[key]

    def _interrupt(self, execution: _Execution, by: str) -> None:
        if not execution.active or execution.cancelled_by is not None:
            return
        if execution.task.done():
            # Its message never reached on_error/post_execute (a later middleware's
            # pre_execute raised): nothing left to interrupt, and looking again would
            # go on forever.
            self._drop(execution)
            return
        if execution.code is None:
            _log.warning(
                "run-not-interruptible",
                run_id=execution.run_id,
                reason="sync task: its thread cannot be stopped; it runs to its end",
            )
            return
        if _awaiting(execution.task, execution.code):
            execution.cancelled_by = by
            execution.task.cancel(f"cancelled by {by}")
            _log.info("run-cancelling", run_id=execution.run_id, attempt=execution.attempt, by=by)
            return
        # Between TaskIQ's steps (resolving dependencies, about to call the task):
        # look again shortly rather than cancel where TaskIQ does not expect it.
        asyncio.get_running_loop().call_later(_RECHECK_S, self._interrupt, execution, by)


def _awaiting(task: asyncio.Task[Any], code: CodeType) -> bool:
    """Whether the coroutine of ``code`` is on ``task``'s await chain (suspended in the
    task function, or in something it awaits)."""
    link: Any = task.get_coro()
    for _ in range(_MAX_CHAIN):
        if link is None:
            return False
        if getattr(link, "cr_code", None) is code:
            return True
        link = getattr(link, "cr_await", None)
    return False


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class CancellationMiddleware(TaskiqMiddleware):
    """Refuses cancelled attempts and interrupts running ones (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = CancellationRegistry()
        self._codes: dict[str, CodeType | None] = {}

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Refuse a cancelled attempt, or register the asyncio task running this one."""
        run = current_run()
        if run is None:
            return message
        automatic = _flag(message.labels.get(AUTOMATIC_RETRY_LABEL))
        token = self.registry.find(run.run_id, run.attempt, automatic=automatic)
        if token is not None:
            message.args = _Refusal(message.args, RunCancelled(token.by))
            return message
        task = asyncio.current_task()
        if task is not None:
            execution = _Execution(
                run.run_id, run.attempt, automatic, task, self._code(message.task_name)
            )
            self.registry.enter(id(message), execution)
        return message

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        """Turn the interruption (or a failure after the cancel) into :class:`RunCancelled`
        before the retry and recording middlewares look at the result."""
        del exception
        execution = self.registry.leave(id(message))
        if execution is None:
            return
        if execution.cancelled_by is not None:
            execution.task.uncancel()
            result.error = RunCancelled(execution.cancelled_by, started=True)
            return
        token = self.registry.find(
            execution.run_id, execution.attempt, automatic=execution.automatic
        )
        if token is not None:  # it failed on its own, but the run is cancelled: no retry
            result.error = RunCancelled(token.by, started=True)

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Forget the execution; give the message its arguments back."""
        del result
        execution = self.registry.leave(id(message))
        if execution is not None and execution.cancelled_by is not None:
            # The task swallowed the CancelledError and returned: it finished anyway.
            execution.task.uncancel()
        if isinstance(message.args, _Refusal):
            message.args = message.args.original

    def _code(self, task_name: str) -> CodeType | None:
        if task_name not in self._codes:
            found = self.broker.find_task(task_name)
            function = found.original_func if found is not None else None
            code = getattr(function, "__code__", None)
            is_async = function is not None and inspect.iscoroutinefunction(function)
            self._codes[task_name] = code if is_async else None
        return self._codes[task_name]


def cancellation_of(broker: AsyncBroker) -> CancellationRegistry | None:
    """The registry of ``broker``'s cancellation middleware, if it has one."""
    for middleware in broker.middlewares:
        if isinstance(middleware, CancellationMiddleware):
            return middleware.registry
    return None


async def announce_cancellation(broker: AsyncBroker, prefix: str, token: Cancellation) -> None:
    """Make ``token`` known to every process that may run the run: through Redis with
    the stream broker, in this process with the in-memory one (the embedded mode)."""
    if isinstance(broker, StreamBroker):
        await publish_cancellation(broker.connection_pool, prefix, token)
        return
    registry = cancellation_of(broker)
    if registry is not None:
        registry.apply(token)


def watch_cancellations(broker: AsyncBroker, prefix: str) -> None:
    """In worker processes of a stream broker, follow the announced cancellations from
    start to shutdown."""
    registry = cancellation_of(broker)
    if registry is None or not isinstance(broker, StreamBroker):
        return
    feed = CancellationFeed(
        broker.connection_pool, prefix, apply=registry.apply, prune=registry.prune
    )
    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, lambda _: feed.start())
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, lambda _: feed.stop())
