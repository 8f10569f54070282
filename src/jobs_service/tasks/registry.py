"""What the service knows about each registered task.

Built from the broker's task table: name, category, description, schedules, timeout,
retries, and a pydantic model of the keyword arguments (dependency parameters such as
``TaskiqDepends`` are not arguments and are left out). The gateway, the CLI, the client
and the docs all read tasks through this one view.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from taskiq import Context, TaskiqState
from taskiq_dependencies.dependency import Dependency

from jobs_service.core.errors import JobsError
from jobs_service.core.summary import Summary
from jobs_service.core.text import UNPORTABLE_VALUE, unportable_text
from jobs_service.infrastructure.wire import prepare_labels

if TYPE_CHECKING:
    from collections.abc import Iterable

    from taskiq import AsyncBroker
    from taskiq.decor import AsyncTaskiqDecoratedTask

__all__ = [
    "TASK_NAME_PATTERN",
    "InvalidKwargsError",
    "TaskInfo",
    "UnknownTaskError",
    "find_task",
    "info_for",
    "list_tasks",
]

TASK_NAME_PATTERN = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")
#: Labels that describe a task for people and the scheduler; they are not sent with runs.
DESCRIPTIVE_LABELS = frozenset({"category", "schedule", "timezone", "description", "labels"})


class UnknownTaskError(JobsError):
    """No task of that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no task named {name!r} is registered")
        self.name = name


class InvalidKwargsError(JobsError):
    """Keyword arguments do not match the task's signature."""

    def __init__(self, task: str, errors: list[dict[str, Any]]) -> None:
        first = errors[0] if errors else {"loc": (), "msg": "invalid"}
        where = ".".join(str(part) for part in first.get("loc", ())) or "kwargs"
        super().__init__(f"invalid kwargs for {task}: {where}: {first.get('msg')}")
        self.task = task
        self.errors = errors


def _is_dependency(parameter: inspect.Parameter, hint: Any) -> bool:
    if isinstance(parameter.default, Dependency):
        return True
    if typing.get_origin(hint) is typing.Annotated:
        if any(isinstance(meta, Dependency) for meta in typing.get_args(hint)[1:]):
            return True
        hint = typing.get_args(hint)[0]
    return hint in (Context, TaskiqState) or (
        isinstance(hint, type) and hint.__module__.startswith(("starlette.", "fastapi."))
    )


