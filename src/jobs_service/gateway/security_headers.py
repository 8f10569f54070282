"""Security headers on every response (pure ASGI).

Every response says: do not sniff the content type, never render me in a frame, send
no referrer. API responses also get a Content-Security-Policy that allows nothing (a
JSON document needs no scripts, styles or frames) and, under ``/v1/``, ``Cache-Control:
no-store`` (run history and the inbox must not linger in shared caches).

The interactive docs pages (Swagger UI, ReDoc) load their scripts and styles from a CDN
and run an inline bootstrap script; they get no CSP rather than one that would have to
allow both. ``Strict-Transport-Security`` is sent only when configured, because TLS
usually ends at a proxy in front of the gateway. A header the app set itself is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs_service.gateway.paths import route_path

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_CSP", "HSTS", "SecurityHeadersMiddleware"]

#: Nothing may be loaded, framed, or submitted by an API response.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: One year, subdomains included (only sent with ``api.hsts = true``).
HSTS = "max-age=31536000; includeSubDomains"

_Headers = list[tuple[bytes, bytes]]


def _encode(headers: dict[str, str]) -> _Headers:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


class SecurityHeadersMiddleware:
    """Adds the security headers; ``docs_paths`` are the pages that get no CSP."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        common = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
        if hsts:
            common["Strict-Transport-Security"] = HSTS
        self._docs = _encode(common)
        self._other = _encode({**common, "Content-Security-Policy": API_CSP})
        self._v1 = _encode(
            {**common, "Content-Security-Policy": API_CSP, "Cache-Control": "no-store"}
        )

    def headers_for(self, path: str) -> _Headers:
        """The headers a response to ``path`` (as routes see it: :func:`route_path`)
        gets, unless it set them itself."""
        if path.startswith("/v1/") or path == "/v1":
            return self._v1
        if path in self.docs_paths:
            return self._docs
        return self._other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers_for(route_path(scope))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in extra if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
