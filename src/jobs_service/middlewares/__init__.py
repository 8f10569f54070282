"""TaskIQ middlewares: run context, cancellation, lifecycle logging, run recording,
retries, delivery.

Order matters and is fixed by :func:`default_middlewares`: the context middleware comes
first so its ``pre_execute`` runs before the others and its ``post_execute`` (TaskIQ runs
those in reverse) clears the context last; the cancellation middleware comes next so the
recording middleware knows an attempt it refused; the retry middleware comes last so its
``post_execute`` decides ``retrying``/``dead`` before logging, recording and metrics see
it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs_service.middlewares.cancellation import CancellationMiddleware
from jobs_service.middlewares.lifecycle_logging import LifecycleLoggingMiddleware
from jobs_service.middlewares.result_delivery import ResultDeliveryMiddleware
from jobs_service.middlewares.retry import RetryMiddleware
from jobs_service.middlewares.run_context import RunContextMiddleware
from jobs_service.middlewares.run_metrics import RunMetricsMiddleware
from jobs_service.middlewares.run_recording import RunRecordingMiddleware

if TYPE_CHECKING:
    from taskiq import TaskiqMiddleware

__all__ = [
    "CancellationMiddleware",
    "LifecycleLoggingMiddleware",
    "ResultDeliveryMiddleware",
    "RetryMiddleware",
    "RunContextMiddleware",
    "RunMetricsMiddleware",
    "RunRecordingMiddleware",
    "default_middlewares",
]


def default_middlewares() -> list[TaskiqMiddleware]:
    """The middleware stack every Jobs Service broker runs, in order."""
    return [
        RunContextMiddleware(),
        CancellationMiddleware(),
        ResultDeliveryMiddleware(),
        LifecycleLoggingMiddleware(),
        RunRecordingMiddleware(),
        RunMetricsMiddleware(),
        RetryMiddleware(),
    ]
