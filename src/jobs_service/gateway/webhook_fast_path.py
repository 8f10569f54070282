"""``POST /webhooks/{source}`` served without FastAPI's per-request machinery (pure ASGI).

Webhook senders are the gateway's busiest callers. For each of their requests FastAPI
would match the path against every route, solve the route's dependencies and pass
through its exception and exit-stack layers: measured against a bare endpoint, that
cost about as much as verifying the signature and storing the event. This layer sits
innermost in the middleware stack (the request id, body limit, security headers and
error answers of the outer layers all still apply) and calls the route's own function
with a plain ``Request``; a :class:`~jobs_service.gateway.problems.Problem` it raises
is answered exactly as the app's handler answers it. Any other request goes on to
FastAPI, where the route stays declared: it documents the endpoint in the OpenAPI
schema and serves it when this layer is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from jobs_service.gateway.paths import route_path
from jobs_service.gateway.problems import Problem, problem_response
from jobs_service.gateway.routes.webhooks import receive_webhook

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["WebhookFastPath"]

_PREFIX = "/webhooks/"


class WebhookFastPath:
    """Serves ``POST /webhooks/{source}`` itself; passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = _source(scope)
        if source is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await receive_webhook(source, request)
        except Problem as exc:
            response = problem_response(
                request, exc.status, exc.slug, exc.detail, headers=exc.headers, **exc.extensions
            )
        await response(scope, receive, send)


def _source(scope: Scope) -> str | None:
    """The ``{source}`` of a ``POST /webhooks/{source}``, as the router would match it."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = route_path(scope)
    if not path.startswith(_PREFIX):
        return None
    source = path[len(_PREFIX) :]
    return source if source and "/" not in source else None
