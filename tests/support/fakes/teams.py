"""A fake Teams Workflows endpoint: one URL per channel, Adaptive Card messages only."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_CARD = "application/vnd.microsoft.card.adaptive"


@dataclass
class FakeTeamsWorkflows:
    """Accepts cards at ``/workflows/<channel>``; can be told to fail the next posts."""

    posts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, base: str, channel: str) -> str:
        """The webhook URL of one channel (with a signature, like the real ones)."""
        return f"{base}/workflows/{channel}?api-version=1&sig=s3cr3t-{channel}"

    def cards(self, channel: str) -> list[dict[str, Any]]:
        """The Adaptive Cards posted to ``channel``."""
        with self._lock:
            return [post["attachments"][0]["content"] for post in self.posts.get(channel, [])]

    async def _post(self, request: Request) -> Response:
        channel = request.path_params["channel"]
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        if request.query_params.get("sig") != f"s3cr3t-{channel}":
            return JSONResponse({"error": {"code": "DirectApiAuthorizationRequired"}}, 401)
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return JSONResponse({"error": {"code": "ServiceUnavailable"}}, failure)
        try:
            body = orjson.loads(await request.body())
            attachment = body["attachments"][0]
            valid = (
                body["type"] == "message"
                and attachment["contentType"] == _CARD
                and attachment["content"]["type"] == "AdaptiveCard"
                and isinstance(attachment["content"]["body"], list)
            )
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            valid = False
        if not valid:
            return JSONResponse({"error": {"code": "InvalidRequestContent"}}, 400)
        with self._lock:
            self.posts.setdefault(channel, []).append(body)
        return Response(status_code=202)

    @property
    def app(self) -> Starlette:
        """The ASGI app."""
        return Starlette(routes=[Route("/workflows/{channel}", self._post, methods=["POST"])])
