"""The task registry and submitting runs."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from jobs_service.client import JobsClient
from jobs_service.gateway.dependencies import get_client
from jobs_service.gateway.paths import public_path
from jobs_service.gateway.problems import Problem, problem_responses
from jobs_service.gateway.schemas import (
    BatchIn,
    BatchOut,
    Page,
    RunStatus,
    SubmitIn,
    SubmitOut,
    TaskOut,
)
from jobs_service.gateway.security import require_scope
from jobs_service.tasks.registry import find_task, list_tasks

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
_PROBLEMS = problem_responses(
    {
        401: "Missing or invalid API key",
        403: "The key lacks the scope",
        404: "Unknown task",
        422: "Invalid kwargs or request",
    }
)
_SUBMIT_PROBLEMS = {
    **_PROBLEMS,
    **problem_responses(
        {
            400: "The body is not valid JSON",
            503: "The broker is unavailable (`broker-unavailable`: nothing was queued), or "
            "did not confirm the runs (`broker-unconfirmed`: `run_ids` may be queued)",
        }
    ),
}


@router.get("", summary="List registered tasks", responses=_PROBLEMS)
async def get_tasks(
    request: Request,
    _: Annotated[str, Depends(require_scope("read"))],
    category: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[TaskOut]:
    """Name, category, description, schedules, timeout and retries of every task, by
    name; ``cursor`` continues after the last name of the previous page."""
    tasks = [
        info
        for info in list_tasks(request.app.state.broker)
        if category is None or info.category == category
    ]
    if cursor:
        tasks = [info for info in tasks if info.name > cursor]
    page = tasks[:limit]
    more = len(tasks) > limit
    return Page[TaskOut](
        items=[TaskOut.of(info) for info in page],
        next_cursor=page[-1].name if more and page else None,
    )


@router.get("/{name}", summary="One task", responses=_PROBLEMS)
async def get_task(
    name: str, request: Request, _: Annotated[str, Depends(require_scope("read"))]
) -> TaskOut:
    """A task with the JSON Schema of its keyword arguments."""
    return TaskOut.of(find_task(request.app.state.broker, name))


@router.post("/{name}", status_code=202, summary="Submit a run", responses=_SUBMIT_PROBLEMS)
async def submit_task(
    name: str,
    body: SubmitIn,
    request: Request,
    response: Response,
    client: Annotated[JobsClient, Depends(get_client)],
    _: Annotated[str, Depends(require_scope("operate"))],
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
    ] = None,
) -> SubmitOut:
    """Validate the kwargs against the task's signature and queue a run.

    With an ``Idempotency-Key`` header, repeating the request returns the same run
    (``Idempotent-Replayed: true``) instead of queueing another.

    503 ``broker-unavailable``: nothing was queued. 503 ``broker-unconfirmed``: Redis
    took the send and did not answer, so the run (``run_id``) may be queued. With a key
    the run is recorded and queued once whatever happens: repeat the request (it
    answers with this run); without one, look the run up rather than submit again.
    """
    if idempotency_key is not None and not idempotency_key.strip():
        raise Problem(422, "invalid-request", "Idempotency-Key must not be blank")
    submission = await client.submit(
        name, body.kwargs, source="api", idempotency_key=idempotency_key
    )
    response.headers["Location"] = public_path(request.scope, f"/v1/runs/{submission.run_id}")
    if submission.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SubmitOut(
        run_id=submission.run_id, task=name, status=cast("RunStatus", submission.status)
    )


@router.post(
    "/{name}/batch", status_code=202, summary="Submit many runs", responses=_SUBMIT_PROBLEMS
)
async def submit_batch(
    name: str,
    body: BatchIn,
    client: Annotated[JobsClient, Depends(get_client)],
    _: Annotated[str, Depends(require_scope("operate"))],
    idempotency_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> BatchOut:
    """Queue up to 1000 runs of one task: every item is validated first, and one bad
    item rejects the whole batch; the runs then go to the broker in a few chunks (100,
    then 250 at a time), each one round trip.

    If the broker fails midway, the answer is a 503 ``batch-partly-queued`` listing the
    runs already queued (``queued_run_ids``, the batch's first items): resend only the
    rest. If it takes a chunk and does not answer, the 503 is ``broker-unconfirmed``:
    ``queued_run_ids`` were queued, ``run_ids`` may be, the items after them were not.
    ``Idempotency-Key`` is refused here rather than ignored.
    """
    if idempotency_key is not None:
        raise Problem(
            422,
            "invalid-request",
            "Idempotency-Key is not supported on batches: submit runs one by one to use "
            "it (POST /v1/tasks/{name})",
        )
    run_ids = await client.enqueue_many(name, [item.kwargs for item in body.items], source="api")
    return BatchOut(task=name, run_ids=run_ids)
