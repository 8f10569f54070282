"""``GET /v1/audit``: who did what, when, on what (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from jobs_service.gateway.audit import audit_writer
from jobs_service.gateway.problems import problem_responses
from jobs_service.gateway.query import IsoDatetime, after_id, keyset_page, utc_param
from jobs_service.gateway.schemas import Page
from jobs_service.gateway.security import require_scope
from jobs_service.infrastructure.models import AuditEntry
from jobs_service.infrastructure.repositories import audit as repo

__all__ = ["AuditEntryOut", "router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])
_PROBLEMS = problem_responses(
    {
        400: "Invalid cursor",
        401: "Missing or invalid API key",
        403: "The key lacks the admin scope",
        422: "Invalid query parameter",
    }
)
_PRINTABLE = r"^[^\x00-\x1f\x7f]{1,255}$"


class AuditEntryOut(BaseModel):
    """One operator action."""

    id: int
    at: datetime
    actor: str = Field(
        description="The API key's name; `local` for a loopback caller "
        "without configured keys; `anonymous` when refused before a key "
        "was recognised"
    )
    action: str = Field(
        description="Method and route template, e.g. `PATCH /v1/schedules/{schedule_id}`"
    )
    target: str | None = Field(
        description="The path parameter (e.g. the schedule id), or "
        "the id of what the request created"
    )
    outcome: int = Field(description="The HTTP status of the answer")
    request_id: str | None = Field(description="Ties the entry to the request log line")
    detail: dict[str, Any] | None = Field(description="path, client address, location")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        """Serialise a row."""
        return cls.model_validate(entry, from_attributes=True)


@router.get("", summary="The audit log, newest first", responses=_PROBLEMS)
async def list_audit(
    request: Request,
    _: Annotated[str, Depends(require_scope("admin"))],
    actor: Annotated[str | None, Query(pattern=_PRINTABLE, description="API key name")] = None,
    action: Annotated[
        str | None,
        Query(pattern=_PRINTABLE, description="e.g. `POST /v1/runs/{run_id}/retry`"),
    ] = None,
    target: Annotated[str | None, Query(pattern=_PRINTABLE)] = None,
    since: Annotated[IsoDatetime | None, Query(description="ISO 8601 with offset")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[AuditEntryOut]:
    """Every mutating request under `/v1/` (including refused ones), filtered by actor,
    exact action, target and time; cursor pagination."""
    start_after = after_id(cursor)
    filters = repo.AuditFilter(
        actor=actor, action=action, target=target, since=utc_param(since, "since")
    )
    runtime = request.app.state.runtime
    await audit_writer(runtime).flush()  # this process's latest actions are in the page
    async with runtime.database.sessions() as session:
        rows = await repo.list_entries(session, filters, limit=limit, after_id=start_after)
    items, next_cursor = keyset_page(rows, limit, AuditEntryOut.of)
    return Page[AuditEntryOut](items=items, next_cursor=next_cursor)
