"""Jobs: ``verb_noun`` task functions registered on the shared broker.

Built-in modules are listed here; teams add their own through the ``task_modules``
setting without forking the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobs_service.core.errors import TaskModuleError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from taskiq import AsyncBroker

__all__ = ["BUILTIN_TASK_MODULES", "load_task_modules"]

BUILTIN_TASK_MODULES = (
    "jobs_service.tasks.maintenance",
    "jobs_service.tasks.webhooks",
    "jobs_service.tasks.domain",
    "jobs_service.tasks.delivery",
)


def load_task_modules(extra: Iterable[str] = (), *, broker: AsyncBroker | None = None) -> list[str]:
    """Import the built-in and extra task modules; returns their names.

    An import failure is re-raised as :class:`TaskModuleError` naming the module and the
    setting, because the original traceback points into importlib rather than at the
    configuration that caused it. With ``broker``, a module that registers a task name
    an earlier module registered is refused too: TaskIQ would silently replace the
    earlier task (a team's ``cleanup_old_runs`` would take the built-in's place, and its
    nightly schedule with it).
    """
    loaded = []
    for name in (*BUILTIN_TASK_MODULES, *extra):
        before = dict(broker.get_all_tasks()) if broker is not None else {}
        try:
            importlib.import_module(name)
        except Exception as exc:
            msg = (
                f"task module {name!r} failed to import "
                f"({type(exc).__name__}: {exc}); check JOBS_TASK_MODULES / task_modules"
            )
            raise TaskModuleError(msg) from exc
        if broker is not None:
            _refuse_replaced(name, before, broker.get_all_tasks())
        loaded.append(name)
    return loaded


def _refuse_replaced(module: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    replaced = sorted(task for task, found in before.items() if after.get(task) is not found)
    if replaced:
        owners = sorted({_module_of(before[task]) for task in replaced})
        msg = (
            f"task module {module!r} registers {', '.join(map(repr, replaced))}, already "
            f"registered by {', '.join(owners)}; task names must be unique"
        )
        raise TaskModuleError(msg)


def _module_of(task: Any) -> str:
    function = getattr(task, "original_func", None)
    return str(getattr(function, "__module__", "another module"))
