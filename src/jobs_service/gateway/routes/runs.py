"""Run history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from jobs_service.core.ids import is_run_id
from jobs_service.gateway.problems import Problem
from jobs_service.gateway.query import after_id, keyset_page, utc_param
from jobs_service.gateway.schemas import (
    MAX_ID,
    NAME_PATTERN,
    DeliveryOut,
    Page,
    RunDetailOut,
    RunOut,
    RunSource,
    RunStatus,
)
from jobs_service.gateway.security import require_scope
from jobs_service.infrastructure.repositories import deliveries, runs

router = APIRouter(prefix="/v1/runs", tags=["runs"])
_PROBLEMS: dict[int | str, dict[str, str]] = {
    400: {"description": "Invalid cursor"},
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The key lacks the scope"},
}


@router.get("", summary="List runs, newest first", responses=_PROBLEMS)
async def list_runs(
    request: Request,
    _: Annotated[str, Depends(require_scope("read"))],
    task: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    status: RunStatus | None = None,
    source: RunSource | None = None,
    schedule_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    queued_after: Annotated[datetime | None, Query(description="ISO 8601 with offset")] = None,
    queued_before: Annotated[datetime | None, Query(description="ISO 8601 with offset")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[RunOut]:
    """Filter by task, status, source, schedule and queue time; cursor pagination."""
    start_after = after_id(cursor)
    filters = runs.RunFilter(
        task=task,
        status=status,
        source=source,
        schedule_id=schedule_id,
        queued_after=utc_param(queued_after, "queued_after"),
        queued_before=utc_param(queued_before, "queued_before"),
    )
    async with request.app.state.runtime.database.sessions() as session:
        rows = await runs.list_runs(session, filters, limit=limit, after_id=start_after)
    items, next_cursor = keyset_page(rows, limit, RunOut.of)
    return Page[RunOut](items=items, next_cursor=next_cursor)


@router.get(
    "/{run_id}", summary="One run", responses={**_PROBLEMS, 404: {"description": "Unknown run"}}
)
async def get_run(
    run_id: str, request: Request, _: Annotated[str, Depends(require_scope("read"))]
) -> RunDetailOut:
    """A run by its ``run_id`` (or numeric ``id``): summary, error, progress, the result
    content and every delivery of it."""
    async with request.app.state.runtime.database.sessions() as session:
        if is_run_id(run_id):
            row = await runs.get_run(session, run_id=run_id)
        elif run_id.isascii() and run_id.isdigit() and len(run_id) < 19:
            row = await runs.get_run(session, id=int(run_id))
        else:
            row = None
        sent = await deliveries.list_for_run(session, [row.run_id]) if row is not None else []
    if row is None:
        raise Problem(404, "unknown-run", f"no run {run_id!r}")
    detail = RunDetailOut.model_validate(row, from_attributes=True)
    detail.deliveries = [DeliveryOut.of(item) for item in sent]
    return detail
