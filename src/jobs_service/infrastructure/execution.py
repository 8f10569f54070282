"""Run one message's task function, the way TaskIQ's receiver does, prepared once.

TaskIQ's ``Receiver.run_task`` re-derives per message what never changes for a task:
it builds a pydantic ``TypeAdapter`` for every typed argument (``parse_obj_as``) and,
once ``dependency_overrides`` are set (taskiq-fastapi sets them in every worker), a new
``DependencyGraph`` for the function. :class:`TaskPlan` does that work once per task and
keeps the behaviour: arguments are parsed by their annotation (a value that does not
parse is passed as it came, as TaskIQ does), dependencies are resolved with the broker's
overrides and context, a ``timeout`` label bounds the call, sync functions run in the
executor, and the result is a :class:`~taskiq.TaskiqResult` with the same fields.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import TypeAdapter
from taskiq import Context, TaskiqState
from taskiq.exceptions import NoResultError
from taskiq_dependencies import DependencyGraph
from taskiq_dependencies.ctx import AsyncResolveContext

from jobs_service.core.errors import JobsError
from jobs_service.core.logging import get_logger
from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.wire import new_result

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    from taskiq import AsyncBroker, TaskiqMessage, TaskiqResult
    from taskiq.acks import AckController

__all__ = ["TaskPlan"]

_log = get_logger("jobs_service.worker")
#: Values of these exact types already are what their annotation would parse them to.
_EXACT = (str, int, float, bool)
_MISSING = object()
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class _Parser:
    """Parses one argument by its annotation (TaskIQ's ``parse_params``, adapter cached)."""

    __slots__ = ("adapter", "annotation", "index", "name", "var_positional")

    def __init__(self, name: str, annotation: Any, index: int | None, *, var: bool) -> None:
        self.name = name
        self.annotation = annotation
        self.index = index  # its slot in ``args`` when passed positionally
        self.var_positional = var
        self.adapter: TypeAdapter[Any] | None = None

    def parse(self, value: Any, message: TaskiqMessage) -> Any:
        if type(value) is self.annotation and self.annotation in _EXACT:
            return value
        if self.adapter is None:
            self.adapter = TypeAdapter(self.annotation)
        try:
            return self.adapter.validate_python(value)
        except (ValueError, RuntimeError) as exc:
            _log.warning(
                "argument-not-parsed",
                argument=self.name,
                task_name=message.task_name,
                error=str(exc)[:300],
            )
            return value

    def apply(self, message: TaskiqMessage) -> None:
        args = message.args
        if self.var_positional:
            start = self.index or 0
            for position in range(start, len(args)):
                args[position] = self.parse(args[position], message)
            return
        if self.index is not None and self.index < len(args):
            args[self.index] = self.parse(args[self.index], message)
            return
        value = message.kwargs.get(self.name)
        if value is not None:
            message.kwargs[self.name] = self.parse(value, message)


class TaskPlan:
    """What executing one task needs, derived once from its function."""

    def __init__(self, target: Callable[..., Any], *, validate_params: bool) -> None:
        self.target = target
        self.is_coroutine = inspect.iscoroutinefunction(target)
        self._parsers = _parsers(target) if validate_params else []
        self._has_dependencies: bool | None = None
        self._graph: DependencyGraph | None = None
        self._overrides: dict[Any, Any] | None = None

    def graph(self, overrides: dict[Any, Any]) -> DependencyGraph | None:
        """The dependency graph with ``overrides`` applied; None without dependencies.

        A function without dependencies never needs one, whatever the overrides. Else
        the graph is rebuilt only when the overrides change (taskiq-fastapi sets them
        at start-up; tests that build several apps on one broker replace them).
        """
        if self._has_dependencies is None:
            self._has_dependencies = not DependencyGraph(self.target).is_empty()
        if not self._has_dependencies:
            return None
        snapshot = self._overrides
        if (
            snapshot is None
            or len(snapshot) != len(overrides)
            or any(overrides.get(key, _MISSING) is not value for key, value in snapshot.items())
        ):
            self._graph = DependencyGraph(self.target, overrides or None)
            self._overrides = dict(overrides)
        return self._graph

    async def run(
        self,
        broker: AsyncBroker,
        message: TaskiqMessage,
        ack_controller: AckController,
        *,
        executor: Executor | None,
        propagate_exceptions: bool,
    ) -> TaskiqResult[Any]:
        """Call the function with the message's arguments and resolved dependencies."""
        for parser in self._parsers:
            parser.apply(message)
        graph = self.graph(broker.dependency_overrides)
        resolver: AsyncResolveContext | None = None
        if graph is not None:
            cache = broker.custom_dependency_context
            cache.update(
                {Context: Context(message, broker, ack_controller), TaskiqState: broker.state}
            )
            resolver = AsyncResolveContext(graph, graph, cache, True)
        returned: Any = None
        found: BaseException | None = None
        started = time.time()
        try:
            kwargs = await resolver.resolve_kwargs() if resolver is not None else {}
            kwargs.update(message.kwargs)
            timeout = message.labels.get("timeout")
            if timeout is None:
                returned = await self._call(message, kwargs, executor)
            else:
                async with asyncio.timeout(float(timeout)):
                    returned = await self._call(message, kwargs, executor)
        except BaseException as exc:  # noqa: BLE001 - a task's failure is its result
            found = exc
        elapsed = time.time() - started
        run = current_run()
        if run is not None:
            run.end()  # before the logging below: formatting a traceback is not the run's
        if isinstance(found, NoResultError):
            _log.warning("result-skipped", task_name=message.task_name, run_id=message.task_id)
        elif found is not None and not isinstance(found, (JobsError, asyncio.CancelledError)):
            # Our own errors say what went wrong; anything else needs its traceback.
            _log.warning(
                "task-raised", task_name=message.task_name, run_id=message.task_id, exc_info=found
            )
        if resolver is not None:
            if found is not None and propagate_exceptions:
                await resolver.close(type(found), found, found.__traceback__)
            else:
                await resolver.close(None, None, None)
        return new_result(
            is_err=found is not None,
            return_value=returned,
            execution_time=round(elapsed, 2),
            error=found,
            labels=message.labels,
        )

    async def _call(
        self, message: TaskiqMessage, kwargs: dict[str, Any], executor: Executor | None
    ) -> Any:
        if self.is_coroutine:
            returned = await self.target(*message.args, **kwargs)
        else:
            loop = asyncio.get_running_loop()
            if isinstance(executor, ProcessPoolExecutor):
                returned = await loop.run_in_executor(
                    executor, _call_plain, self.target, tuple(message.args), kwargs
                )
            else:
                call = functools.partial(self.target, *message.args, **kwargs)
                returned = await loop.run_in_executor(
                    executor, contextvars.copy_context().run, call
                )
        if inspect.isawaitable(returned):
            returned = await returned
        return returned


def _call_plain(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Module-level, so a process pool can pickle it (a bound ``ctx.run`` cannot be)."""
    return target(*args, **kwargs)


def _parsers(target: Callable[..., Any]) -> list[_Parser]:
    """One parser per annotated parameter, in TaskIQ's ``parse_params`` order."""
    try:
        hints = get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable hints: arguments pass unparsed, as in TaskIQ
        return []
    parsers: list[_Parser] = []
    position = -1
    for name, parameter in inspect.signature(target).parameters.items():
        annotation = hints.get(name)
        if parameter.kind in _POSITIONAL:
            position += 1
            if annotation is not None:
                parsers.append(_Parser(name, annotation, position, var=False))
        elif parameter.kind == inspect.Parameter.VAR_POSITIONAL:
            if annotation is not None:
                parsers.append(_Parser(name, annotation, position + 1, var=True))
        elif parameter.kind == inspect.Parameter.KEYWORD_ONLY and annotation is not None:
            parsers.append(_Parser(name, annotation, None, var=False))
    return parsers
