"""Run history, and the operator's retry and cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from jobs_service.client import JobsClient, RunNotFoundError, RunStateError
from jobs_service.core.ids import is_run_id
from jobs_service.gateway.dependencies import get_client
from jobs_service.gateway.problems import Problem, problem_responses
from jobs_service.gateway.query import DIGITS_ONLY, IsoDatetime, after_id, keyset_page, utc_param
from jobs_service.gateway.run_events import END_ID, event_stream
from jobs_service.gateway.run_feeds import RunFeeds, RunState
from jobs_service.gateway.schemas import (
    MAX_ID,
    NAME_PATTERN,
    Page,
    RunActionOut,
    RunDetailOut,
    RunOut,
    RunSource,
    RunStatus,
)
from jobs_service.gateway.security import holds_scope, require_scope
from jobs_service.infrastructure.repositories import deliveries, runs

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from jobs_service.infrastructure.models import JobRun

router = APIRouter(prefix="/v1/runs", tags=["runs"])
_PROBLEMS = problem_responses(
    {
        400: "Invalid cursor",
        401: "Missing or invalid API key",
        403: "The key lacks the scope",
        422: "Invalid query or path parameter",
    }
)

#: One event of ``GET /v1/runs/{run_id}/events`` (before Open API 3.2, the ``schema`` of
#: an event stream describes each event).
_EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data", "id"],
    "properties": {
        "event": {"type": "string", "enum": ["status", "progress"]},
        "id": {"type": "string", "description": "A growing number; `end` on the final event"},
        "data": {
            "type": "string",
            "description": "JSON. status: run_id, status, attempt, started_at, finished_at, "
            "duration_ms, summary, error. progress: run_id, percent, message, at, attempt.",
        },
    },
}


@router.get("", summary="List runs, newest first", responses=_PROBLEMS)
async def list_runs(
    request: Request,
    _: Annotated[str, Depends(require_scope("read"))],
    task: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    status: RunStatus | None = None,
    source: RunSource | None = None,
    schedule_id: Annotated[int | None, Query(ge=1, le=MAX_ID), DIGITS_ONLY] = None,
    queued_after: Annotated[IsoDatetime | None, Query(description="ISO 8601 with offset")] = None,
    queued_before: Annotated[IsoDatetime | None, Query(description="ISO 8601 with offset")] = None,
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
    "/{run_id}",
    summary="One run",
    responses={**_PROBLEMS, **problem_responses({404: "Unknown run"})},
)
async def get_run(
    run_id: str, request: Request, _: Annotated[str, Depends(require_scope("read"))]
) -> RunDetailOut:
    """A run by its ``run_id`` (or numeric ``id``): summary, error, progress, the result
    content, every attempt and every delivery of it."""
    async with request.app.state.runtime.database.sessions() as session:
        row = await _find(session, run_id)
        return await _detail(session, row)


@router.get(
    "/{run_id}/events",
    summary="Follow a run: its status and progress as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        **_PROBLEMS,
        **problem_responses({404: "Unknown run"}),
        200: {
            "description": "An event stream that ends with the run's final status",
            "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
        },
        204: {"description": "The run has ended and the client saw its final event"},
    },
)
async def follow_run(
    run_id: str,
    request: Request,
    _: Annotated[str, Depends(require_scope("read"))],
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=64, description="Sent by reconnecting clients"),
    ] = None,
) -> Response:
    """``text/event-stream``: a ``status`` event (`status`, `attempt`, and once ended
    `summary`, `error`, `duration_ms`) and a ``progress`` event (`percent`, `message`,
    `at`, `attempt`) each time one changes, starting with the current ones; heartbeat
    comments in between; the final status event (id `end`) closes the stream. Unknown
    run: 404 before any event."""
    runtime = request.app.state.runtime
    async with runtime.database.sessions() as session:
        current = RunState.of(await _find(session, run_id))
    if last_event_id == END_ID and current.terminal:
        return Response(status_code=204)
    api = runtime.settings.api
    feeds = runtime.resource(
        "run-feeds",
        lambda: RunFeeds(runtime.database, poll_interval_s=api.events_poll_interval_ms / 1000),
    )
    stream = event_stream(
        feeds,
        current,
        heartbeat_s=api.events_heartbeat_s,
        retry_ms=api.events_retry_ms,
        last_event_id=last_event_id,
    )
    # no-store, as every /v1/ answer: no cache may keep the stream (it carries the run's
    # summary and error); X-Accel-Buffering: nginx must not buffer it (events would
    # arrive in lumps).
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.post(
    "/{run_id}/retry",
    status_code=202,
    summary="Queue a failed, dead or cancelled run again",
    responses={
        **_PROBLEMS,
        **problem_responses(
            {
                404: "Unknown run, or its task is no longer registered",
                409: "The run is not failed, dead or cancelled",
                503: "The broker is unreachable; nothing changed (`broker-unavailable`). Or "
                "it did not confirm the send (`broker-unconfirmed`): the run stays queued "
                "and is sent once by the service itself",
            }
        ),
    },
)
async def retry_run(
    run_id: str,
    request: Request,
    _: Annotated[str, Depends(require_scope("operate"))],
    client: Annotated[JobsClient, Depends(get_client)],
) -> RunDetailOut | RunActionOut:
    """The same run id runs again as its next attempt, with its kwargs and source; it is
    ``queued`` until a worker starts it. Earlier attempts stay listed in ``attempts``. A
    key without the ``read`` scope gets only the run id, status and attempt."""
    async with request.app.state.runtime.database.sessions() as session:
        found = await _find(session, run_id)
    request.state.audit_target = found.run_id  # also when addressed by its numeric id
    try:
        queued = await client.retry(found.run_id)
    except (RunNotFoundError, RunStateError) as exc:
        raise _problem(exc) from None
    if not holds_scope(request, "read"):
        return RunActionOut.of(queued)
    # The run as this retry queued it: a worker may already have run the new attempt,
    # which GET /v1/runs/{run_id} shows.
    async with request.app.state.runtime.database.sessions() as session:
        return await _detail(session, queued, attempts_up_to=queued.attempt)


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    summary="Cancel a queued, retrying or running run",
    responses={
        **_PROBLEMS,
        **problem_responses(
            {
                404: "Unknown run",
                409: "The run has already finished",
                503: "The broker is unreachable; nothing changed",
            }
        ),
    },
)
async def cancel_run(
    run_id: str,
    request: Request,
    principal: Annotated[str, Depends(require_scope("operate"))],
    client: Annotated[JobsClient, Depends(get_client)],
) -> RunDetailOut | RunActionOut:
    """A queued (or retrying) run never starts; a running async task is cancelled
    cooperatively (at its next ``await``). The run is ``cancelled`` at once, with the
    error ``{"type": "Cancelled", "message": "cancelled by <key name>"}``, and is not
    retried; ``POST /v1/runs/{run_id}/retry`` queues it again. A key without the
    ``read`` scope gets only the run id, status and attempt."""
    async with request.app.state.runtime.database.sessions() as session:
        found = await _find(session, run_id)
    request.state.audit_target = found.run_id  # also when addressed by its numeric id
    try:
        await client.cancel(found.run_id, by=principal)
    except (RunNotFoundError, RunStateError) as exc:
        raise _problem(exc) from None
    async with request.app.state.runtime.database.sessions() as session:
        cancelled = await _find(session, found.run_id)
        if not holds_scope(request, "read"):
            return RunActionOut.of(cancelled)
        return await _detail(session, cancelled)


async def _find(session: AsyncSession, run_id: str) -> JobRun:
    """The run by run id or numeric id; a 404 problem if there is none."""
    row = None
    if is_run_id(run_id):
        row = await runs.get_run(session, run_id=run_id)
    elif run_id.isascii() and run_id.isdigit() and len(run_id) < 19:
        row = await runs.get_run(session, id=int(run_id))
    if row is None:
        raise Problem(404, "unknown-run", f"no run {run_id!r}")
    return row


async def _detail(
    session: AsyncSession, row: JobRun, *, attempts_up_to: int | None = None
) -> RunDetailOut:
    attempts = await runs.list_attempts(session, row)
    if attempts_up_to is not None:
        attempts = [attempt for attempt in attempts if attempt.attempt <= attempts_up_to]
    return RunDetailOut.of(
        row,
        attempts=attempts,
        deliveries=await deliveries.list_for_run(session, [row.run_id]),
    )


def _problem(exc: RunNotFoundError | RunStateError) -> Problem:
    if isinstance(exc, RunNotFoundError):
        return Problem(404, "unknown-run", str(exc))
    slug = "run-not-retryable" if exc.action == "retried" else "run-not-cancellable"
    return Problem(409, slug, str(exc), run_status=exc.status)
