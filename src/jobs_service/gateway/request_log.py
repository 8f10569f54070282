"""One log line per request, with a request id and redacted headers (pure ASGI)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import orjson
import structlog
from starlette.requests import ClientDisconnect

from jobs_service.core.ids import random_bytes
from jobs_service.core.logging import HotPathLogger, get_logger
from jobs_service.core.redaction import redact_headers
from jobs_service.gateway.problems import (
    PROBLEM_JSON,
    problem_body,
    unexpected_problem,
)
from jobs_service.infrastructure.database import describe_database_error
from jobs_service.infrastructure.models import AuditEntry, column_length

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CLIENT_CLOSED_REQUEST", "MAX_REQUEST_ID", "RequestLogMiddleware"]


#: The longest client ``X-Request-ID`` kept: what the audit log's column holds, so an
#: audit entry names its request by the very id the answer carried.
MAX_REQUEST_ID = column_length(AuditEntry, "request_id")
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,%d}$" % MAX_REQUEST_ID)
#: The status logged for a request whose client went away before it was answered
#: (nginx's "client closed request"): nobody is left to answer, and nothing failed here.
CLIENT_CLOSED_REQUEST = 499


class RequestLogMiddleware:
    """Assigns ``request_id`` (or keeps a client's ``X-Request-ID`` of up to
    :data:`MAX_REQUEST_ID` letters, digits and ``._:-``) and logs ``http-request``."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self._log = get_logger("jobs_service.gateway.http")
        #: The line every request writes, kept off structlog's processor chain.
        self._request_log = HotPathLogger("jobs_service.gateway.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # On every request, so kept cheap: raw header bytes are only decoded for the log
        # line, and the id is bound with tokens rather than a context-manager generator.
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = (
            given.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(given)
            else random_bytes(16).hex()  # as random as a UUID4, without building one
        )
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        started = time.perf_counter()
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            if not response_started:
                status = CLIENT_CLOSED_REQUEST
                scope["state"]["client_closed"] = True  # the audit records it so too
            self._log.info("client-disconnected", method=scope["method"], path=scope["path"])
        except Exception as exc:  # noqa: BLE001 - last line of defence: answer, log once
            status = await self._answer_unhandled(
                exc, scope, request_id, send_with_id, response_started=response_started
            )
        finally:
            if self.enabled:
                client = scope.get("client")
                self._request_log.info(
                    "http-request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    client=client[0] if client else None,
                    principal=scope["state"].get("principal"),
                    headers=redact_headers(
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                    ),
                )
            structlog.contextvars.reset_contextvars(**tokens)

    async def _answer_unhandled(
        self, exc: Exception, scope: Scope, request_id: str, send: Send, *, response_started: bool
    ) -> int:
        """Log the failure once and answer with a problem document (if still possible)."""
        status, slug, detail, headers = unexpected_problem(exc)
        if status == 503:
            self._log.error(
                "database-unavailable",
                error_type=type(exc).__name__,
                reason=describe_database_error(exc),
            )
        else:
            self._log.exception("unhandled-error", error_type=type(exc).__name__)
        if response_started:
            return status
        body = orjson.dumps(
            problem_body(status, slug, detail, instance=scope["path"], request_id=request_id)
        )
        raw_headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            *[(k.lower().encode(), v.encode()) for k, v in headers.items()],
        ]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})
        return status
