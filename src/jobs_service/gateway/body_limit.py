"""Request body limits on every endpoint (pure ASGI, nothing buffered).

A declared ``Content-Length`` above the limit is refused before the app runs (and one
within it is passed through untouched: the server never delivers more than declared);
a body streamed without one (chunked) is counted as it arrives and refused as soon as
it passes the limit. Either way the answer is a 413 problem document.

``/webhooks/*`` get the largest ``max_body_bytes`` of the configured sources here: each
source enforces its own, smaller limit in its route (where it is also counted in the
webhook metrics), so this layer only stops what no source would accept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from jobs_service.gateway.paths import route_path
from jobs_service.gateway.problems import PROBLEM_JSON, problem_body

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import ASGIApp, Message, Receive, Scope, Send


__all__ = ["BodyLimitMiddleware", "BodyTooLargeError"]


class BodyTooLargeError(Exception):
    """Raised from ``receive`` once the body passed its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body exceeds {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Answers 413 ``body-too-large`` when a request body exceeds its path's limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_limit: int,
        source_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.api_limit = api_limit
        #: Each source's own limit, which the answer names (this layer refuses only
        #: above the largest, but a sender must learn the limit of its own source).
        self.source_limits = dict(source_limits or {})
        #: ``/webhooks/*``: the largest source's limit (the API's without sources).
        self.webhook_limit = max(self.source_limits.values(), default=0) or api_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        limit = self.webhook_limit if path.startswith("/webhooks/") else self.api_limit
        named = self.source_limits.get(path.removeprefix("/webhooks/"), limit)
        declared = _content_length(scope)
        if declared is not None:
            # The server frames the body by its Content-Length (HTTP/1.1 and h2 alike):
            # no more than declared can arrive, so a body within the limit needs no count.
            if declared > limit:
                await _refuse(scope, send, named)
            else:
                await self.app(scope, receive, send)
            return
        received = 0
        exceeded = False
        refused = False
        responding = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLargeError(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLargeError(limit)
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers to a body cut short (FastAPI says 400), the
            # client is told the truth: 413.
            nonlocal refused, responding
            if exceeded and not responding:
                if not refused:
                    refused = True
                    await _refuse(scope, send, named)
                return
            responding = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLargeError:
            if responding:
                raise
        if exceeded and not refused and not responding:
            await _refuse(scope, send, named)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def _refuse(scope: Scope, send: Send, limit: int) -> None:
    request_id = (scope.get("state") or {}).get("request_id")
    body = orjson.dumps(
        problem_body(
            413,
            "body-too-large",
            f"the body exceeds {limit} bytes",
            instance=str(scope["path"]),
            request_id=request_id,
            limit=limit,
        )
    )
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        # The rest of the body was not read: the connection cannot carry another request.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
