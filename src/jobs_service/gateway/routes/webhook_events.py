"""The webhook inbox: what arrived, what became of it, and replay."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from jobs_service.core.text import PortableText
from jobs_service.gateway.problems import Problem, problem_responses
from jobs_service.gateway.query import IsoDatetime, PathId, after_id, keyset_page, utc_param
from jobs_service.gateway.schemas import (
    NAME_PATTERN,
    Page,
    ReplayOut,
    WebhookEventDetailOut,
    WebhookEventOut,
)
from jobs_service.gateway.security import require_scope
from jobs_service.infrastructure.repositories import webhooks as repo
from jobs_service.webhooks.inbox import EventInProgressError, UnknownEventError

router = APIRouter(prefix="/v1/webhooks/events", tags=["webhooks"])
_PROBLEMS = problem_responses(
    {
        400: "Invalid cursor",
        401: "Missing or invalid API key",
        403: "The key lacks the scope",
        404: "Unknown event",
        422: "Invalid query or path parameter",
    }
)


@router.get("", summary="List webhook events, newest first", responses=_PROBLEMS)
async def list_events(
    request: Request,
    _: Annotated[str, Depends(require_scope("read"))],
    source: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    status: Literal["accepted", "enqueued", "processed", "failed"] | None = None,
    type: Annotated[PortableText | None, Query(max_length=200)] = None,
    received_after: IsoDatetime | None = None,
    received_before: IsoDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[WebhookEventOut]:
    """Filter by source, status, event type and receive time; cursor pagination."""
    start_after = after_id(cursor)
    filters = repo.EventFilter(
        source=source,
        status=status,
        event_type=type,
        received_after=utc_param(received_after, "received_after"),
        received_before=utc_param(received_before, "received_before"),
    )
    async with request.app.state.runtime.database.sessions() as session:
        rows = await repo.list_events(session, filters, limit=limit, after_id=start_after)
    items, next_cursor = keyset_page(rows, limit, WebhookEventOut.of)
    return Page[WebhookEventOut](items=items, next_cursor=next_cursor)


@router.get("/{event_id}", summary="One webhook event with headers and body", responses=_PROBLEMS)
async def get_event(
    event_id: PathId, request: Request, _: Annotated[str, Depends(require_scope("read"))]
) -> WebhookEventDetailOut:
    """Headers are stored with secrets and signatures redacted."""
    async with request.app.state.runtime.database.sessions() as session:
        event = await repo.get_event(session, event_id)
    if event is None:
        raise Problem(404, "unknown-webhook-event", f"no webhook event {event_id}")
    return WebhookEventDetailOut.of(event)


@router.post(
    "/{event_id}/replay",
    status_code=202,
    summary="Process an event again",
    responses={
        **_PROBLEMS,
        **problem_responses({409: "The event's run has not ended (accepted or enqueued)"}),
    },
)
async def replay_event(
    event_id: PathId,
    request: Request,
    _: Annotated[str, Depends(require_scope("operate"))],
) -> ReplayOut:
    """A new run of the event's route task; earlier runs stay in the history. Only a
    processed or failed event is replayed: one whose run is still to be sent, queued or
    running is a 409 ``webhook-event-in-progress`` (``event_status`` and ``run_id`` say
    which run to wait for, or to cancel first)."""
    try:
        run_id = await request.app.state.webhook_inbox.replay(event_id)
    except UnknownEventError as exc:
        raise Problem(404, "unknown-webhook-event", str(exc)) from None
    except EventInProgressError as exc:
        raise Problem(
            409,
            "webhook-event-in-progress",
            str(exc),
            event_status=exc.status,
            run_id=exc.run_id,
        ) from None
    return ReplayOut(event_id=event_id, run_id=run_id, status="queued")
