"""Prometheus counters of the scheduler: fires, skips and misses, by schedule.

Every fire time a replica decides ends in exactly one of them: *fired* (a run was
claimed and queued; a buffered fire counts when its run starts, a fire whose send
failed when it was claimed, since the outbox re-sends that same run), *skipped* (no run:
the overlap policy, a paused schedule, a task that no longer takes the schedule's
kwargs) or *missed* (older than the catch-up window; a paused schedule misses nothing).
A fire another replica claimed is that replica's to count. Misses and a paused
schedule's skips are claimed by nobody: each replica that comes to them counts them, so
with replicas they may count twice (they are signals to alert on, not exact tallies;
claiming them would cost the tick a write each). A schedule whose timing this host
cannot read has no fire times to decide: it counts as one ``invalid_timing`` skip per
replica when first seen, then once a minute while it lasts.
The label is the schedule's name (unique, and what operators read; schedules are few, so
the label set stays small).

The scheduler is a process of its own in production: ``jobsctl scheduler`` serves these
on ``scheduler.metrics_port``; the embedded mode serves them on the gateway's
``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = [
    "SCHEDULE_FIRES",
    "SCHEDULE_MISSES",
    "SCHEDULE_SKIPS",
    "count_fire",
    "count_misses",
    "count_skip",
    "serve_scheduler_metrics",
]

SCHEDULE_FIRES = Counter("jobs_schedule_fires", "Fire times that queued a run", ["schedule"])
SCHEDULE_SKIPS = Counter(
    "jobs_schedule_skips",
    "Fire times that queued no run (overlap, paused, invalid_task, invalid_timing)",
    ["schedule", "reason"],
)
SCHEDULE_MISSES = Counter(
    "jobs_schedule_misses", "Fire times older than the catch-up window", ["schedule"]
)


def count_fire(schedule: str) -> None:
    """One fire that queued a run."""
    SCHEDULE_FIRES.labels(schedule).inc()


def count_skip(schedule: str, reason: str) -> None:
    """One fire that queued no run, and why."""
    SCHEDULE_SKIPS.labels(schedule, reason).inc()


def count_misses(schedule: str, missed: int) -> None:
    """Fires that passed unrun (a tick covers many after an outage)."""
    SCHEDULE_MISSES.labels(schedule).inc(missed)


def serve_scheduler_metrics(host: str, port: int) -> None:
    """Serve this process's metrics on ``host:port`` from a daemon thread (one process:
    no multiprocess directory, unlike the worker's)."""
    from prometheus_client import start_http_server  # noqa: PLC0415

    start_http_server(port, addr=host)
