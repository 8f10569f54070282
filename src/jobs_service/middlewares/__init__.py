"""TaskIQ middlewares: run context, lifecycle logging and run recording.

Order matters and is fixed by :func:`default_middlewares`: the context middleware comes
first so its ``pre_execute`` runs before the others and its ``post_execute`` (TaskIQ runs
those in reverse) clears the context last.
"""

from __future__ import annotations

from jobs_service.middlewares.lifecycle_logging import LifecycleLoggingMiddleware
from jobs_service.middlewares.run_context import RunContextMiddleware
from jobs_service.middlewares.run_recording import RunRecordingMiddleware

__all__ = [
    "LifecycleLoggingMiddleware",
    "RunContextMiddleware",
    "RunRecordingMiddleware",
    "default_middlewares",
]


def default_middlewares() -> list[
    RunContextMiddleware | LifecycleLoggingMiddleware | RunRecordingMiddleware
]:
    """The middleware stack every Jobs Service broker runs, in order."""
    return [RunContextMiddleware(), LifecycleLoggingMiddleware(), RunRecordingMiddleware()]