@dataclass(frozen=True)
class TaskInfo:
    """A registered task as operators and validators see it."""

    task: AsyncTaskiqDecoratedTask[Any, Any]

    @property
    def name(self) -> str:
        """The task's explicit ``task_name``."""
        return self.task.task_name

    @cached_property
    def labels(self) -> dict[str, Any]:
        """Task labels; a ``labels={...}`` dict argument is flattened into them."""
        labels = dict(self.task.labels)
        nested = labels.pop("labels", None)
        if isinstance(nested, dict):
            labels = {**nested, **labels}
        return labels

    @property
    def category(self) -> str:
        """Free-form grouping shown in the task catalog."""
        return str(self.labels.get("category", "general"))

    @property
    def description(self) -> str:
        """The docstring, dedented."""
        return inspect.cleandoc(self.task.original_func.__doc__ or "")

    @property
    def summary_line(self) -> str:
        """First line of the docstring."""
        return self.description.split("\n", 1)[0]

    @property
    def schedules(self) -> list[str]:
        """Cron expressions from ``labels["schedule"]`` (a string or a list of them)."""
        value = self.labels.get("schedule")
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return [str(item) for item in value]

    @property
    def timezone(self) -> str:
        """IANA zone of the label schedules; UTC unless ``labels["timezone"]`` says."""
        return str(self.labels.get("timezone", "UTC"))

    @property
    def timeout_s(self) -> float | None:
        """TaskIQ's ``timeout`` label, in seconds."""
        value = self.labels.get("timeout")
        return float(value) if value is not None else None

    @property
    def retry_on_error(self) -> bool:
        """Whether failed runs are retried."""
        return bool(self.labels.get("retry_on_error", False))

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt when ``retry_on_error``."""
        return int(self.labels.get("max_retries", 3 if self.retry_on_error else 0))

    @cached_property
    def wire_labels(self) -> dict[str, str | int | float | bool]:
        """Labels sent with every run: scalar, behaviour-changing ones only."""
        return {
            key: value
            for key, value in self.labels.items()
            if key not in DESCRIPTIVE_LABELS and isinstance(value, str | int | float | bool)
        }

    @cached_property
    def prepared_wire_labels(self) -> tuple[dict[str, Any], dict[str, int]]:
        """:attr:`wire_labels` as TaskIQ sends them (values and their types), once."""
        return prepare_labels(self.wire_labels)

    @cached_property
    def _hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.task.original_func, include_extras=True)

    @property
    def returns_summary(self) -> bool:
        """The function is annotated to return a count summary."""
        return self._hints.get("return") == Summary

    @cached_property
    def kwargs_model(self) -> type[BaseModel]:
        """A pydantic model of the arguments a caller may pass."""
        fields: dict[str, Any] = {}
        for name, parameter in inspect.signature(self.task.original_func).parameters.items():
            hint = self._hints.get(name, Any)
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if _is_dependency(parameter, hint):
                continue
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hint, default)
        return create_model(
            f"{self.name}_kwargs",
            # NaN and Infinity, even as strings ("NaN", "1e999") a float field would
            # convert, are not JSON numbers: refused here, not stored as null.
            __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
            **fields,
        )

    def validate_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validated, JSON-ready kwargs; raises :class:`InvalidKwargsError`.

        Beyond the signature, values must survive the wire and both databases:
        no NaN/Infinity, integers within 64 bits, no NUL characters or lone surrogates.
        """
        self._check_portable(kwargs)
        try:
            model = self.kwargs_model.model_validate(kwargs)
        except ValidationError as exc:
            errors = [
                {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
                for error in exc.errors(include_url=False)
            ]
            raise InvalidKwargsError(self.name, errors) from None
        try:
            validated = model.model_dump(mode="json", exclude_unset=True)
        except ValueError as exc:  # pydantic's own depth limit, below ours in a model
            raise InvalidKwargsError(
                self.name, [{"loc": [], "msg": str(exc), "type": UNPORTABLE_VALUE}]
            ) from None
        # Again after conversion: "9223372036854775808" becomes an int out of range.
        self._check_portable(validated)
        return validated

    def _check_portable(self, kwargs: dict[str, Any]) -> None:
        problem = _unportable(kwargs)
        if problem is not None:
            loc, msg = problem
            raise InvalidKwargsError(
                self.name, [{"loc": loc, "msg": msg, "type": UNPORTABLE_VALUE}]
            )

    def takes(self, argument: str) -> bool:
        """True when the task has a keyword argument ``argument``."""
        return argument in self.kwargs_model.model_fields

    def argument_schema(self) -> dict[str, Any]:
        """JSON Schema of the keyword arguments."""
        return self.kwargs_model.model_json_schema()


_INT64 = 2**63


#: Deepest nesting of arguments accepted: deeper than any real payload, and well inside
#: what JSON parsers, pydantic (about 250) and Python's recursion allow.
MAX_DEPTH = 64


def _unportable(value: Any, depth: int = 0) -> tuple[list[Any], str] | None:
    """The first value JSON, orjson or PostgreSQL would reject or silently change, and
    where it is. Runs for every submitted run: the path is built only for a problem."""
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        # Tuples and sets too: a Python producer passes them, and pydantic's JSON dump
        # would write a NaN inside one as null.
        if depth >= MAX_DEPTH:
            return [], f"nested more than {MAX_DEPTH} levels deep"
        items: Iterable[tuple[Any, Any]]
        if isinstance(value, dict):
            for key in value:  # keys first, as they are written first
                problem = _unportable_scalar(key)
                if problem is not None:
                    return [key], problem
            items = value.items()
        else:
            items = enumerate(value)
        for key, item in items:
            found = _unportable(item, depth + 1)
            if found is not None:
                return [key, *found[0]], found[1]
        return None
    problem = _unportable_scalar(value)
    return None if problem is None else ([], problem)


def _unportable_scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return unportable_text(value)
    if isinstance(value, float):
        return _unportable_float(value)
    if isinstance(value, int) and not isinstance(value, bool) and not (-_INT64 <= value < _INT64):
        return "integer out of the 64-bit range"
    return None


def _unportable_float(value: float) -> str | None:
    if not math.isfinite(value):
        return "NaN and Infinity are not JSON numbers"
    if abs(value) >= _INT64:
        # PostgreSQL's jsonb writes 1e20 out as the integer 100000000000000000000, which
        # reads back beyond 64 bits: the run could not be retried or replayed.
        return "numbers of 2^63 or more change type in the database: send them as text"
    return None


_INFOS: dict[int, TaskInfo] = {}


def info_for(task: AsyncTaskiqDecoratedTask[Any, Any]) -> TaskInfo:
    """The (cached) view of ``task``: its kwargs model is built once, not per submit."""
    info = _INFOS.get(id(task))
    if info is None or info.task is not task:
        info = _INFOS[id(task)] = TaskInfo(task)
    return info


def list_tasks(broker: AsyncBroker) -> list[TaskInfo]:
    """Every registered task, sorted by name."""
    return [info_for(task) for _, task in sorted(broker.get_all_tasks().items())]


def find_task(broker: AsyncBroker, name: str) -> TaskInfo:
    """The task called ``name``; raises :class:`UnknownTaskError`."""
    task = broker.find_task(name)
    if task is None:
        raise UnknownTaskError(name)
    return info_for(task)
