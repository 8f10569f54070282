"""RFC 9457 problem details: every error the gateway returns has this shape.

``type`` is a URN naming the kind of problem (stable, documented in the API reference);
``detail`` says what to fix; ``request_id`` ties the answer to the request log line.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from jobs_service.client import EnqueueError, EnqueueUnconfirmedError, IdempotencyConflictError
from jobs_service.core.errors import ConfigurationError
from jobs_service.core.logging import get_logger
from jobs_service.gateway.paths import route_path
from jobs_service.infrastructure.database import database_error_chain
from jobs_service.infrastructure.held_connection import SERVER_GONE
from jobs_service.scheduler.service import (
    ScheduleConflictError,
    ScheduleInvalidError,
    ScheduleNotFoundError,
)
from jobs_service.tasks.registry import InvalidKwargsError, UnknownTaskError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI, Request

__all__ = [
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "Problem",
    "install_problem_handlers",
    "is_database_down",
    "problem_body",
    "problem_response",
    "problem_responses",
    "unexpected_problem",
]

PROBLEM_JSON = "application/problem+json"
#: JSON Schema of the documents :func:`problem_body` builds; extensions are allowed.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "description": "urn:jobs-service:problem:<kind>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What to fix"},
        "instance": {"type": "string", "description": "The request path"},
        "request_id": {"type": "string", "description": "Ties the answer to the log"},
    },
}
_log = get_logger("jobs_service.gateway")


def problem_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for its problem answers, documented as what they are:
    ``application/problem+json`` documents (FastAPI would document a 422 as its own
    ``application/json`` validation error, which this gateway never sends)."""
    return {
        status: {"description": text, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
        for status, text in descriptions.items()
    }


class Problem(Exception):  # noqa: N818 - it is raised as a response, not a failure
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    slug: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build the problem+json response."""
    body = problem_body(
        status,
        slug,
        detail,
        instance=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        **extensions,
    )
    return _ProblemResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


class _ProblemResponse(JSONResponse):
    """A problem document that always renders.

    A problem can quote what the caller sent (a kwargs key in ``errors[].loc``), and a
    lone surrogate there has no UTF-8 form: the plain render would raise and the caller
    would get a bare 500 instead of the 422 that names it. Such a document is written
    with ``\\u`` escapes instead, which every JSON parser reads back as the same text.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode("ascii")


def problem_body(
    status: int,
    slug: str,
    detail: str,
    *,
    instance: str,
    request_id: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """The problem document itself (RFC 9457 members plus extensions)."""
    body: dict[str, Any] = {
        "type": f"urn:jobs-service:problem:{slug}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if request_id:
        body["request_id"] = request_id
    body.update(extensions)
    return body


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]


def install_problem_handlers(app: FastAPI) -> None:
    """Map every exception the gateway can raise to a problem response."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.slug, exc.detail, headers=exc.headers, **exc.extensions
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(error["type"] == "json_invalid" for error in errors):
            refusal = _refuse_unauthenticated(request)
            if refusal is not None:
                return refusal
            return problem_response(
                request, 400, "malformed-json", "the request body is not valid JSON", errors=errors
            )
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(part) for part in first["loc"])
        return problem_response(
            request, 422, "invalid-request", f"{where}: {first['msg']}", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ClientDisconnect):
            # FastAPI's 400 for a body the client stopped sending: nobody is left to
            # answer; the request log records it as the client's (499).
            raise exc.__cause__
        # FastAPI's 400 for a body it cannot read at all (e.g. not UTF-8).
        refusal = _refuse_unauthenticated(request) if exc.status_code == 400 else None
        if refusal is not None:
            return refusal
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # A JSON body (FastAPI decodes only those) whose bytes are not UTF-8.
            return problem_response(
                request, 400, "malformed-json", "the request body is not valid JSON (not UTF-8)"
            )
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(
            request, exc.status_code, slug, str(exc.detail), headers=dict(exc.headers or {})
        )

    @app.exception_handler(UnknownTaskError)
    async def _unknown_task(request: Request, exc: UnknownTaskError) -> JSONResponse:
        return problem_response(request, 404, "unknown-task", str(exc), task=exc.name)

    @app.exception_handler(InvalidKwargsError)
    async def _kwargs(request: Request, exc: InvalidKwargsError) -> JSONResponse:
        return problem_response(
            request, 422, "invalid-kwargs", str(exc), task=exc.task, errors=exc.errors
        )

    @app.exception_handler(IdempotencyConflictError)
    async def _idempotency(request: Request, exc: IdempotencyConflictError) -> JSONResponse:
        return problem_response(request, 422, "idempotency-key-reused", str(exc))

    @app.exception_handler(EnqueueError)
    async def _enqueue(request: Request, exc: EnqueueError) -> JSONResponse:
        _log.error("enqueue-failed", error=str(exc), queued=len(exc.queued))
        if exc.queued:
            # No Retry-After: resending the whole batch would queue these runs twice.
            return problem_response(
                request,
                503,
                "batch-partly-queued",
                f"{exc}; the first {len(exc.queued)} runs of the batch were queued "
                f"(queued_run_ids): resend only the items after them",
                queued_run_ids=exc.queued,
            )
        return problem_response(
            request, 503, "broker-unavailable", str(exc), headers={"Retry-After": "5"}
        )

    @app.exception_handler(EnqueueUnconfirmedError)
    async def _unconfirmed(request: Request, exc: EnqueueUnconfirmedError) -> JSONResponse:
        return _unconfirmed_problem(request, exc)

    @app.exception_handler(ScheduleNotFoundError)
    async def _no_schedule(request: Request, exc: ScheduleNotFoundError) -> JSONResponse:
        return problem_response(request, 404, "unknown-schedule", str(exc))

    @app.exception_handler(ScheduleConflictError)
    async def _schedule_conflict(request: Request, exc: ScheduleConflictError) -> JSONResponse:
        return problem_response(request, 409, "schedule-conflict", str(exc))

    @app.exception_handler(ScheduleInvalidError)
    async def _schedule_invalid(request: Request, exc: ScheduleInvalidError) -> JSONResponse:
        return problem_response(request, 422, "invalid-schedule", str(exc))

    @app.exception_handler(ConfigurationError)
    async def _config(request: Request, exc: ConfigurationError) -> JSONResponse:
        return problem_response(request, 500, "misconfigured", str(exc))


def _unconfirmed_problem(request: Request, exc: EnqueueUnconfirmedError) -> JSONResponse:
    """503 ``broker-unconfirmed``: Redis took the send and never answered, so the runs
    ``run_ids`` (one: also ``run_id``) may be queued; never "nothing was queued".

    ``Retry-After`` only where repeating the request is what to do: a keyed submit,
    whose run is recorded and sent once whatever happens (the repeat answers with it).
    Without a key a resubmit would be another run; an operator's retry stays queued
    and is sent by the service; a batch lists what was queued before
    (``queued_run_ids``), and the items after ``run_ids`` were not sent.
    """
    _log.error(
        "enqueue-unconfirmed",
        error=str(exc),
        run_ids=exc.run_ids[:20],
        runs=len(exc.run_ids),
        queued=len(exc.queued),
        recorded=exc.recorded,
    )
    extensions: dict[str, Any] = {"run_ids": exc.run_ids, "recorded": exc.recorded}
    if len(exc.run_ids) == 1:
        extensions["run_id"] = exc.run_ids[0]
    if exc.queued:
        extensions["queued_run_ids"] = exc.queued
    return problem_response(
        request,
        503,
        "broker-unconfirmed",
        str(exc),
        headers={"Retry-After": "5"} if exc.recorded and exc.idempotency_key else None,
        **extensions,
    )


def _refuse_unauthenticated(request: Request) -> JSONResponse | None:
    """The 401 (or loopback-only 403) a ``/v1/`` caller without a valid key gets.

    FastAPI reads and parses a JSON body before it runs the route's dependencies,
    authentication included, so a body that is not JSON would otherwise tell an
    unauthenticated caller how it failed. A recognised key lacking the route's scope
    still gets the 400.
    """
    from jobs_service.gateway.security import authenticate  # noqa: PLC0415 - import cycle

    if not route_path(request.scope).startswith("/v1/"):
        return None
    try:
        request.state.principal = authenticate(request.app.state.settings, request, "read")
    except Problem as exc:
        if exc.slug == "insufficient-scope":
            return None
        return problem_response(
            request, exc.status, exc.slug, exc.detail, headers=exc.headers, **exc.extensions
        )
    return None


def unexpected_problem(exc: BaseException) -> tuple[int, str, str, dict[str, str]]:
    """Status, slug, detail and headers for an exception no handler claimed.

    Called by the request-log middleware, which sits inside Starlette's error middleware
    and so can answer with the request id and log the failure exactly once.
    """
    if is_database_down(exc):
        return (
            503,
            "database-unavailable",
            "the database is unreachable; retry later",
            {"Retry-After": "5"},
        )
    return 500, "internal-error", "an unexpected error occurred; see the service log", {}


#: SQLSTATEs of a database that is up but serves nobody now: shutting down, crashed or
#: starting up (``57P01``-``57P03``), or taking no more connections (``53300``: its
#: ``max_connections``, or a role's or the database's ``CONNECTION LIMIT``). And of one
#: that refuses this deployment (``28P01``, ``28000``: credentials rotated on one side
#: only; ``3D000``: no such database): no request can be served until an operator fixes
#: it, the readiness check says not ready meanwhile, and the caller's retry succeeds
#: once that is done, so it is a 503 too, not a 500 that reads as a bug of the service.
_UNAVAILABLE_STATES = SERVER_GONE | {"53300", "28P01", "28000", "3D000"}
#: SQLSTATE class 08, connection exceptions. PgBouncer also answers its own refusals (a
#: full pool, no server to connect to, a client waiting too long) as ``08P01``.
_CONNECTION_EXCEPTION = "08"


def is_database_down(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or will not serve this
    deployment now, so that the same request can succeed later: a refused or lost
    connection, or the server refusing every request (:data:`_UNAVAILABLE_STATES`,
    class ``08``)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError  # noqa: PLC0415 - cold path
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError  # noqa: PLC0415

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # Every connection of the process's pool in use for `database.pool_timeout_s`: the
    # database is as good as unreachable for this request, and a retry may find one free.
    if isinstance(exc, InterfaceError | OSError | ConnectionError | PoolTimeoutError):
        return True
    for cause in database_error_chain(exc):
        state = str(getattr(cause, "sqlstate", None) or "")
        if state in _UNAVAILABLE_STATES or state.startswith(_CONNECTION_EXCEPTION):
            return True
    return False
