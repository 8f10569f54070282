"""Jobs: ``verb_noun`` task functions registered on the shared broker.

Built-in modules are listed here; teams add their own through the ``task_modules``
setting without forking the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from jobs_service.core.errors import TaskModuleError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["BUILTIN_TASK_MODULES", "load_task_modules"]

BUILTIN_TASK_MODULES = (
    "jobs_service.tasks.maintenance",
    "jobs_service.tasks.webhooks",
    "jobs_service.tasks.domain",
    "jobs_service.tasks.delivery",
)


def load_task_modules(extra: Iterable[str] = ()) -> list[str]:
    """Import the built-in and extra task modules; returns their names.

    An import failure is re-raised as :class:`TaskModuleError` naming the module and the
    setting, because the original traceback points into importlib rather than at the
    configuration that caused it.
    """
    loaded = []
    for name in (*BUILTIN_TASK_MODULES, *extra):
        try:
            importlib.import_module(name)
        except Exception as exc:
            msg = (
                f"task module {name!r} failed to import "
                f"({type(exc).__name__}: {exc}); check JOBS_TASK_MODULES / task_modules"
            )
            raise TaskModuleError(msg) from exc
        loaded.append(name)
    return loaded
