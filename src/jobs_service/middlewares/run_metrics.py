"""Prometheus metrics of every attempt: runs by task and status, duration, retries, dead.

``jobs_runs_total{task, status}`` counts ended attempts (succeeded, failed, retrying,
dead, cancelled); ``jobs_run_duration_seconds{task}`` is a histogram of their durations.
``jobs_run_retries_total{task}`` and ``jobs_dead_runs_total{task}`` are the two statuses
operators alert on, as families of their own: they are derived here from the status the
retry middleware already decided (``retrying``: another attempt was scheduled; ``dead``:
the last attempt failed), so retries cost no hook and successes pay one comparison.

Per run this costs two dictionary lookups and two metric updates (about 3 µs in
Prometheus's multiprocess mode, which worker processes use: see
:mod:`jobs_service.infrastructure.worker_metrics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMiddleware

from jobs_service.core.run_context import current_run
from jobs_service.infrastructure.run_counters import DEAD_RUNS, RETRIES, RUN_DURATION, RUNS
from jobs_service.middlewares.cancellation import never_started
from jobs_service.middlewares.outcome import outcome_of

if TYPE_CHECKING:
    from taskiq import TaskiqMessage, TaskiqResult

__all__ = ["DEAD_RUNS", "RETRIES", "RUNS", "RUN_DURATION", "RunMetricsMiddleware"]

_ALSO = {"retrying": RETRIES, "dead": DEAD_RUNS}


class RunMetricsMiddleware(TaskiqMiddleware):
    """Counts each ended attempt and observes its duration."""

    def __init__(self) -> None:
        super().__init__()
        # labels() takes a lock and builds a key each call; look each child up once.
        self._runs: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._also: dict[tuple[str, str], Any] = {}

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """Count the attempt under its final status (after the retry decision)."""
        run = current_run()
        if run is None or never_started(message):
            return
        status = outcome_of(result, run).status
        counter = self._runs.get((run.task, status))
        if counter is None:
            counter = self._runs[run.task, status] = RUNS.labels(run.task, status)
        counter.inc()
        duration = self._durations.get(run.task)
        if duration is None:
            duration = self._durations[run.task] = RUN_DURATION.labels(run.task)
        duration.observe(run.elapsed_s())
        if status in _ALSO:  # a string's hash is cached: a successful run pays ~30 ns
            self._count_also(run.task, status)

    def _count_also(self, task: str, status: str) -> None:
        child = self._also.get((task, status))
        if child is None:
            child = self._also[task, status] = _ALSO[status].labels(task)
        child.inc()
