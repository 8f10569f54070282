"""Schedules: list, create, inspect, change, pause/resume, delete, trigger."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from jobs_service.gateway.paths import public_path
from jobs_service.gateway.problems import problem_responses
from jobs_service.gateway.query import PathId, after_id, keyset_page
from jobs_service.gateway.schemas import (
    NAME_PATTERN,
    FireTime,
    Page,
    RunOut,
    ScheduleChangeOut,
    ScheduleDetailOut,
    ScheduleOut,
    TriggerOut,
)
from jobs_service.gateway.security import holds_scope, require_scope
from jobs_service.infrastructure.repositories import schedules as repo
from jobs_service.scheduler.service import ScheduleService, next_fires, timing_problem
from jobs_service.scheduler.specs import ScheduleDraft, SchedulePatch

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
_PROBLEMS = problem_responses(
    {
        401: "Missing or invalid API key",
        403: "The key lacks the scope",
        404: "Unknown schedule",
        409: "Label schedule or duplicate name",
        422: "Invalid schedule, task or kwargs",
    }
)
_LIST_PROBLEMS = {**_PROBLEMS, **problem_responses({400: "Invalid cursor"})}
_BODY_PROBLEMS = {**_PROBLEMS, **problem_responses({400: "The body is not valid JSON"})}
_TRIGGER_PROBLEMS = {**_PROBLEMS, **problem_responses({503: "The broker is unavailable: retry"})}
#: A create names no schedule in its path, so no 404: a task the body names that is not
#: registered is content the gateway cannot process, a 422 like kwargs that do not fit.
_CREATE_PROBLEMS = problem_responses(
    {
        400: "The body is not valid JSON",
        401: "Missing or invalid API key",
        403: "The key lacks the scope",
        409: "Duplicate name, or a name kept for label schedules",
        422: "Invalid timing or unknown task (invalid-schedule), or kwargs that do not fit "
        "the task (invalid-kwargs)",
    }
)


def service(request: Request) -> ScheduleService:
    """The schedule service bound to this process's runtime."""
    return ScheduleService(request.app.state.runtime.database, request.app.state.client)


Service = Annotated[ScheduleService, Depends(service)]


async def _detail(svc: ScheduleService, schedule_id: int) -> ScheduleDetailOut:
    schedule = await svc.get(schedule_id)
    recent = await svc.recent_runs(schedule_id)
    return ScheduleDetailOut(
        **ScheduleOut.of(schedule).model_dump(),
        next_fires=[FireTime(**fire) for fire in next_fires(schedule)],
        recent_runs=[RunOut.of(run) for run in recent],
        timing_error=timing_problem(schedule),
    )


@router.get("", summary="List schedules", responses=_LIST_PROBLEMS)
async def list_schedules(
    request: Request,
    _: Annotated[str, Depends(require_scope("read"))],
    task: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    enabled: bool | None = None,
    source: Literal["label", "api"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[ScheduleOut]:
    """Label and API schedules, oldest first; cursor pagination."""
    start_after = after_id(cursor)
    filters = repo.ScheduleFilter(task=task, enabled=enabled, source=source)
    async with request.app.state.runtime.database.sessions() as session:
        rows = await repo.list_schedules(session, filters, limit=limit, after_id=start_after)
    items, next_cursor = keyset_page(rows, limit, ScheduleOut.of)
    return Page[ScheduleOut](items=items, next_cursor=next_cursor)


@router.post("", status_code=201, summary="Create a schedule", responses=_CREATE_PROBLEMS)
async def create_schedule(
    body: ScheduleDraft,
    request: Request,
    response: Response,
    svc: Service,
    principal: Annotated[str, Depends(require_scope("operate"))],
) -> ScheduleDetailOut:
    """cron (5 fields, IANA timezone), interval (seconds ≥ 1) or once (future, with an
    offset); the task must exist (else 422 `invalid-schedule`) and kwargs must match its
    signature (else 422 `invalid-kwargs`)."""
    schedule = await svc.create(body, created_by=principal)
    response.headers["Location"] = public_path(request.scope, f"/v1/schedules/{schedule.id}")
    return await _detail(svc, schedule.id)


@router.get(
    "/{schedule_id}", summary="One schedule with next fires and recent runs", responses=_PROBLEMS
)
async def get_schedule(
    schedule_id: PathId,
    svc: Service,
    _: Annotated[str, Depends(require_scope("read"))],
) -> ScheduleDetailOut:
    """``next_fires``: the next five, in UTC and in the schedule's zone (none, with
    ``timing_error`` saying why, for a timing this host cannot read)."""
    return await _detail(svc, schedule_id)


@router.patch(
    "/{schedule_id}", summary="Change, pause or resume a schedule", responses=_BODY_PROBLEMS
)
async def update_schedule(
    schedule_id: PathId,
    body: SchedulePatch,
    request: Request,
    svc: Service,
    _: Annotated[str, Depends(require_scope("operate"))],
) -> ScheduleDetailOut | ScheduleChangeOut:
    """Only the given fields change (at least one: an empty body is a 422).
    ``{"enabled": false}`` pauses, ``{"enabled": true}`` resumes from now (missed fires
    are not replayed). Label schedules: pause/resume only. The answer is the schedule as
    ``GET`` shows it; a key without the ``read`` scope gets only its id and the names of
    the fields changed."""
    await svc.update(schedule_id, body)
    if not holds_scope(request, "read"):
        return ScheduleChangeOut(id=schedule_id, changed=sorted(body.model_fields_set))
    return await _detail(svc, schedule_id)


@router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule", responses=_PROBLEMS)
async def delete_schedule(
    schedule_id: PathId,
    svc: Service,
    _: Annotated[str, Depends(require_scope("operate"))],
) -> Response:
    """Its runs keep their history. Label schedules cannot be deleted (409)."""
    await svc.delete(schedule_id)
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/trigger", status_code=202, summary="Run now", responses=_TRIGGER_PROBLEMS
)
async def trigger_schedule(
    schedule_id: PathId,
    svc: Service,
    _: Annotated[str, Depends(require_scope("operate"))],
) -> TriggerOut:
    """Queue a run of the schedule's task now (works for paused schedules too)."""
    run_id = await svc.trigger(schedule_id)
    return TriggerOut(run_id=run_id, schedule_id=schedule_id, status="queued")
