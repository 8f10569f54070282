"""The Prometheus families of ended attempts, shared by the middleware that counts every
attempt and the worker's own paths that end a run without it (a task no worker knows, a
message that never finished anywhere).

Defined apart from the middleware so that infrastructure can count without importing a
middleware; imported only once ``jobsctl worker`` has chosen Prometheus's multiprocess
mode (see :mod:`jobs_service.infrastructure.worker_metrics`).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["DEAD_RUNS", "RETRIES", "RUNS", "RUN_DURATION", "count_dead_run"]

RUNS = Counter("jobs_runs", "Ended attempts by task and status", ["task", "status"])
RUN_DURATION = Histogram(
    "jobs_run_duration_seconds",
    "Duration of ended attempts",
    ["task"],
    buckets=(0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 15, 30, 60, 120, 300, 900, 3600),
)
RETRIES = Counter(
    "jobs_run_retries", "Failed attempts sent again after a backoff (status retrying)", ["task"]
)
DEAD_RUNS = Counter(
    "jobs_dead_runs", "Runs whose last allowed attempt failed (status dead)", ["task"]
)


def count_dead_run(task: str) -> None:
    """A run recorded ``dead`` outside the middlewares: counted as theirs would be."""
    RUNS.labels(task, "dead").inc()
    DEAD_RUNS.labels(task).inc()
