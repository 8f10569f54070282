"""Runs as tests need them: a worker's record of a finished attempt (to put runs in the
history), and a run in progress (what middlewares and writers see while it executes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs_service.core.ids import new_run_id
from jobs_service.core.run_context import RunContext
from jobs_service.infrastructure.repositories.runs import RunEvent

__all__ = ["finished_event", "run_in_progress"]


def run_in_progress(
    run_id: str | None = None, *, task: str = "count_items", **fields: Any
) -> RunContext:
    """Attempt 1 of an API run of ``task`` (a new run id unless given), queued now;
    ``fields`` set the rest (``progress_sink``, ``attempt``…)."""
    values: dict[str, Any] = {"attempt": 1, "kwargs": {}, "source": "api"} | fields
    return RunContext(
        run_id=run_id or new_run_id(), task=task, queued_at=datetime.now(UTC), **values
    )


def finished_event(
    run_id: str | None = None,
    *,
    at: datetime | None = None,
    status: str = "succeeded",
    source: str = "api",
    kwargs: dict[str, Any] | None = None,
    worker: str = "w:1",
    duration_ms: int = 1,
    summary: dict[str, int] | None = None,
    queued_at: datetime | None = None,
    webhook_event_id: int | None = None,
) -> RunEvent:
    """Attempt 1 of a ``count_items`` run (a new run id unless given), queued, started and
    finished at ``at`` (now unless given)."""
    at = at or datetime.now(UTC)
    return RunEvent(
        run_id=run_id or new_run_id(),
        task="count_items",
        kwargs=kwargs if kwargs is not None else {},
        source=source,
        status=status,
        attempt=1,
        worker=worker,
        queued_at=queued_at or at,
        started_at=at,
        finished_at=at,
        duration_ms=duration_ms,
        summary=summary,
        webhook_event_id=webhook_event_id,
    )
